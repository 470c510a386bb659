"""Shared fixtures. Keep them generic and small; tests that need more build it themselves."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, hw=(32, 48), value=100)``: a flat image file, format from the suffix."""

    def write(path: str | Path, hw: tuple[int, int] = (32, 48), value: int = 100) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(path.suffix, np.full((*hw, 3), value, dtype=np.uint8))
        assert ok
        data.tofile(str(path))
        return path

    return write


@pytest.fixture
def yoloforge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private YOLOFORGE_HOME, so tests never touch the user's cache folder."""
    home = tmp_path / "yoloforge_home"
    monkeypatch.setenv("YOLOFORGE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.yaml of a small demo dataset (16 train, 8 val images), made once per test session.

    Shared: read it, do not modify it (scans may add their .cache files).
    """
    from yoloforge.data.demo import ensure_shapes

    return ensure_shapes(tmp_path_factory.mktemp("shapes"), n_train=16, n_val=8)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run faster on one thread than on two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _private_user_settings_for_the_session(tmp_path_factory: pytest.TempPathFactory):
    """Session- and module-scoped fixtures that train also read an empty user settings folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLOFORGE_CONFIG_DIR", str(tmp_path_factory.mktemp("session_user_config")))
        yield


@pytest.fixture(autouse=True)
def _private_user_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test reads an empty user settings folder, never the developer's own defaults."""
    monkeypatch.setenv("YOLOFORGE_CONFIG_DIR", str(tmp_path_factory.mktemp("user_config")))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("2m")``: a folder on a tmpfs of that size, to fill the disk on purpose; unmounted at the
    end. Mounting needs root on Linux: the test is skipped elsewhere or when the mount is refused."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if not sys.platform.startswith("linux") or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root on Linux")
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of the 'yoloforge' logger (the console setup may stop them reaching the root logger)."""
    logger = logging.getLogger("yoloforge")
    old_level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)


@pytest.fixture
def open_page():
    """``open_page(html, screenshot=None) -> PageCheck``: the page as headless Chromium renders it.

    Skipped where Chromium is not installed, except under .ci/run (YOLOFORGE_REQUIRE_BROWSER=1),
    which installs it: there a missing browser fails the test.
    """
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        if os.environ.get("YOLOFORGE_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (YOLOFORGE_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    from browser import open_page

    return open_page


# Tests that load OpenVINO in this process run last. Once OpenVINO's runtime (and its thread pool) is
# loaded, a later fork or spawn from the same process that has also forked loader workers can
# segfault in glibc (seen three times in full runs: in os.system, subprocess and Playwright's
# driver start, never in a smaller selection). Users' processes never fork after OpenVINO this
# way in our code; the suite does it hundreds of times. Nothing after these tests forks.
LOADS_OPENVINO = ("tests/test_export_parity.py::", "tests/test_benchmark.py::", "::test_readme_commands_run")


def pytest_collection_modifyitems(session, config, items):
    def loads_openvino(item) -> bool:
        return any(key in item.nodeid for key in LOADS_OPENVINO)

    items[:] = [i for i in items if not loads_openvino(i)] + [i for i in items if loads_openvino(i)]
