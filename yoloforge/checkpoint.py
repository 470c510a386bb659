"""Our checkpoint format: a dict of plain Python values and tensors.

It loads with ``torch.load(path, weights_only=True)``, so opening a checkpoint never runs pickled
code. Before any ``torch.load`` of a user's file, ``check_archive`` reads the zip directory (nothing
is unpickled) and refuses what torch.save does not write: TorchScript archives (torch.load hands
them to torch.jit.load, which runs their code), other zips, legacy pickles, truncated copies and
records that would inflate far beyond the file. Files are written atomically: a temp file in the
same folder, flushed and fsynced, then renamed over the target, so a crash mid-write leaves the
previous file intact (``remove_stale_temps`` clears what a killed write leaves).

Layout (``FORMAT_VERSION`` 1)::

    format        "yoloforge"           marks the file as ours
    version       1                     format version
    yoloforge     "0.1.0"               package version that wrote it
    arch          {"family", "size", "nc"}
    names         [class names]
    model         state_dict            weights to run: the EMA when training has one
    train_model   state_dict | None     raw training weights (resume only)
    optimizer     state_dict | None
    ema_updates   int                   EMA update count (resume)
    epoch         int                   last completed epoch (0-based), -1 when none
    best_fitness  float | None
    train_args    {key: value}          flat training settings
    date          ISO time
"""

from __future__ import annotations

import datetime
import errno
import os
import pickle
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from yoloforge.files import umask

