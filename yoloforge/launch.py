"""``device=0,1,2,3``: training in one process per GPU, launched by yoloforge itself through torchrun.

``yoloforge train ... device=0,1`` and ``YOLO(...).train(device=[0, 1])``, outside torchrun, run
``python -m torch.distributed.run --nproc-per-node=2 ... -m yoloforge train <the same settings>``
and wait for it; its output streams to this console. The run folder is claimed here first and
handed to the processes by name (``exist_ok=True``), so the caller knows where best.pt lands.

CPU processes are torchrun's job: ``torchrun --nproc-per-node=2 -m yoloforge train device=cpu ...``
(a process count cannot be read from ``device=cpu``); under torchrun this module is not involved.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoloforge.device import DeviceError, gpu_ids, select_device
from yoloforge.distributed import launch_command
from yoloforge.runs import RunFolder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launched:
    returncode: int
    run_dir: Path  # rank 0's run folder: weights/best.pt when the run succeeded


def wants_processes(device: Any, environ: dict[str, str] | None = None) -> bool:
    """True when ``device`` names several GPUs and this process is not already one of torchrun's."""
    env = os.environ if environ is None else environ
    return len(gpu_ids(device)) > 1 and "WORLD_SIZE" not in env


def train_in_processes(model: str, settings: Any, overrides: dict[str, Any]) -> Launched:
    """Run ``yoloforge train model=<model> <overrides>`` in one process per GPU of ``settings.device``.

    ``settings`` are the checked TrainSettings of ``overrides``. The GPUs are checked here first (one
    DeviceError line when this machine lacks them). A new run's folder is claimed here; a resumed
    run keeps its own.
    """
    ids = gpu_ids(settings.device)
    if len(set(ids)) != len(ids):
        raise DeviceError(f"device={settings.device}: a GPU is named twice; name each once, e.g. 0,1")
    select_device(settings.device)  # one line when these GPUs are not here
    args = {k: v for k, v in overrides.items() if k != "model"}
    run = None
    if not settings.resume:
        run = RunFolder.claim(settings.project, settings.name, settings.exist_ok)
        args.update(project=str(run.path.parent), name=run.path.name, exist_ok=True)
        run_dir = run.path
    else:
        run_dir = Path(model).resolve().parent.parent  # .../train/weights/last.pt
    program = ["train", f"model={model}", *(f"{k}={_cli_value(v)}" for k, v in args.items())]
    log.info("Training in %d processes, one per GPU (%s): torchrun", len(ids), ",".join(map(str, ids)))
    code = _run(launch_command(len(ids), program))
    if code != 0 and run is not None:
        run.discard()  # nothing but set-up files: the failed start leaves no empty folder
    return Launched(code, run_dir)


def _run(command: list[str]) -> int:
    """Run the launcher with this console as its output; its exit status."""
    proc = subprocess.Popen(command)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent torchrun the same Ctrl-C: it stops its processes
        try:
            return proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.terminate()  # torchrun passes SIGTERM on to its processes
            return proc.wait()


def _cli_value(value: Any) -> str:
    """A setting as ``key=value`` on the command line: lists as 0,1; None as ''."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
