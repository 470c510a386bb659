"""The dataset doctor: the advanced guide's dataset advice checked with numbers, plus duplicates,
leakage and likely label errors. ``yoloforge doctor data=config.yaml [model=best.pt]``."""

from yoloforge.doctor.report import DoctorReport, Finding
from yoloforge.doctor.run import doctor
from yoloforge.doctor.settings import DoctorSettings

__all__ = ["DoctorReport", "DoctorSettings", "Finding", "doctor"]
