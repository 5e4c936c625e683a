"""Export a fitted BoTorch ``SingleTaskGP`` posterior as exact, self-contained TorchScript."""

from __future__ import annotations

from export.artifact import export_model
from export.data import DataError
from export.gate import ExportGateError
from export.posterior import trace_posterior

__all__ = ["DataError", "ExportGateError", "export_model", "trace_posterior"]
