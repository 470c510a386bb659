"""The dataset doctor: the advanced guide's dataset advice checked with numbers, plus duplicates,
leakage and likely label errors. ``yoloforge doctor data=config.yaml [model=best.pt]``.

    stats, duplicates, geometry, label_errors   the checks, each returning ``Finding``s
    pixels                                      one read of every image (hashes, brightness)
    run                                         ``doctor()``: reads the dataset once, runs the checks
    output, html, charts                        doctor.json, the console table, doctor.html
"""

import sys
import types

from yoloforge.doctor.settings import DoctorSettings

__all__ = ["DoctorReport", "DoctorSettings", "Finding", "doctor"]


class _CallableModule(types.ModuleType):
    """``from yoloforge import doctor`` finds this package, not the function (importing a package's
    submodule sets the package's attribute of that name): calling the package runs ``doctor()``."""

    def __call__(self, *args, **kwargs):
        from yoloforge.doctor.run import doctor

        return doctor(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name: str):
    # the CLI reads DoctorSettings for --help and key checks without importing torch and matplotlib
    if name == "doctor":
        from yoloforge.doctor.run import doctor

        return doctor
    if name in ("DoctorReport", "Finding"):
        from yoloforge.doctor import report

        return getattr(report, name)
    raise AttributeError(f"module 'yoloforge.doctor' has no attribute {name!r}")
