"""Small text files written whole or not at all: results.csv, tune_results.csv, settings.yaml.

A temp file in the same folder is written, flushed and fsynced, then renamed over the target, so a
crash or a kill never leaves half a file; a failed write removes its temp file. The temp file is
created with mode 0o666 (not mkstemp's 0600), so the result is an ordinary file under the umask.
Checkpoints follow the same steps in ``checkpoint.save_checkpoint``, through torch.save.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; the temp file is ``.{stem}.{hex}.tmp``."""
    path = Path(path)
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def umask() -> int:
    """The process umask, read without changing it where Linux shows it in /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask
