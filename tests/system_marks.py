"""Skip marks for tests that need what only some systems have (CI runs Linux, macOS and Windows).

Each mark tests for the feature itself, not for a system's name.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this system")
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
needs_nice = pytest.mark.skipif(not hasattr(os, "nice"), reason="no os.nice on this system")
