"""TorchScript without the deprecation noise.

torch 2.13 marks ``torch.jit.trace``/``script``/``save``/``load`` as deprecated in favour
of ``torch.export`` (torch 2.14 with a FutureWarning). TorchScript stays the default
artifact format, the model archive's serialized file, while ``posterior.pt2`` and
``posterior.onnx`` (``torch.export``, `export.portable`) are written on request; the export
stage silences exactly these warnings, nothing else.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch.jit's deprecation warnings inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", FutureWarning)
        yield
