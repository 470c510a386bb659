"""loggers=tensorboard,mlflow with the real libraries: what their own readers find after a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoloforge import YOLO
from yoloforge.callbacks import Callback
from yoloforge.settings import SettingsError, TrainSettings, build

pytest.importorskip("tensorboard")
mlflow = pytest.importorskip("mlflow")

TINY = dict(imgsz=64, batch=4, workers=0, seed=0)
LOSSES = ("train/box_loss", "train/cls_loss", "train/dfl_loss")


@pytest.fixture(scope="module")
def two_epochs(shapes_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder of a 2-epoch run with both loggers and MLflow's default store."""
    work = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        YOLO("yolov8n.yaml").train(data=str(shapes_small), epochs=2, loggers="tensorboard,mlflow", **TINY)
    return work


def test_tensorboard_event_reader_finds_every_column_per_epoch_and_the_images(two_epochs: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = two_epochs / "runs" / "detect" / "train"
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    for tag in ("metrics/mAP50(B)", "metrics/mAP50-95(B)", *LOSSES, "val/box_loss", "lr/pg0", "lr/pg2"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert [e.value for e in events.Scalars("train/box_loss")] == pytest.approx(
        [float(line.split(",")[2]) for line in (run / "results.csv").read_text().splitlines()[1:]], rel=1e-4
    )
    images = set(events.Tags()["images"])
    assert {"train_batch0", "val_batch0_labels", "val_batch0_pred", "PR_curve", "results"} <= images
    assert list((run / "hparams").glob("events.out.tfevents.*"))  # the HParams tab's run


def test_mlflow_finds_the_run_with_params_metrics_per_epoch_and_weights(two_epochs: Path, monkeypatch):
    monkeypatch.chdir(two_epochs)  # MLflow's default store lies in the working folder of the run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = mlflow.search_runs(experiment_names=["runs/detect"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "train" and run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["imgsz"] == "64"
    assert run.data.params["loggers"] == "['tensorboard', 'mlflow']"
    client = mlflow.MlflowClient()
    for name in ("metrics/mAP50B", "metrics/mAP50-95B", *LOSSES):  # MLflow refuses parentheses
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    weights = [a.path for a in client.list_artifacts(run.info.run_id, "weights")]
    assert weights == ["weights/best.pt", "weights/last.pt"]
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.csv", "args.yaml", "results.png", "PR_curve.png"} <= top


def test_mlflow_honours_the_tracking_uri_and_a_resume_continues_its_run(shapes_small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{(tmp_path / 'server' / 'store.db').as_posix()}"
    (tmp_path / "server").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "shapes")
    args = dict(data=str(shapes_small), project=str(tmp_path / "runs"), name="r", plots=False, val=False)
    YOLO("yolov8n.yaml").train(epochs=1, loggers=["mlflow"], **args, **TINY)
    YOLO(tmp_path / "runs" / "r" / "weights" / "last.pt").train(resume=True, epochs=2)
    assert (tmp_path / "server" / "store.db").is_file() and not (tmp_path / "mlflow.db").exists()
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("shapes").experiment_id]
    )
    assert len(runs) == 1  # the resume went on in the same MLflow run
    history = mlflow.MlflowClient(uri).get_metric_history(runs[0].info.run_id, "train/box_loss")
    assert [m.step for m in history] == [1, 2]
    assert runs[0].info.status == "FINISHED"


class StopAfterFirstEpoch(Callback):
    def __init__(self, error: BaseException):
        self.error = error

    def on_epoch_end(self, trainer, row):
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError("planted failure"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_training_that_stops_ends_its_mlflow_run_and_closes_tensorboard(
    shapes_small, tmp_path, monkeypatch, error, status
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "stops")
    args = dict(data=str(shapes_small), project=str(tmp_path / "runs"), name="r", plots=False, report=False)
    with pytest.raises(type(error)):
        YOLO("yolov8n.yaml").train(
            epochs=3, loggers="mlflow,tensorboard", callbacks=[StopAfterFirstEpoch(error)], **args, **TINY
        )
    (run,) = mlflow.search_runs(experiment_names=["stops"], output_format="list")
    assert run.info.status == status  # not left RUNNING
    assert run.data.tags["yoloforge.error"].startswith(type(error).__name__)
    events = EventAccumulator(str(tmp_path / "runs" / "r"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/box_loss")] == [1]  # the epoch before the stop


def test_loggers_setting_parses_lists_and_names_a_bad_logger():
    assert build(TrainSettings, {"loggers": "tensorboard,mlflow"}).loggers == ("tensorboard", "mlflow")
    assert build(TrainSettings, {"loggers": ["MLflow", "mlflow"]}).loggers == ("mlflow",)
    assert build(TrainSettings, {"loggers": "none"}).loggers == ()
    assert build(TrainSettings).loggers == ()
    with pytest.raises(SettingsError, match=r"^loggers=wandb is not valid: 'wandb' is not a logger; choose"):
        build(TrainSettings, {"loggers": "wandb"})


def test_a_user_settings_file_may_change_the_default_loggers():
    from yoloforge import user_settings

    user_settings.update({"loggers": "tensorboard"})
    assert "tensorboard" in user_settings.settings_file().read_text()
    assert build(TrainSettings).loggers == ("tensorboard",)
    assert build(TrainSettings, {"loggers": ""}).loggers == ()  # a value typed for a run wins


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    from yoloforge.loggers import build_loggers

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name)
    )
    with pytest.raises(
        ImportError, match=r'^loggers=mlflow needs mlflow, .*pip install "yoloforge\[track\]"$'
    ):
        build_loggers(["tensorboard", "mlflow"])


def test_tune_passes_loggers_to_every_trial(tmp_path, monkeypatch):
    from yoloforge.api import YOLO as Model
    from yoloforge.tune import run_tune

    trials = []
    monkeypatch.setattr(Model, "train", lambda self, **kwargs: trials.append(kwargs))  # no training
    args = dict(data="d.yaml", iterations=2, loggers="tensorboard,mlflow", project=str(tmp_path))
    run_tune("yolov8n.yaml", args, log=lambda line: None)
    assert [t["loggers"] for t in trials] == ["tensorboard,mlflow"] * 2


def test_cli_names_a_bad_logger_in_one_line(capsys):
    from yoloforge import cli

    assert cli.main(["train", "data=shapes", "loggers=tensorboard,wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "yoloforge: loggers=tensorboard,wandb is not valid: 'wandb' is not a logger; "
        "choose from tensorboard, mlflow"
    )
