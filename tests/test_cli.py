"""The command line through ``yoloforge.cli.main(argv)``: exit codes, one-line errors naming the key or
file, --help and --version, ``settings``, ``strip``, and the README's own command lines."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from yoloforge import __version__, cli, user_settings
from yoloforge.checkpoint import load_checkpoint
from yoloforge.settings import ExportSettings, PredictSettings, TrainSettings, ValSettings, flat_fields

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_WEIGHTS = ROOT / "tests" / "fixtures" / "reference" / "yolov8n.pt"
SETTINGS = {"train": TrainSettings, "val": ValSettings, "predict": PredictSettings, "export": ExportSettings}


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``yoloforge ARGS`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args: str, code: int = 2) -> str:
    """Run a command that must fail with ``code`` and exactly one line on stderr; return that line."""
    got, _, err = run(capsys, *args)
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command runs in an empty folder, so nothing lands in the checkout."""
    monkeypatch.chdir(tmp_path)


# ----------------------------------------------------------------------------------------------
# usage errors


def test_unknown_mode(capsys):
    line = one_line_error(capsys, "trian", "epochs=3")
    assert line.startswith("yoloforge: 'trian' is not a mode; choose one of train, val, predict, export")


def test_unknown_key_names_the_closest(capsys):
    line = one_line_error(capsys, "train", "epoch=3")
    assert line == "yoloforge: 'epoch' is not a valid setting. Did you mean epochs? See the list with --help."


def test_dash_dash_options_say_how_settings_are_written(capsys):
    line = one_line_error(capsys, "train", "--epochs", "3")
    assert line == "yoloforge: '--epochs': settings are written key=value (e.g. epochs=3), not --key value"


def test_a_key_given_twice(capsys):
    assert one_line_error(capsys, "val", "imgsz=320", "imgsz=640") == "yoloforge: 'imgsz' is given twice"


BOUNDS = [
    ("imgsz=-5", "imgsz=-5 is not valid: use a positive image size in pixels, at least 32, e.g. 640"),
    ("batch=0", "batch=0 is not valid: use a positive number of images per batch"),
    ("batch=-3", "batch=-3 is not valid: use a positive number of images per batch"),
    ("conf=2", "conf=2 is not valid: use a number in [0, 1]"),
    ("iou=-1", "iou=-1 is not valid: use a number in [0, 1]"),
    ("max_det=0", "max_det=0 is not valid: use an integer >= 1"),
    ("imgsz=nan", "imgsz=nan is not valid"),
]
TRAIN_BOUNDS = [
    ("batch=1.5", "batch=1.5 is not valid: use a positive number of images per batch, -1 (the largest"),
    ("epochs=0", "epochs=0 is not valid: use an integer >= 1, e.g. 100"),
    ("epochs=-1", "epochs=-1 is not valid: use an integer >= 1, e.g. 100"),
    ("workers=-2", "workers=-2 is not valid: use an integer >= 0"),
    ("patience=-1", "patience=-1 is not valid: use an integer >= 0"),
    ("close_mosaic=-1", "close_mosaic=-1 is not valid: use an integer >= 0"),
    ("freeze=-1", "freeze=-1 is not valid: use an integer >= 0"),
    ("fraction=0", "fraction=0 is not valid: use a number in (0, 1]"),
    ("lr0=0", "lr0=0 is not valid: use a number > 0"),
    ("lrf=-1", "lrf=-1 is not valid: use a number > 0"),
    ("momentum=1", "momentum=1 is not valid: use a number in [0, 1)"),
    ("weight_decay=-1", "weight_decay=-1 is not valid: use a number >= 0"),
    ("warmup_epochs=-1", "warmup_epochs=-1 is not valid: use a number >= 0"),
    ("warmup_momentum=2", "warmup_momentum=2 is not valid: use a number in [0, 1]"),
    ("hsv_h=1.5", "hsv_h=1.5 is not valid: use a number in [0, 1]"),
    ("hsv_s=-1", "hsv_s=-1 is not valid: use a number in [0, 1]"),
    ("hsv_v=2", "hsv_v=2 is not valid: use a number in [0, 1]"),
    ("translate=2", "translate=2 is not valid: use a number in [0, 1]"),
    ("scale=-1", "scale=-1 is not valid: use a number in [0, 1]"),
    ("perspective=2", "perspective=2 is not valid: use a number in [0, 1]"),
    ("flipud=2", "flipud=2 is not valid: use a number in [0, 1]"),
    ("fliplr=-1", "fliplr=-1 is not valid: use a number in [0, 1]"),
    ("mosaic=1.5", "mosaic=1.5 is not valid: use a number in [0, 1]"),
    ("mixup=2", "mixup=2 is not valid: use a number in [0, 1]"),
    ("degrees=-5", "degrees=-5 is not valid: use a number in [0, 180]"),
    ("shear=-5", "shear=-5 is not valid: use a number in [0, 90)"),
    ("box=-1", "box=-1 is not valid: use a number >= 0"),
    ("cls=-1", "cls=-1 is not valid: use a number >= 0"),
    ("dfl=-1", "dfl=-1 is not valid: use a number >= 0"),
    ("nbs=0", "nbs=0 is not valid: use an integer >= 1"),
    ("save_period=0", "save_period=0 is not valid: use -1 (off) or an integer >= 1"),
    ("seed=-1", "seed=-1 is not valid: use an integer in [0, 4294967295]"),
    ("lr0=inf", "lr0=inf is not valid: use a number > 0"),
]


