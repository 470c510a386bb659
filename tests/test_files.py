"""files.write_text_atomic: whole or not at all, an ordinary file under the umask, no temp left."""

from __future__ import annotations

import os
import stat

import pytest

from yoloforge.files import write_text_atomic


def test_replaces_the_file_whole_with_the_umask_mode(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old\n")
    old = os.umask(0o027)
    try:
        write_text_atomic(path, "new ü\n")
    finally:
        os.umask(old)
    assert path.read_text(encoding="utf-8") == "new ü\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "tune_results.csv"
    path.write_text("old\n")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tune_results.csv"]
