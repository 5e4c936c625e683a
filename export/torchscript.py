"""TorchScript without the deprecation noise.

torch 2.13 marks ``torch.jit.trace``/``script``/``save``/``load`` as deprecated in
favour of ``torch.export``, which cannot yet export GPyTorch kernels (``torch.equal``
in ``Kernel.__call__``). TorchScript stays the artifact format (see README, "Design"),
so the export stage silences exactly these warnings, nothing else.
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
