"""Export a fitted BoTorch model's posterior as exact, self-contained TorchScript."""

from __future__ import annotations

from export.artifact import export_model
from export.data import DataError
from export.families import trace_posterior
from export.gate import ExportGateError

__all__ = ["DataError", "ExportGateError", "export_model", "trace_posterior"]
