"""MLflow: one MLflow run per training, through MLflow's own client.

The tracking store is MLflow's choice: ``MLFLOW_TRACKING_URI`` (a server, a database) when set,
else its local store in the working folder (``mlflow.db`` or ``mlruns/``, by MLflow version), which
``mlflow ui`` there shows. The experiment is ``MLFLOW_EXPERIMENT_NAME`` when set, else the run's
``project`` (runs/detect). The run is named after the run folder and tagged with its path, so a
resumed training (``resume=True``) continues its MLflow run.

Logged: the params (args.yaml), every results.csv column per epoch with step = the epoch (from 1),
and at the end the artifacts: weights/*.pt, results.csv, args.yaml and the plots. A training that
stops on an error ends its MLflow run as FAILED (KILLED after Ctrl-C), the error in a tag.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from yoloforge.callbacks import Callback
from yoloforge.loggers import finite_values, require, run_images

log = logging.getLogger(__name__)

RUN_DIR_TAG = "yoloforge.run_dir"
PLOTS = ("*.png", "*.jpg")
RUN_FILES = ("results.csv", "args.yaml")
BATCH_LIMIT = 100  # params per log_batch call (MLflow's limit)
ERROR_TAG = "yoloforge.error"
ERROR_TAG_LIMIT = 5000  # characters: MLflow's limit on a tag value


def metric_name(column: str) -> str:
    """A results.csv column as an MLflow metric name: MLflow allows only alphanumerics, ``_ - . : /``
    and spaces, so ``metrics/mAP50(B)`` becomes ``metrics/mAP50B``."""
    return re.sub(r"[^\w\-.:/ ]", "", column)


class MLflowLogger(Callback):
    def __init__(self) -> None:
        require("mlflow", "mlflow")
        self.client: Any = None
        self.run_id = ""

    def on_train_start(self, trainer) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's local default
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or trainer.settings.project
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run_dir = str(Path(trainer.save_dir).resolve())
        resumed = self._run_of(experiment_id, run_dir) if trainer.start.resume is not None else None
        if resumed:
            self.run_id = resumed
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {RUN_DIR_TAG: run_dir}
            run = self.client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params(trainer.args)
        log.info(
            "MLflow: run %s in experiment '%s' at %s ('mlflow ui' shows it)",
            self.run_id, name, self.client.tracking_uri,
        )  # fmt: skip

    def on_epoch_end(self, trainer, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(metric_name(k), v, now, step) for k, v in finite_values(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, trainer, result) -> None:
        save_dir = Path(trainer.save_dir)
        for path in sorted((save_dir / "weights").glob("*.pt")):
            self.client.log_artifact(self.run_id, str(path), artifact_path="weights")
        files = [save_dir / name for name in RUN_FILES if (save_dir / name).is_file()]
        for path in run_images(save_dir, PLOTS) + files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_fit_error(self, trainer, error: BaseException) -> None:
        """KILLED after Ctrl-C or a stop signal, FAILED otherwise, with the error as a tag: an MLflow
        run is never left RUNNING by a training that stopped (resume=True sets it RUNNING again)."""
        if not self.run_id:
            return
        message = f"{type(error).__name__}: {error}"
        self.client.set_tag(self.run_id, ERROR_TAG, message[:ERROR_TAG_LIMIT])
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.run_id, status)

    def _log_params(self, args: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in args.items()]
        for i in range(0, len(params), BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=params[i : i + BATCH_LIMIT])

    def _run_of(self, experiment_id: str, run_dir: str) -> str | None:
        """The id of the latest MLflow run of ``run_dir`` (the run being resumed), None when none."""
        if "'" in run_dir:  # cannot be quoted in a filter string: start a new MLflow run
            return None
        runs = self.client.search_runs(
            [experiment_id], f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", order_by=["attributes.start_time DESC"]
        )
        return runs[0].info.run_id if runs else None
