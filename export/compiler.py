"""How a family's posterior is compiled: prior terms (the model's own modules) at the leaves
and tensor algebra above them, traced and scripted for TorchScript (`TORCHSCRIPT`) or kept
eager for ``torch.export`` (`EXPORTABLE`). See docs/formats.md, "How the posterior exports".
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar
from unittest import mock

import gpytorch.kernels.kernel as gpytorch_kernel
import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from gp_serve.export.engine import CompiledPosterior, PriorTermsModule
from gp_serve.export.torchscript import quiet_torchscript

# The GPyTorch settings a family evaluates its prior terms under (e.g. ``trace_mode``).
Settings = Callable[[], AbstractContextManager]
# A compiled posterior: ``torch.jit.script``'s ScriptModule (`TORCHSCRIPT`), or the eager
# `CompiledPosterior` itself (`EXPORTABLE`).
Compiled: TypeAlias = CompiledPosterior | torch.jit.ScriptModule
P = TypeVar("P", bound=CompiledPosterior)


class Finish(Protocol):
    """`Compiler.finish`: the assembled posterior, scripted or as it is."""

    def __call__(self, posterior: P, /) -> P | torch.jit.ScriptModule: ...


@dataclass(frozen=True)
class Compiler:
    """The two target-dependent steps of building a posterior.

    Attributes:
        name: ``"torchscript"`` or ``"exportable"``.
        terms: Compiles prior terms: ``terms(module, methods, settings)`` where ``methods``
            maps each method name to its example input.
        finish: Turns the assembled posterior into the compiled one (`Compiled`).
    """

    name: str
    terms: Callable[[nn.Module, dict[str, Tensor], Settings], PriorTermsModule]
    finish: Finish


def _trace_terms(
    module: nn.Module, methods: dict[str, Tensor], settings: Settings
) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), quiet_torchscript():
        # The kernels' Python branches (e.g. ``torch.equal(x1, x2)``) take the same side
        # for every q in each method, and the export gate checks other sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad(), settings():
            return torch.jit.trace_module(module, methods, check_trace=False)


def _script(posterior: CompiledPosterior) -> torch.jit.ScriptModule:
    with quiet_torchscript():
        return torch.jit.script(posterior)


def _eager(posterior: P) -> P:
    return posterior


class ReplayedTerms(nn.Module):
    """Eager prior terms whose ``torch.equal`` answers are those at the example points.

    Each method of ``module`` named in ``methods`` is run once on its example input while
    recording the answers of ``torch.equal``; calling the method here replays them in the
    same order, so that ``torch.export`` follows the branches a trace would freeze.
    """

    def __init__(self, module: nn.Module, methods: dict[str, Tensor], settings: Settings) -> None:
        super().__init__()
        self.terms = module
        # The model is held outside the terms' module tree (for tracing); registered here,
        # ``torch.export`` sees its parameters and buffers as the program's own.
        self.model = module.__dict__["_model"]
        self._settings = settings
        self._answers: dict[str, list[bool]] = {}
        for name, example in methods.items():
            answers: list[bool] = []
            with torch.no_grad(), settings(), _equal_recorded(answers):
                getattr(module, name)(example)
            self._answers[name] = answers

    def __getattr__(self, name: str):
        answers = self.__dict__.get("_answers", {})
        if name in answers:
            return lambda x: self._replay(name, x)
        return super().__getattr__(name)

    def _replay(self, name: str, x: Tensor) -> Tensor:
        with self._settings(), _equal_replayed(name, self._answers[name]), _exportable_distances():
            return getattr(self.terms, name)(x)


@contextlib.contextmanager
def _equal_recorded(answers: list[bool]) -> Iterator[None]:
    original = torch.equal

    def equal(a: Tensor, b: Tensor) -> bool:
        answer = original(a, b)
        answers.append(bool(answer))
        return answer

    with mock.patch.object(torch, "equal", equal):
        yield


@contextlib.contextmanager
def _equal_replayed(method: str, answers: list[bool]) -> Iterator[None]:
    calls = iter(answers)

    def equal(a: Tensor, b: Tensor) -> bool:
        try:
            return next(calls)
        except StopIteration:
            raise RuntimeError(
                f"prior terms {method!r}: expected {len(answers)} torch.equal calls (as at the "
                "example points), got more while exporting"
            ) from None

    with mock.patch.object(torch, "equal", equal):
        yield
    if next(calls, None) is not None:
        raise RuntimeError(
            f"prior terms {method!r}: expected {len(answers)} torch.equal "
            "calls (as at the example points), got fewer while exporting"
        )


# torch.cdist's default compute mode takes the matrix-product path when either side has
# more than this many rows (ATen's cdist_impl), and the direct differences otherwise.
_CDIST_DIRECT_ROWS = 25


_CDIST_WRITTEN_OUT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cdist_written_out", default=False
)


@contextlib.contextmanager
def cdist_written_out() -> Iterator[None]:
    """Inside, exportable prior terms write distances out op by op (for ONNX, which has
    no ``cdist``) instead of calling ``torch.cdist`` with an explicit mode."""
    token = _CDIST_WRITTEN_OUT.set(True)
    try:
        yield
    finally:
        _CDIST_WRITTEN_OUT.reset(token)


def _cdist_by_products(x1: Tensor, x2: Tensor) -> Tensor:
    return torch.cdist(x1, x2, compute_mode="use_mm_for_euclid_dist")


def _cdist_direct(x1: Tensor, x2: Tensor) -> Tensor:
    return torch.cdist(x1, x2, compute_mode="donot_use_mm_for_euclid_dist")


def _euclidean_by_products(x1: Tensor, x2: Tensor) -> Tensor:
    """`(b) x n x k` distances the way ``torch.cdist``'s matrix-product path computes them
    (ATen's ``_euclidean_dist``), op for op."""
    x1_norm = x1.pow(2).sum(-1, keepdim=True)
    x2_norm = x2.pow(2).sum(-1, keepdim=True)
    x1_ = torch.cat([x1.mul(-2), x1_norm, torch.ones_like(x1_norm)], dim=-1)
    x2_ = torch.cat([x2, torch.ones_like(x2_norm), x2_norm], dim=-1)
    return x1_.matmul(x2_.transpose(-2, -1)).clamp_min(0).sqrt()


def _euclidean_direct(x1: Tensor, x2: Tensor) -> Tensor:
    """`(b) x n x k` distances from each pair's squared differences (``torch.cdist``'s
    direct path, up to an ulp)."""
    return (x1.unsqueeze(-2) - x2.unsqueeze(-3)).pow(2).sum(-1).sqrt()


@contextlib.contextmanager
def _exportable_distances() -> Iterator[None]:
    """GPyTorch's distances (``sq_dist``, ``dist``), the same numbers, in exportable form.

    - ``sq_dist`` zeroes the diagonal where ``x1`` equals ``x2`` with
      ``diagonal().fill_(0)``, which torch.onnx's decompositions cannot make functional.
      Here the quadratic expansion is the one GPyTorch computes when ``x1`` equals ``x2``
      bit for bit (``x2 - adjustment`` is then ``x1 - adjustment``), and a select puts
      the zeros in.
    - ``dist`` calls ``torch.cdist`` in its default mode, whose algorithm depends on the
      number of rows (`_CDIST_DIRECT_ROWS`): ``torch.export`` would freeze it at the example
      size. Here the mode is explicit where the sizes decide it (the training side has
      more rows); otherwise both are computed and the one eager takes is selected from
      the number of rows at run time. ONNX has no ``cdist``: inside `cdist_written_out`
      the two algorithms are written out op by op (`_euclidean_by_products` is ATen's,
      op for op; `_euclidean_direct` rounds differently from ATen's vectorised kernel, by
      an ulp).
    """
    original_sq_dist, original_dist = gpytorch_kernel.sq_dist, gpytorch_kernel.dist

    def sq_dist(x1: Tensor, x2: Tensor, x1_eq_x2: bool = False) -> Tensor:
        res = original_sq_dist(x1, x2, x1_eq_x2=False)
        if not x1_eq_x2:
            return res
        eye = torch.eye(res.size(-1), dtype=torch.bool, device=res.device)
        return torch.where(eye, torch.zeros((), dtype=res.dtype, device=res.device), res)

    def dist(x1: Tensor, x2: Tensor, x1_eq_x2: bool = False) -> Tensor:
        if x1_eq_x2:
            return original_dist(x1, x2, x1_eq_x2=True)  # (through the sq_dist above)
        many = [statically_known_true(x.size(-2) > _CDIST_DIRECT_ROWS) for x in (x1, x2)]
        few = [statically_known_true(x.size(-2) <= _CDIST_DIRECT_ROWS) for x in (x1, x2)]
        by_products, direct = (
            (_euclidean_by_products, _euclidean_direct)
            if _CDIST_WRITTEN_OUT.get()
            else (_cdist_by_products, _cdist_direct)
        )
        if any(many):
            res = by_products(x1, x2)
        elif all(few):
            res = direct(x1, x2)
        else:
            # (a tensor that is True iff either side has more rows: no guard on the size)
            rows = torch.cat([torch.arange(x1.size(-2)), torch.arange(x2.size(-2))])
            res = torch.where(
                (rows == _CDIST_DIRECT_ROWS).any(), by_products(x1, x2), direct(x1, x2)
            )
        return res.clamp_min(1e-15)

    with mock.patch.multiple(gpytorch_kernel, sq_dist=sq_dist, dist=dist):
        yield


# The prior terms traced (``torch.jit.trace_module``) at example points, which freezes the
# kernels' data-dependent branches (GPyTorch's ``torch.equal(x1, x2)``); the algebra scripted.
TORCHSCRIPT = Compiler("torchscript", _trace_terms, _script)
# The prior terms eager, replaying the ``torch.equal`` answers at the same example points
# (``torch.export`` cannot evaluate them on symbolic points); the algebra plain Python.
EXPORTABLE = Compiler("exportable", ReplayedTerms, _eager)
