"""Loading an exported posterior in any of its formats (``gp_artifact.FORMAT_FILES``) as one
interface: the four methods of ``gp_artifact.METHODS``, each taking `q x d` float64 ``X``.

See docs/formats.md ("Serving a format").
"""

from __future__ import annotations

import os
import warnings
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from gp_serve.handler import gp_artifact, mapped


@runtime_checkable
class PosteriorModule(Protocol):
    """An exported posterior as loaded (`load`), whatever its format: the four methods of
    ``gp_artifact.METHODS``, each taking `q x d` float64 ``X`` on the CPU.

    A TorchScript ``ScriptModule`` has them as compiled methods; `Pt2Posterior` and
    `OnnxPosterior` as Python ones.
    """

    def forward(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean `q x m` and output-major covariance `(q*m) x (q*m)` (entry ``t*q + i`` is
        output ``t`` at point ``i``)."""
        ...

    def forward_noisy(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """As `forward`, with observation noise."""
        ...

    def mean_var(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance, `q x m` each."""
        ...

    def mean_var_noisy(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """As `mean_var`, with observation noise."""
        ...


def check_points(X: Tensor, num_inputs: int) -> None:
    """Refuse what a compiled posterior cannot take: it must be `q x d` float64, ``q >= 1``.

    Raises:
        ValueError: Naming the expected and the actual dtype, shape or device.
    """
    if X.dtype != torch.float64:
        raise ValueError(f"expected float64 points, got {X.dtype}")
    if X.dim() != 2 or X.size(1) != num_inputs or X.size(0) < 1:
        raise ValueError(
            f"expected points of shape q x {num_inputs} with q >= 1, got {tuple(X.shape)}"
        )
    if X.device.type != "cpu":
        raise ValueError(f"expected points on the CPU, got {X.device}")


class _Compiled:
    """The four methods over a per-method ``run`` (see the subclasses)."""

    def __init__(self, num_inputs: int) -> None:
        self.num_inputs = num_inputs

    def _run(self, method: gp_artifact.MethodName, X: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _call(self, method: gp_artifact.MethodName, X: Tensor) -> tuple[Tensor, Tensor]:
        check_points(X, self.num_inputs)
        return self._run(method, X.contiguous())

    def forward(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean `q x m` and output-major covariance `(q*m) x (q*m)`."""
        return self._call("forward", X)

    __call__ = forward

    def forward_noisy(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """As `forward`, with observation noise."""
        return self._call("forward_noisy", X)

    def mean_var(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance, `q x m` each."""
        return self._call("mean_var", X)

    def mean_var_noisy(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """As `mean_var`, with observation noise."""
        return self._call("mean_var_noisy", X)


class Pt2Posterior(_Compiled):
    """The models of an AOTInductor package, one per method."""

    def __init__(self, path: str, num_inputs: int) -> None:
        super().__init__(num_inputs)
        from torch._inductor.package import load_package

        with warnings.catch_warnings():  # (torch's own pytree deprecation, while unpickling)
            warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)
            self._runners = {method: load_package(path, method) for method in gp_artifact.METHODS}

    def _run(self, method: gp_artifact.MethodName, X: Tensor) -> tuple[Tensor, Tensor]:
        first, second = self._runners[method](X)
        return first, second


class OnnxPosterior(_Compiled):
    """onnxruntime sessions, one per method, on the subgraphs of the method's outputs."""

    def __init__(self, path: str, num_inputs: int, threads: int | None = None) -> None:
        super().__init__(num_inputs)
        import onnx
        import onnxruntime

        model = onnx.load(path)
        onnx.checker.check_model(model)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        extractor = onnx.utils.Extractor(model)
        self._sessions = {}
        for method, outputs in gp_artifact.ONNX_OUTPUTS.items():
            part = extractor.extract_model([gp_artifact.ONNX_INPUT], list(outputs))
            self._sessions[method] = onnxruntime.InferenceSession(
                part.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )

    def _run(self, method: gp_artifact.MethodName, X: Tensor) -> tuple[Tensor, Tensor]:
        first, second = self._sessions[method].run(None, {gp_artifact.ONNX_INPUT: X.numpy()})
        return torch.from_numpy(first), torch.from_numpy(second)


def load(
    directory: str | os.PathLike,
    fmt: str,
    num_inputs: int,
    threads: int | None = None,
    *,
    verify: bool = True,
) -> PosteriorModule:
    """Load ``<directory>``'s posterior in format ``fmt``.

    Before anything is loaded, the file's SHA-256 is compared with the one its
    ``metadata.json`` records, if any (`gp_artifact.verify_posterior`): a file changed
    after export is refused, not served.

    Args:
        directory: The artifact folder (or an extracted model archive).
        fmt: A key of ``gp_artifact.FORMAT_FILES``.
        num_inputs: ``d`` (from the metadata): the compiled formats check it.
        threads: Intra-op threads for onnxruntime (torch's are set by the caller).
        verify: Read ``<directory>/metadata.json`` and check the file's hash. Only the
            export stage passes False: it loads each file back before the metadata
            (and the hash) is written.

    Returns:
        The four methods (a ScriptModule for ``torchscript``, its large buffers memory-mapped
        from the file (`mapped.map_buffers`), `Pt2Posterior` for ``pt2``,
        `OnnxPosterior` for ``onnx``).

    Raises:
        gp_artifact.ArtifactError: If the format is unknown, the metadata cannot be read
            (with ``verify``), or the file is missing, truncated, not the file exported
            or cannot be loaded.
    """
    if verify:
        path = gp_artifact.verify_posterior(directory, fmt, gp_artifact.load_metadata(directory))
    else:
        path = gp_artifact.check_posterior(directory, fmt)
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():  # (torch >= 2.13 deprecates it; still the default)
                warnings.filterwarnings("ignore", r".*torch\.jit\.load` is deprecated")
                module = torch.jit.load(path, map_location="cpu")
            mapped.map_buffers(module, path)  # (large caches: one copy per machine)
            posterior: PosteriorModule = module
            return posterior
        if fmt == "pt2":
            return Pt2Posterior(path, num_inputs)
        return OnnxPosterior(path, num_inputs, threads)
    except gp_artifact.ArtifactError:
        raise
    except Exception as e:  # (torch, AOTInductor, onnx and onnxruntime raise their own types)
        reason = " ".join(str(e).split())[:300]
        raise gp_artifact.ArtifactError(
            f"{path}: cannot load as {fmt} ({type(e).__name__}: {reason}); re-export the model"
        ) from e