@pytest.mark.parametrize("arg, message", BOUNDS + TRAIN_BOUNDS)
def test_train_stops_on_each_bad_value_before_anything_loads(capsys, tmp_path: Path, arg: str, message: str):
    line = one_line_error(capsys, "train", "data=config.yaml", "model=yolov8n.yaml", arg)
    assert line.startswith(f"yoloforge: {message}")
    assert not any(tmp_path.iterdir())  # no run folder, no download


@pytest.mark.parametrize("mode", ["val", "predict", "export"])
@pytest.mark.parametrize("arg, message", BOUNDS[:3])
def test_other_modes_check_ranges_too(capsys, mode: str, arg: str, message: str):
    line = (
        one_line_error(capsys, mode, "model=best.pt", "source=photos/", arg)
        if mode == "predict"
        else (one_line_error(capsys, mode, "model=best.pt", arg))
    )
    assert line.startswith(f"yoloforge: {message}")


@pytest.mark.parametrize(
    "mode, arg, message",
    [
        ("val", "conf=2", "conf=2 is not valid: use a number in [0, 1]"),
        ("val", "workers=-1", "workers=-1 is not valid: use an integer >= 0"),
        ("predict", "conf=1.5", "conf=1.5 is not valid: use a number in [0, 1], e.g. 0.25"),
        ("predict", "vid_stride=0", "vid_stride=0 is not valid: use an integer >= 1"),
        ("predict", "line_width=-1", "line_width=-1 is not valid: use an integer >= 0"),
        ("predict", "max_det=0", "max_det=0 is not valid: use an integer >= 1"),
        ("export", "opset=-1", "opset=-1 is not valid: use an integer >= 0"),
        ("export", "format=tflite", "format=tflite is not valid: choose one of onnx, torchscript"),
    ],
)
def test_mode_specific_ranges(capsys, mode: str, arg: str, message: str):
    assert one_line_error(capsys, mode, "model=best.pt", arg).startswith(f"yoloforge: {message}")


@pytest.mark.parametrize(
    "args, message",
    [
        (["val", "data=config.yaml"], "val: model= is required"),
        (["predict", "source=photos/"], "predict: model= is required"),
        (["predict", "model=best.pt"], "predict: source= is required"),
        (["export", "format=onnx"], "export: model= is required"),
        (["train", "extra"], "train: unexpected argument 'extra'"),
        (["split", "src/", "val=0.2"], "split: out= is required"),
        (["convert", "coco", "a.json", "out=x"], "convert: use 'convert coco JSON IMAGES out=DST'"),
    ],
)
def test_missing_or_extra_arguments(capsys, args: list[str], message: str):
    assert one_line_error(capsys, *args).startswith(f"yoloforge: {message}")


