"""gp-serve: serve a fitted BoTorch model's exact posterior (means, variances, the joint
covariance) over TorchServe.

    from gp_serve import export_model, trace_posterior

Subpackages are imported on first use: the model archive ships this file and never imports
BoTorch. See docs/serving.md ("Where things are").
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.17.0"

# The export stage's public names and the module each comes from (imported on first use).
_EXPORTS = {
    "DataError": "gp_serve.export",
    "ExportGateError": "gp_serve.export",
    "export_model": "gp_serve.export",
    "trace_posterior": "gp_serve.export",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from gp_serve.export import DataError, ExportGateError, export_model, trace_posterior

__all__ = ["DataError", "ExportGateError", "__version__", "export_model", "trace_posterior"]


def __getattr__(name: str) -> Any:
    """``gp_serve.export_model`` and the other export names, imported when first asked for."""
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gp_serve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
