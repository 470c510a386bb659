"""Skip marks for tests that need what only some systems have (CI runs Linux, macOS and Windows).

Each mark tests for the feature itself, not for a system's name.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this system")
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
needs_nice = pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice on this system")


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS);
    None where there is no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
