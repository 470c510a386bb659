"""What users see: the library logs to ``logging.getLogger("yoloforge...")``; the entry points
(``YOLO`` and the CLI) attach one plain handler to that logger if the application has not."""

from __future__ import annotations

import logging
import sys


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return f"WARNING {msg}" if record.levelno == logging.WARNING else msg


def setup_console(verbose: bool = True) -> None:
    """Idempotent: one stdout handler on the 'yoloforge' logger, unless the application (or pytest)
    already handles logging, in which case our records go to its handlers."""
    logger = logging.getLogger("yoloforge")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Plain("%(message)s"))
    logger.addHandler(handler)
