"""TensorBoard: event files in the run folder, so ``tensorboard --logdir runs/detect`` compares runs.

Per epoch (step = the epoch, from 1): every results.csv column as a scalar (losses, metrics, the
learning rate of each parameter group, time), and the training mosaics (train_batch*.jpg) once
they exist. At the end: the validation mosaics, the curves (PR_curve.png, ...) and results.png as
images, and the hyperparameters (args.yaml) with the final metrics in TensorBoard's HParams tab
(written to ``<run>/hparams``, the way ``SummaryWriter.add_hparams`` keeps them).
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from yoloforge.callbacks import Callback
from yoloforge.data.images import ImageReadError, read_image
from yoloforge.loggers import finite_values, require, run_images

log = logging.getLogger(__name__)

TRAIN_IMAGES = ("train_batch*.jpg", "labels.jpg")
FINAL_IMAGES = ("val_batch*_labels.jpg", "val_batch*_pred.jpg", "*_curve.png", "confusion_matrix*.png")
FINAL_IMAGES += ("results.png",)


class TensorBoardLogger(Callback):
    def __init__(self) -> None:
        require("tensorboard", "tensorboard")
        self.writer: Any = None
        self.logged: set[str] = set()  # images already written (each once)

    def on_train_start(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(trainer.save_dir))
        log.info("TensorBoard: view with 'tensorboard --logdir %s'", trainer.save_dir.parent)
        args = yaml.safe_dump(trainer.args, sort_keys=False)
        self.writer.add_text("args", "    " + args.replace("\n", "\n    "), trainer.state.epoch)

    def on_epoch_end(self, trainer, row: dict[str, float]) -> None:
        step = int(row["epoch"])
        for key, value in finite_values(row).items():
            self.writer.add_scalar(key, value, step)
        self._images(trainer.save_dir, TRAIN_IMAGES, step)
        self.writer.flush()

    def on_fit_end(self, trainer, result) -> None:
        step = trainer.state.epoch
        self._images(trainer.save_dir, FINAL_IMAGES, step)
        box = result.box if result is not None else None
        metrics = {"hparam/mAP50(B)": box.map50, "hparam/mAP50-95(B)": box.map} if box is not None else {}
        self.writer.add_hparams(_hparams(trainer.args), metrics, run_name="hparams", global_step=step)
        self.writer.close()

    def on_fit_error(self, trainer, error: BaseException) -> None:
        if self.writer is not None:
            self.writer.close()  # what was logged so far stays readable

    def _images(self, save_dir, patterns: tuple[str, ...], step: int) -> None:
        for path in run_images(save_dir, patterns):
            if path.name in self.logged:
                continue
            try:
                image = read_image(path)  # (H, W, 3) RGB
            except ImageReadError as e:
                log.warning("TensorBoard: %s", e)
                continue
            self.writer.add_image(path.stem, image, step, dataformats="HWC")
            self.logged.add(path.name)


def _hparams(args: dict[str, Any]) -> dict[str, Any]:
    """args.yaml as HParams values: numbers, strings and booleans as they are, the rest as text."""
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in args.items()}