# ----------------------------------------------------------------------------------------------
# help and version


@pytest.mark.parametrize("mode", list(SETTINGS))
def test_mode_help_lists_every_setting(capsys, mode: str):
    code, out, err = run(capsys, mode, "--help")
    assert code == 0 and err == ""
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == list(flat_fields(SETTINGS[mode]))


def test_overview_and_version(capsys):
    code, out, _ = run(capsys)
    assert code == 0 and "usage: yoloforge MODE key=value" in out
    for mode in ("train", "val", "predict", "export", "settings", "strip"):
        assert f"\n  {mode} " in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == __version__


def test_python_dash_m_runs_the_same_cli(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "yoloforge", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: yoloforge MODE key=value")


# ----------------------------------------------------------------------------------------------
# settings


def test_settings_show_set_remove_reset(capsys):
    path = user_settings.settings_file()
    code, out, _ = run(capsys, "settings")
    assert code == 0 and f"Settings file: {path}" in out and "No defaults stored" in out

    code, out, _ = run(capsys, "settings", "device=cpu", "workers=2", "conf=0.4")
    assert code == 0 and yaml.safe_load(path.read_text()) == {"conf": 0.4, "device": "cpu", "workers": 2}
    assert "  workers: 2  (train, val)" in out and "  conf: 0.4  (predict)" in out

    code, out, _ = run(capsys, "settings")
    assert code == 0 and "  device: cpu  (train, val, predict, export)" in out

    code, out, _ = run(capsys, "train", "--help")  # the stored value is shown as the default
    assert re.search(r"^  workers +2 .*\(your default; built-in 8\)$", out, re.M)

    code, out, _ = run(capsys, "settings", "workers=")
    assert code == 0 and "workers" not in yaml.safe_load(path.read_text())

    code, out, _ = run(capsys, "settings", "reset")
    assert code == 0 and f"Removed {path}" in out and not path.exists()
    code, out, _ = run(capsys, "settings", "reset")
    assert code == 0 and "No settings file to remove" in out


@pytest.mark.parametrize(
    "arg, message",
    [
        ("wokers=2", "'wokers' is not a valid setting. Did you mean workers"),  # (or loggers?)
        ("model=yolov8s.pt", "'model' cannot be a stored default"),
        ("batch=0", "batch=0 is not valid: use a positive number of images per batch"),
        ("imgsz=-5", "imgsz=-5 is not valid"),
    ],
)
def test_settings_refuse_a_bad_key_or_value_and_write_nothing(capsys, arg: str, message: str):
    assert run(capsys, "settings", "device=cpu")[0] == 0
    before = user_settings.settings_file().read_text()
    line = one_line_error(capsys, "settings", "workers=3", arg)
    assert line.startswith(f"yoloforge: {message}")
    assert user_settings.settings_file().read_text() == before


def test_a_corrupt_settings_file_is_named_and_reset_fixes_it(capsys):
    path = user_settings.settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("workers: [2,\n")
    for args in (["settings"], ["train", "data=config.yaml"], ["settings", "device=cpu"]):
        line = one_line_error(capsys, *args)
        assert line.startswith(f"yoloforge: {path}: is not valid YAML")
        assert line.endswith("run 'yoloforge settings reset'")
    code, out, _ = run(capsys, "val", "--help")  # help still works, and says why it shows no defaults
    assert code == 0 and "Your stored defaults are not shown" in out
    assert run(capsys, "settings", "reset")[0] == 0
    assert run(capsys, "settings")[0] == 0


def test_a_stored_bad_value_stops_every_mode(capsys):
    path = user_settings.settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("imgsz: -5\n")
    line = one_line_error(capsys, "predict", "model=best.pt", "source=photos/")
    assert line.startswith(f"yoloforge: {path}: imgsz=-5 is not valid")


# ----------------------------------------------------------------------------------------------
# strip


@pytest.fixture(scope="module")
def trained_run(shapes_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """weights/ of a 1-epoch tiny run (about 10 s), made once for this module through the CLI."""
    project = tmp_path_factory.mktemp("cli_runs")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse settings folder is not set yet
        mp.setenv("YOLOFORGE_CONFIG_DIR", str(tmp_path_factory.mktemp("cli_user_config")))
        code = cli.main(
            [
                "train",
                f"data={shapes_small}",
                "model=yolov8n.yaml",
                "epochs=1",
                "imgsz=64",
                "batch=4",
                "workers=0",
                "plots=False",
                f"project={project}",
            ]
        )
    assert code == 0
    return project / "train" / "weights"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_strip_writes_a_small_copy_next_to_last_pt(capsys, trained_run: Path, tmp_path: Path):
    last = shutil.copy(trained_run / "last.pt", tmp_path / "last.pt")
    before = digest(last)
    code, out, err = run(capsys, "strip", str(last))
    assert code == 0, err
    small = tmp_path / "last-stripped.pt"
    size = f"{last.stat().st_size / 1e6:.1f}MB"
    assert out.strip() == f"Stripped {last} ({size}) -> {small} ({small.stat().st_size / 1e6:.1f}MB)"
    assert digest(last) == before  # the user's file is never touched
    assert small.stat().st_size < last.stat().st_size / 3

    full, stripped = load_checkpoint(last), load_checkpoint(small)
    assert stripped.optimizer is None and stripped.train_model is None
    assert all(v.dtype == torch.float16 for v in stripped.model.values() if v.is_floating_point())
    assert stripped.model.keys() == full.model.keys()
    assert (stripped.names, stripped.epoch, stripped.train_args) == (full.names, full.epoch, full.train_args)
    assert (stripped.family, stripped.size, stripped.nc) == (full.family, full.size, full.nc)
    assert stripped.best_fitness == full.best_fitness


def test_strip_to_a_chosen_path_and_in_place(capsys, trained_run: Path, tmp_path: Path):
    last = shutil.copy(trained_run / "last.pt", tmp_path / "last.pt")
    assert run(capsys, "strip", str(last), "out=ship/model.pt")[0] == 0
    assert load_checkpoint(tmp_path / "ship" / "model.pt").optimizer is None
    assert load_checkpoint(last).optimizer is not None

    code, out, _ = run(capsys, "strip", str(last), f"out={last}")
    assert code == 0 and f"-> {last} (" in out
    assert load_checkpoint(last).optimizer is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "ship"]  # no temp file left


def test_strip_refuses_other_files_with_one_line(capsys, tmp_path: Path):
    line = one_line_error(capsys, "strip", str(REFERENCE_WEIGHTS), code=1)
    assert str(REFERENCE_WEIGHTS) in line and "yoloforge checkpoint" in line
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    line = one_line_error(capsys, "strip", str(damaged), code=1)
    assert str(damaged) in line
    line = one_line_error(capsys, "strip", "missing.pt", code=1)
    assert "missing.pt" in line
    assert one_line_error(capsys, "strip").startswith("yoloforge: strip: give one checkpoint")
    assert not (tmp_path / "damaged-stripped.pt").exists()


def test_report_of_one_run_and_of_two(capsys, logs, trained_run: Path, tmp_path: Path):
    """Training wrote its report; `report FOLDER` rewrites it, `report A B` compares A with B."""
    a = Path(shutil.copytree(trained_run.parent, tmp_path / "train"))
    assert json.loads((a / "report.json").read_text())["summary"]["epochs"] == 1
    (a / "report.json").unlink()
    code, out, err = run(capsys, "report", str(a), "val=False")
    assert code == 0, err
    assert "Report: " in logs.text and json.loads((a / "report.json").read_text())["summary"]["epochs"] == 1
    assert (a / "report.html").is_file() and (a / "report.md").is_file()
    b = Path(shutil.copytree(a, tmp_path / "train2"))
    args = yaml.safe_load((b / "args.yaml").read_text())
    (b / "args.yaml").write_text(yaml.safe_dump({**args, "lr0": 0.02}))
    code, out, err = run(capsys, "report", str(a), str(b), "val=False")
    assert code == 0, err
    assert "Comparison: " in logs.text
    compared = json.loads((a / "compare.json").read_text())
    assert compared["settings"] == [{"setting": "lr0", "train": 0.01, "train2": 0.02}]


def test_report_refuses_bad_arguments_with_one_line(capsys, tmp_path: Path):
    assert one_line_error(capsys, "report").startswith("yoloforge: report: give one or two run folders")
    assert "val='maybe' is not valid: expected a boolean" in one_line_error(
        capsys, "report", "x", "val=maybe"
    )
    assert "no such run folder" in one_line_error(capsys, "report", str(tmp_path / "missing"), code=1)


# ----------------------------------------------------------------------------------------------
# the README's command lines


LIGHTER = {"epochs": "1", "imgsz": "64", "batch": "4", "iterations": "2"}


def readme_commands() -> list[list[str]]:
    """``yoloforge ...`` lines of the README's bash blocks, comments stripped, the first block's
    ``pip install -e . && yoloforge train data=shapes ...`` included (its yoloforge part)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip().rpartition("&& ")[2]
            if line.startswith("yoloforge "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def lighter(args: list[str]) -> list[str]:
    """Only the heavy values change: epochs 1, imgsz 64, batch 4, 2 tune trials; workers=0 where the
    mode has it. A train or tune line that leaves a heavy key out gets it too (its default is 100
    epochs at 640)."""
    if args[0] not in (*SETTINGS, "tune") or "--help" in args:
        return args
    out = [f"{k}={LIGHTER[k]}" if (k := a.split("=", 1)[0]) in LIGHTER and "=" in a else a for a in args]
    if args[0] in ("train", "tune") and not any(a.startswith("resume=") for a in args):
        given = {a.split("=", 1)[0] for a in args if "=" in a}
        heavy = ("epochs", "imgsz", "batch") + (("iterations",) if args[0] == "tune" else ())
        out += [f"{k}={LIGHTER[k]}" for k in heavy if k not in given]
    has_workers = args[0] == "tune" or "workers" in flat_fields(SETTINGS[args[0]])  # tune: in each trial
    if has_workers and not any(a.startswith("workers=") for a in out):
        out.append("workers=0")
    return out


def prepare_inputs(args: list[str], workspace: Path, shapes: Path) -> None:
    """Make the inputs a data-tool line names, from the small shapes dataset; a line's out= folder
    made by an earlier line (split and convert both write dataset/) is removed first."""
    positional = [a for a in args[1:] if "=" not in a]
    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), "")
    if out and args[0] in ("split", "convert"):
        shutil.rmtree(workspace / out, ignore_errors=True)
    if args[0] == "split":
        src = workspace / positional[0]
        shutil.copytree(shapes / "images" / "train", src / "images", dirs_exist_ok=True)
        shutil.copytree(shapes / "labels" / "train", src / "labels", dirs_exist_ok=True)
        names = yaml.safe_load((shapes / "config.yaml").read_text())["names"]
        (src / "classes.txt").write_text("\n".join(names[i] for i in sorted(names)) + "\n")
    if args[0] == "convert" and positional[:1] == ["coco"]:
        write_coco(shapes, workspace / positional[1], workspace / positional[2])


def write_coco(shapes: Path, json_path: Path, images_dir: Path) -> None:
    """A COCO detection json and its images folder, from the shapes val split."""
    import cv2

    names = yaml.safe_load((shapes / "config.yaml").read_text())["names"]
    coco: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": names[i]} for i in names],
    }
    images_dir.mkdir(parents=True, exist_ok=True)
    for image_id, image in enumerate(sorted((shapes / "images" / "val").iterdir()), start=1):
        shutil.copy(image, images_dir / image.name)
        height, width = cv2.imread(str(image)).shape[:2]
        coco["images"].append({"id": image_id, "file_name": image.name, "width": width, "height": height})
        for line in (shapes / "labels" / "val" / f"{image.stem}.txt").read_text().splitlines():
            cls, cx, cy, w, h = (float(v) for v in line.split())
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }  # fmt: skip
            )
    json_path.write_text(json.dumps(coco))


def test_readme_commands_run(capsys, shapes_small: Path, tmp_path: Path, yoloforge_home: Path):
    """Each ``yoloforge ...`` line of the README exits 0, in order, in a folder holding what the README
    assumes: config.yaml (the small shapes dataset), yolov8n.pt (the reference fixture, no download),
    photos/ (a few demo images), and what a data-tool line names (a Label Studio-like export for
    split, a COCO json and images/ for convert); the first command trains on the full demo data,
    generated into the test's own YOLOFORGE_HOME. Only heavy values are changed: epochs 1, imgsz 64,
    batch 4, iterations 2, plus workers=0."""
    commands = readme_commands()
    assert commands[0][:2] == ["train", "data=shapes"], "the README's first command is not the demo training"
    shapes = shapes_small.parent
    shutil.copy(shapes_small, tmp_path / "config.yaml")
    shutil.copy(REFERENCE_WEIGHTS, tmp_path / "yolov8n.pt")
    (tmp_path / "photos").mkdir()
    for image in sorted((shapes / "images" / "val").iterdir())[:3]:
        shutil.copy(image, tmp_path / "photos" / image.name)
    for args in commands:
        prepare_inputs(args, tmp_path, shapes)
        code, _, err = run(capsys, *lighter(args))
        assert code == 0, f"yoloforge {' '.join(args)} exited {code}: {err}"
    assert (yoloforge_home / "datasets" / "shapes-v1" / "config.yaml").is_file()  # the first command's data


def test_yoloforge_debug_shows_the_traceback(monkeypatch):
    """The one-line errors hide tracebacks; YOLOFORGE_DEBUG=1 lets every kind through."""
    from yoloforge.settings import SettingsError

    monkeypatch.setenv("YOLOFORGE_DEBUG", "1")
    with pytest.raises(SettingsError, match="imgsz=-5"):
        cli.main(["train", "data=shapes", "imgsz=-5"])
    with pytest.raises(ValueError, match="is a folder"):
        cli.main(["val", f"model={ROOT / 'tests'}", "data=shapes"])


# ----------------------------------------------------------------------------------------------
# doctor


def test_doctor_strict_exits_1_on_a_fail_and_0_without(capsys, tmp_path):
    from yoloforge.data.demo import ensure_shapes

    config = ensure_shapes(tmp_path / "data", n_train=12, n_val=4, seed=1)
    args = ("doctor", f"data={config}", "imgsz=256", "strict=True", "progress=False")
    code, out, _ = run(capsys, *args)
    assert code == 0 and (tmp_path / "runs" / "doctor" / "doctor.json").is_file()
    val = sorted((config.parent / "images" / "val").glob("*.jpg"))[0]
    shutil.copy(val, config.parent / "images" / "train" / "leaked.jpg")
    code, out, _ = run(capsys, *args)
    found = json.loads((tmp_path / "runs" / "doctor2" / "doctor.json").read_text())["findings"]
    assert code == 1 and [f["check"] for f in found if f["severity"] == "fail"] == ["leakage"]
    assert run(capsys, *args[:-2], "progress=False")[0] == 0  # not strict: the report, exit 0


def test_doctor_usage_errors_are_one_line(capsys):
    assert one_line_error(capsys, "doctor") == "yoloforge: doctor: data= is required, e.g. data=config.yaml"
    assert "strict=maybe is not valid" in one_line_error(capsys, "doctor", "data=x.yaml", "strict=maybe")
    line = one_line_error(capsys, "doctor", "data=missing.yaml", code=1)
    assert line.startswith("Error: missing.yaml: dataset config file not found")