FORMAT = "yoloforge"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    family: str
    size: str
    nc: int
    names: list[str]
    model: dict[str, torch.Tensor]
    train_model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    ema_updates: int = 0
    epoch: int = -1
    best_fitness: float | None = None
    train_args: dict[str, Any] = field(default_factory=dict)
    date: str = ""

    def to_dict(self) -> dict[str, Any]:
        from yoloforge import __version__

        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "yoloforge": __version__,
            "arch": {"family": self.family, "size": self.size, "nc": int(self.nc)},
            "names": list(self.names),
            "model": self.model,
            "train_model": self.train_model,
            "optimizer": self.optimizer,
            "ema_updates": int(self.ema_updates),
            "epoch": int(self.epoch),
            "best_fitness": None if self.best_fitness is None else float(self.best_fitness),
            "train_args": _plain(self.train_args),
            "date": self.date or datetime.datetime.now().isoformat(timespec="seconds"),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Checkpoint:
        arch = d["arch"]
        return Checkpoint(
            family=arch["family"],
            size=arch["size"],
            nc=int(arch["nc"]),
            names=list(d["names"]),
            model=d["model"],
            train_model=d.get("train_model"),
            optimizer=d.get("optimizer"),
            ema_updates=int(d.get("ema_updates", 0)),
            epoch=int(d.get("epoch", -1)),
            best_fitness=d.get("best_fitness"),
            train_args=dict(d.get("train_args") or {}),
            date=d.get("date", ""),
        )


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file."""


def _plain(value: Any) -> Any:
    """Reduce settings to types weights_only loading accepts (tuples become lists, paths strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write ``ckpt`` atomically to ``path`` (temp file in the same folder, fsync, rename).

    A full disk or failed write raises CheckpointError; the previous file at ``path`` is untouched
    and the temp file removed. The file gets the mode the user's umask gives new files.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        reason = _write_failure(e, path.parent)  # asked before the temp file frees its space
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if reason is None:
            raise
        kept = f"the previous {path.name} is kept" if path.is_file() else "nothing was written"
        raise CheckpointError(f"could not write {path}: {reason}; {kept}") from e
    _fsync_dir(path.parent)
    return path


# mkstemp's names for save_checkpoint's temp files: '.last.pt.' + 8 of [a-z0-9_] + '.tmp'
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files (``.last.pt.k3j9x_2a.tmp``) a killed ``save_checkpoint`` left in
    ``folder``; returns the removed paths. Call it when no save into ``folder`` is under way."""
    try:
        entries = sorted(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if _TEMP_NAME.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _write_failure(error: BaseException, folder: Path) -> str | None:
    """Why a checkpoint could not be written, in words; None when ``error`` is not a write failure.
    torch.save reports a failed write as RuntimeError '[enforce fail at inline_container.cc...]'."""
    if isinstance(error, OSError):
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    elif isinstance(error, RuntimeError) and "inline_container" in str(error):
        try:
            full = shutil.disk_usage(folder).free < (1 << 20)
        except OSError:
            full = False
    else:
        return None
    return "the disk is full" if full else f"the write failed ({short_reason(error)})"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_plain(path: str | Path) -> dict[str, Any] | None:
    """Load ``path`` with ``weights_only=True``; None when the file needs objects we do not admit.

    Our checkpoints always load this way. A file written by another trainer (which pickles whole
    modules) does not, and is then handed to the restricted importer in ``model.weights``. Files
    that are not torch.save archives, or are damaged or crafted, raise CheckpointError.
    """
    path = Path(path)
    with open_archive(path) as f, damaged_file_errors(path):
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # asks for classes beyond plain data: not ours
            return None
        check_tensors(obj, path)
    return obj if isinstance(obj, dict) else None


def is_ours(obj: dict[str, Any] | None) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load one of our checkpoints (weights_only). Raises CheckpointError naming the file otherwise."""
    return checkpoint_from(read_plain(path), path)


def checkpoint_from(obj: dict[str, Any] | None, path: str | Path) -> Checkpoint:
    """Our Checkpoint from what ``read_plain(path)`` returned; CheckpointError naming the file."""
    if not is_ours(obj):
        raise CheckpointError(f"{path}: not a yoloforge checkpoint")
    try:
        if int(obj.get("version", 0)) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: written by a newer yoloforge (format {obj['version']}); "
                "upgrade with pip install -U yoloforge"
            )
        ckpt = Checkpoint.from_dict(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: damaged checkpoint ({short_reason(e)})") from None
    if not isinstance(ckpt.model, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.model.values()):
        raise CheckpointError(f"{path}: damaged checkpoint (its model weights are not all tensors)")
    return ckpt


def state_to(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Detached CPU copy of a state dict; floating tensors cast to ``dtype`` when given."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.clone(memory_format=torch.contiguous_format)  # channels_last weights: standard layout
    return out


# ---------------------------------------------------------------------------------------------
# Reading a user's file safely: the zip directory first, then the load, errors as one line

ZIP_MAGIC = b"PK\x03\x04"  # a local file header: torch.save's archives start with one
EOCD, EOCD64_LOCATOR, EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
INFLATE_LIMIT = (2, 1 << 20)  # records may declare at most 2x the file's size + 1 MiB


def check_archive(path: str | Path) -> None:
    """Refuse ``path`` unless it looks like an archive torch.save wrote; reads the zip directory only.

    torch.load hands a zip with a ``constants.pkl`` record to torch.jit.load, which runs the
    archive's own code whatever ``weights_only`` says, so such files never reach torch.load.
    """
    with open_archive(path):
        pass


@contextmanager
def open_archive(path: str | Path) -> Iterator[IO[bytes]]:
    """``path`` opened once, checked by ``check_archive``'s rules, at offset 0 for torch.load: the
    file checked is the file loaded, even if the name is replaced in between."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below, after the caller's load)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder; give a checkpoint file (.pt)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    with f:
        try:
            _check_open_archive(f, path)
            f.seek(0)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
        yield f


def _check_open_archive(f: IO[bytes], path: Path) -> None:
    size = os.fstat(f.fileno()).st_size
    head = f.read(4)
    if head != ZIP_MAGIC:
        if len(head) < 4 and ZIP_MAGIC.startswith(head):
            raise CheckpointError(f"{path}: truncated or incomplete (was it copied whole?)")
        if head[:1] == b"\x80":  # a pickle's first opcode (PROTO)
            raise CheckpointError(
                f"{path}: a pickle, not a zip checkpoint: PyTorch's legacy format (torch < 1.6) or a plain "
                "pickle; yoloforge reads only the zip format torch.save has written since 1.6"
            )
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (torch.save writes zip archives; this file is not one)"
        )
    try:
        with zipfile.ZipFile(f) as archive:
            infos, start_dir = archive.infolist(), archive.start_dir
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error):  # no readable directory
        raise CheckpointError(f"{path}: truncated or incomplete (was it copied whole?)") from None
    if _directory_as_stated(f, size) != (start_dir, len(infos)):
        raise damaged(path, "its zip directory is not where torch.save puts it, just before the end record")
    _check_records(infos, start_dir, size, path)


def _directory_as_stated(f: IO[bytes], size: int) -> tuple[int, int] | None:
    """(offset, entries) of the central directory as the end record states them. torch's zip reader
    (miniz) reads the directory at that offset; Python's zipfile reads it just before the end
    record. Requiring both to agree means both see the same records."""
    if size < 22:
        return None
    f.seek(size - 22)
    end = f.read(22)
    if end[:4] != EOCD or end[20:22] != b"\0\0":  # torch.save writes no archive comment
        return None
    entries, _, offset = struct.unpack("<HII", end[10:20])
    if entries != 0xFFFF and offset != 0xFFFFFFFF:
        return offset, entries
    if size < 22 + 20:  # zip64: a locator just before the end record points at the zip64 end record
        return None
    f.seek(size - 22 - 20)
    locator = f.read(20)
    if locator[:4] != EOCD64_LOCATOR:
        return None
    f.seek(struct.unpack("<Q", locator[8:16])[0])
    end64 = f.read(56)
    if len(end64) < 56 or end64[:4] != EOCD64:
        return None
    entries, _, offset = struct.unpack("<QQQ", end64[32:56])
    return offset, entries


def _check_records(infos: list[zipfile.ZipInfo], start_dir: int, size: int, path: Path) -> None:
    names = [info.filename for info in infos]
    prefix = names[0].split("/", 1)[0] + "/" if names else ""
    if not names or not all(name.startswith(prefix) for name in names):
        raise CheckpointError(f"{path}: a zip archive but not a PyTorch checkpoint (no data.pkl record)")
    records = {name[len(prefix) :] for name in names}  # as torch's reader names them
    if "constants.pkl" in records or any(record.startswith("code/") for record in records):
        raise CheckpointError(
            f"{path} is a TorchScript archive, which runs its own code when loaded; yoloforge refuses it "
            "as weights. If you exported it yourself, rename it to .torchscript (prediction only); "
            "otherwise use the .pt checkpoint it came from"
        )
    if "data.pkl" not in records:
        raise CheckpointError(f"{path}: a zip archive but not a PyTorch checkpoint (no data.pkl record)")
    declared = sum(info.file_size for info in infos)
    if declared > INFLATE_LIMIT[0] * size + INFLATE_LIMIT[1]:
        raise CheckpointError(
            f"{path}: its records claim {declared / 2**20:.0f} MiB in a {size / 2**20:.1f} MiB file; "
            "refused as damaged or crafted (torch.save stores records uncompressed)"
        )
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CheckpointError(
                f"{path}: record '{info.filename}' is compressed, which torch.save never does; refused "
                "as damaged or crafted (a compressed record can inflate far beyond the file)"
            )
        if info.header_offset + 30 + len(info.filename.encode()) + info.compress_size > start_dir:
            raise CheckpointError(f"{path}: truncated or incomplete (was it copied whole?)")


def check_tensors(obj: Any, path: str | Path) -> None:
    """Every tensor in ``obj`` must fit in the bytes its storage holds. A crafted header can
    stretch a small storage over 10**13 elements (stride 0), which a later copy would allocate."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if item.layout != torch.strided:
                raise damaged(path, f"a {item.layout} tensor")
            held = item.untyped_storage().nbytes()
            if item.numel() * item.element_size() > held:
                raise damaged(
                    path, f"a tensor of shape {tuple(item.shape)} claims more than the {held} bytes it holds"
                )
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(getattr(item, "__dict__", None), dict) and not isinstance(item, type):
            stack.extend(vars(item).values())  # the restricted importer's placeholders


@contextmanager
def damaged_file_errors(path: str | Path) -> Iterator[None]:
    """Whatever a damaged or crafted file makes the loader raise becomes one CheckpointError line
    naming the file; our own errors (CheckpointError and its subclasses) pass unchanged."""
    try:
        yield
    except CheckpointError:
        raise
    except MemoryError:
        raise damaged(path, "it asks for more memory than there is") from None
    except Exception as e:
        raise damaged(path, short_reason(e)) from e


def damaged(path: str | Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: damaged or not a checkpoint yoloforge can read ({reason})")


def short_reason(error: BaseException) -> str:
    """'TypeError: ...': the first line of an error, without torch's '[enforce fail at ...]' prefix."""
    text = (str(error).strip().splitlines() or [""])[0]
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
