"""Export a fitted BoTorch model's posterior as exact, self-contained TorchScript (and, on
request, an AOTInductor package and an ONNX graph)."""

from __future__ import annotations

from gp_serve.export.torchscript import quiet_torchscript

# linear_operator scripts a helper with torch.jit.script when BoTorch is first imported: a
# deprecation warning (a FutureWarning on torch 2.14, shown by default) no user can act on.
with quiet_torchscript():
    from gp_serve.export.artifact import export_model
    from gp_serve.export.data import DataError
    from gp_serve.export.families import trace_posterior
    from gp_serve.export.gate import ExportGateError

__all__ = ["DataError", "ExportGateError", "export_model", "trace_posterior"]
