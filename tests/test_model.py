"""Model zoo: published parameter counts and GFLOPs, output layout, fuse, names."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from yoloforge.model.detector import DetectionModel
from yoloforge.model.keymap import map_reference_key
from yoloforge.model.summary import count_gflops, count_parameters
from yoloforge.model.zoo import MODEL_NAMES, build_model, parse_model_name

# name: (parameters, GFLOPs at 640) from the reference's model cards
PUBLISHED = {
    "yolov8n": (3_157_200, 8.9),
    "yolov8s": (11_166_560, 28.8),
    "yolov8m": (25_902_640, 79.3),
    "yolov8l": (43_691_520, 165.7),
    "yolov8x": (68_229_648, 258.5),
    "yolo11n": (2_624_080, 6.7),
    "yolo11s": (9_458_752, 21.8),
    "yolo11m": (20_114_688, 68.6),
    "yolo11l": (25_372_160, 87.9),
    "yolo11x": (56_966_176, 196.3),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def meta_model(name: str, nc: int = 80) -> DetectionModel:
    """Built on the meta device: shapes without memory or init time."""
    with torch.device("meta"):
        return build_model(*parse_model_name(name), nc=nc)


@pytest.fixture(scope="module")
def v8n() -> DetectionModel:
    torch.manual_seed(0)
    return build_model("yolov8", "n", nc=3)


@pytest.fixture(scope="module")
def v11n() -> DetectionModel:
    torch.manual_seed(0)
    return build_model("yolo11", "n", nc=3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_match_published(name):
    params, grads = count_parameters(meta_model(name))
    assert params == PUBLISHED[name][0]
    assert grads == params - 16  # only the DFL projection is not trained


@pytest.mark.parametrize("name", ["yolo11n", "yolo11l"])  # yolov8n: test_summary_line; all ten in the report
def test_gflops_match_published(name):
    assert abs(count_gflops(meta_model(name), 640) - PUBLISHED[name][1]) <= 0.1


def test_summary_line():
    line = meta_model("yolov8n").summary()
    assert line.startswith("YOLOv8n summary: ")
    assert line.endswith(" layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs")


def test_dfl_projection_is_a_fixed_buffer_not_in_the_state_dict(v8n):
    assert not any("dfl" in name for name, _ in v8n.named_parameters())
    assert not any("dfl" in key for key in v8n.state_dict())
    assert torch.equal(v8n.head.dfl.proj, torch.arange(16.0))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("yolov8n", ("yolov8", "n")),
        ("yolov8n.yaml", ("yolov8", "n")),
        ("yolo11s.pt", ("yolo11", "s")),
        ("YOLOv8n", ("yolov8", "n")),
        ("weights/yolo11x.pt", ("yolo11", "x")),
    ],
)
def test_parse_model_name(name, expected):
    assert parse_model_name(name) == expected


@pytest.mark.parametrize("name", ["yolov5n", "yolov8", "yolov8q.pt", "resnet50", ""])
def test_parse_model_name_rejects_unknown_names_listing_valid_ones(name):
    with pytest.raises(ValueError, match="yolov8n, yolov8s"):
        parse_model_name(name)


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="yolov8n"):
        build_model("yolov9", "n")
    with pytest.raises(ValueError, match="nc=0"):
        build_model("yolov8", "n", nc=0)


def test_attributes_and_blocks(v8n, v11n):
    assert (v8n.family, v8n.size, v8n.nc, v8n.reg_max) == ("yolov8", "n", 3, 16)
    assert torch.equal(v8n.stride, torch.tensor([8.0, 16.0, 32.0]))
    assert len(v8n.blocks) == 23 and v8n.blocks[-1] is v8n.head
    assert len(v11n.blocks) == 24 and v11n.blocks[-1] is v11n.head
    # every parameter belongs to exactly one numbered block (so freeze=N covers the model)
    block_params = sum(p.numel() for b in v11n.blocks for p in b.parameters())
    assert block_params == sum(p.numel() for p in v11n.parameters())


def test_layer_table_has_one_row_per_block(v11n):
    rows = v11n.layer_table().splitlines()
    assert rows[0].split() == ["idx", "from", "n", "params", "module", "arguments"]
    assert len(rows) == 1 + 24
    assert rows[13].split()[:3] == ["12", "[-1,", "6]"]
    assert "DetectHead" in rows[-1] and "[16, 19, 22]" in rows[-1]


def test_head_bias_init():
    model = build_model("yolov8", "s", nc=5)
    for branch, stride in zip(model.head.cls_branches, (8, 16, 32), strict=True):
        expected = math.log(5 / 5 / (640 / stride) ** 2)
        assert torch.allclose(branch[-1].bias, torch.full((5,), expected))
    for branch in model.head.box_branches:
        assert torch.all(branch[-1].bias == 2.0)


@pytest.mark.parametrize("shape", [(64, 96), (96, 64), (32, 32)])
def test_features_shapes_for_non_square_inputs(v11n, shape):
    h, w = shape
    feats = v11n.train().features(torch.rand(2, 3, h, w))
    assert [tuple(f.shape) for f in feats] == [(2, 64 + 3, h // s, w // s) for s in (8, 16, 32)]


def test_forward_train_returns_features_eval_returns_one_tensor(v8n):
    x = torch.rand(1, 3, 64, 96)
    assert isinstance(v8n.train()(x), list)
    out = v8n.eval()(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 4 + 3, 8 * 12 + 4 * 6 + 2 * 3)


def test_input_not_multiple_of_32_is_refused(v8n):
    with pytest.raises(ValueError, match="multiples of 32"):
        v8n.eval()(torch.rand(1, 3, 64, 80))


def test_decode_layout_anchor_centres_and_scores():
    """With flat box logits every side is the DFL mean 7.5 cells, so each box is centred on its
    anchor and 15 strides wide; class logits fixed at 0 and 2 give scores sigmoid(0), sigmoid(2)."""
    model = build_model("yolov8", "n", nc=2).eval()
    with torch.no_grad():
        for box, cls in zip(model.head.box_branches, model.head.cls_branches, strict=True):
            box[-1].weight.zero_()
            box[-1].bias.zero_()
            cls[-1].weight.zero_()
            cls[-1].bias.copy_(torch.tensor([0.0, 2.0]))
        out = model(torch.rand(1, 3, 64, 96))[0]  # (6, A)
    expected = []
    for stride in (8, 16, 32):  # P3, P4, P5, each row-major
        for row in range(64 // stride):
            for col in range(96 // stride):
                expected.append([(col + 0.5) * stride, (row + 0.5) * stride, 15.0 * stride, 15.0 * stride])
    assert torch.allclose(out[:4].T, torch.tensor(expected), atol=1e-4)
    assert torch.allclose(out[4], torch.full((126,), 0.5))
    assert torch.allclose(out[5], torch.full((126,), torch.sigmoid(torch.tensor(2.0)).item()))


def test_anchors_are_cached_per_input_shape(v8n):
    v8n.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        v8n(x)
        first = v8n._anchor_cache[1]
        v8n(x)
        assert v8n._anchor_cache[1] is first
        v8n(torch.rand(1, 3, 32, 64))
        assert v8n._anchor_cache[1].shape == (4 * 8 + 2 * 4 + 1 * 2, 2)


def test_traced_decode_keeps_dynamic_anchors(v8n):
    """While tracing, anchors are computed in the graph (not taken from the cache), so an exported
    model runs at other input sizes."""
    v8n.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated in favour of export
        feats = v8n.features(torch.rand(1, 3, 64, 96))
        v8n.decode(feats)  # fills the anchor cache for this shape: tracing must not bake it in
        traced = torch.jit.trace(lambda *f: v8n.decode(list(f)), tuple(feats), check_trace=False)
        other = v8n.features(torch.rand(1, 3, 96, 64))
        assert torch.allclose(traced(*other), v8n.decode(other), atol=1e-4)


def _perturb_bn(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
def test_fuse_keeps_outputs_and_is_idempotent(family):
    torch.manual_seed(0)
    model = build_model(family, "n", nc=4).eval()
    _perturb_bn(model)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        assert model.fuse() is model
        after = model(x)
        again = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for sl in (slice(0, 4), slice(4, None)):  # boxes, scores
        scale = before[:, sl].abs().max()
        assert (after[:, sl] - before[:, sl]).abs().max() / scale < 1e-4
    assert torch.equal(after, again)


INITIAL_WEIGHTS = Path(__file__).parent / "fixtures" / "reference" / "initial_weights.json"


@pytest.mark.parametrize("case", json.loads(INITIAL_WEIGHTS.read_text())["models"], ids=lambda c: c["model"])
def test_seeded_model_starts_from_the_reference_initial_weights(case):
    """The fixture was written by the reference (benchmarks/make_reference_init_fixture.py)."""
    torch.manual_seed(case["seed"])
    model = build_model(*parse_model_name(case["model"]), nc=case["nc"])
    state = model.state_dict()
    for ref_key, expected in case["tensors"].items():
        ours = state[map_reference_key(model, ref_key)].double()
        assert ours.flatten()[:3].tolist() == pytest.approx(expected["first"], abs=1e-7), ref_key
        assert ours.sum().item() == pytest.approx(expected["sum"], abs=1e-4), ref_key


def test_building_a_model_draws_from_the_global_rng_only_in_the_reference_order():
    torch.manual_seed(5)
    a = build_model("yolo11", "n", nc=2).state_dict()
    after_a = torch.rand(1)
    torch.manual_seed(5)
    b = build_model("yolo11", "n", nc=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.rand(1), after_a)  # the same number of draws each time
    c = build_model("yolo11", "n", nc=2).state_dict()  # a later state: other weights
    assert not torch.equal(a["backbone.stem.conv.weight"], c["backbone.stem.conv.weight"])
