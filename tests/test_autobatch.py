"""autobatch.py's arithmetic on made-up measurements (no GPU needed), and batch=-1 / 0.7 refused
with one line where there is no CUDA GPU."""

from __future__ import annotations

import pytest
import torch

from yoloforge.autobatch import AutoBatchError, MemoryLine, check_device, choose_batch, fit_line

GIB = 2**30


def test_a_line_through_exact_measurements_is_recovered():
    line = fit_line([1, 2, 4, 8], [GIB + b * 0.25 * GIB for b in (1, 2, 4, 8)])
    assert line.fixed == pytest.approx(GIB) and line.per_image == pytest.approx(0.25 * GIB)
    # 60% of 16 GiB = 9.6 GiB: (9.6 - 1) / 0.25 = 34.4 -> 34 images
    assert line.batch_within(0.6 * 16 * GIB) == 34


def test_noisy_measurements_are_fitted_by_least_squares():
    line = fit_line([1, 2, 4, 8, 16], [110, 190, 410, 790, 1610])  # about 10 + 100 * b
    assert line.per_image == pytest.approx(100, rel=0.02) and abs(line.fixed) < 20
    assert line.batch_within(1000) == 9  # (1000 - fixed) / ~100


def test_the_batch_stays_between_one_and_the_cap():
    assert MemoryLine(fixed=5000, per_image=100).batch_within(1000) == 1  # even the weights do not fit
    assert MemoryLine(fixed=0, per_image=1).batch_within(1e9, most=1024) == 1024


def test_probing_stops_at_the_first_batch_out_of_memory_and_never_chooses_it():
    tried = []

    def measure(b: int) -> float | None:
        tried.append(b)
        return None if b >= 8 else 1000 + 100 * b  # 8 images run out of memory

    batch, line = choose_batch(measure, budget=1e6)
    assert tried == [1, 2, 4, 8] and batch == 7  # the line would allow far more
    assert line.per_image == pytest.approx(100)


def test_unusable_measurements_are_one_clear_error():
    with pytest.raises(AutoBatchError, match="ran out of memory at batch 2"):
        choose_batch(lambda b: None if b >= 2 else 100.0, budget=1e6)
    with pytest.raises(AutoBatchError, match="does not grow with the batch"):
        fit_line([1, 2, 4], [500, 500, 500])
    with pytest.raises(AutoBatchError, match="two batch sizes"):
        fit_line([4, 4], [1, 2])


@pytest.mark.parametrize("batch", [-1, 0.7])
def test_cpu_and_mps_are_refused_with_one_line(batch):
    for device in ("cpu", "mps"):
        with pytest.raises(AutoBatchError) as info:
            check_device(batch, torch.device(device))
        message = str(info.value)
        assert (
            message.startswith(f"batch={batch} sizes the batch from the GPU's memory") and "\n" not in message
        )
        assert f"device={device}" in message and "batch=16" in message


def test_train_with_batch_minus_one_on_cpu_stops_with_one_line(shapes_small, tmp_path, capsys):
    from yoloforge.cli import main

    code = main(
        [
            "train",
            f"data={shapes_small}",
            "model=yolov8n.yaml",
            "device=cpu",
            "batch=-1",
            f"project={tmp_path}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "needs a CUDA device (device=cpu)" in err, err
    assert not (tmp_path / "train").exists()  # refused before anything was made
