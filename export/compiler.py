"""How a family's posterior is compiled: for TorchScript, or for ``torch.export``.

Every family builds its posterior the same way: prior terms (the model's own input
transform, mean and kernel modules, evaluated on the test points) at the leaves, and
plain tensor algebra above them. Only the leaves and the last step depend on the target:

- `TORCHSCRIPT`: the prior terms are traced (``torch.jit.trace_module``) at example points
  and the algebra is scripted. The trace freezes the kernels' data-dependent Python
  branches (GPyTorch's ``torch.equal(x1, x2)`` shortcut) at the example points.
- `EXPORTABLE`: the prior terms stay eager modules and the algebra stays Python, ready for
  ``torch.export`` (`export.portable`). ``torch.export`` cannot evaluate ``torch.equal`` on
  symbolic points, so the terms record each method's ``torch.equal`` answers at the same
  example points and replay them while exporting: the same branches the trace freezes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ContextManager

import gpytorch.kernels.kernel as gpytorch_kernel
import torch
from torch import Tensor, nn

from export.torchscript import quiet_torchscript

# The GPyTorch settings a family evaluates its prior terms under (e.g. ``trace_mode``).
Settings = Callable[[], ContextManager]


@dataclass(frozen=True)
class Compiler:
    """The two target-dependent steps of building a posterior.

    Attributes:
        name: ``"torchscript"`` or ``"exportable"``.
        terms: Compiles prior terms: ``terms(module, methods, settings)`` where ``methods``
            maps each method name to its example input.
        finish: Turns the assembled posterior into the compiled one.
    """

    name: str
    terms: Callable[[nn.Module, dict[str, Tensor], Settings], nn.Module]
    finish: Callable[[nn.Module], nn.Module]


def _trace_terms(module: nn.Module, methods: dict[str, Tensor], settings: Settings
                 ) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), quiet_torchscript():
        # The kernels' Python branches (e.g. ``torch.equal(x1, x2)``) take the same side
        # for every q in each method, and the export gate checks other sizes.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad(), settings():
            return torch.jit.trace_module(module, methods, check_trace=False)


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with quiet_torchscript():
        return torch.jit.script(module)


class ReplayedTerms(nn.Module):
    """Eager prior terms whose ``torch.equal`` answers are those at the example points.

    Each method of ``module`` named in ``methods`` is run once on its example input while
    recording the answers of ``torch.equal``; calling the method here replays them in the
    same order, so that ``torch.export`` follows the branches a trace would freeze.
    """

    def __init__(self, module: nn.Module, methods: dict[str, Tensor], settings: Settings
                 ) -> None:
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
        with self._settings(), _equal_replayed(name, self._answers[name]), _functional_sq_dist():
            return getattr(self.terms, name)(x)


@contextlib.contextmanager
def _equal_recorded(answers: list[bool]) -> Iterator[None]:
    original = torch.equal

    def equal(a: Tensor, b: Tensor) -> bool:
        answer = original(a, b)
        answers.append(bool(answer))
        return answer

    torch.equal = equal
    try:
        yield
    finally:
        torch.equal = original


@contextlib.contextmanager
def _equal_replayed(method: str, answers: list[bool]) -> Iterator[None]:
    original = torch.equal
    calls = iter(answers)

    def equal(a: Tensor, b: Tensor) -> bool:
        try:
            return next(calls)
        except StopIteration:
            raise RuntimeError(
                f"prior terms {method!r}: expected {len(answers)} torch.equal calls (as at the "
                "example points), got more while exporting"
            ) from None

    torch.equal = equal
    try:
        yield
    finally:
        torch.equal = original
    if next(calls, None) is not None:
        raise RuntimeError(f"prior terms {method!r}: expected {len(answers)} torch.equal "
                           "calls (as at the example points), got fewer while exporting")


@contextlib.contextmanager
def _functional_sq_dist() -> Iterator[None]:
    """GPyTorch's ``sq_dist`` without its in-place write to a diagonal view.

    Where ``x1`` equals ``x2`` it zeroes the diagonal with ``diagonal().fill_(0)``, which
    torch.onnx's decompositions cannot make functional. The same numbers: the quadratic
    expansion is the one GPyTorch computes when ``x1`` equals ``x2`` bit for bit (then
    ``x2 - adjustment`` is ``x1 - adjustment``), and a select puts the zeros in.
    """
    original = gpytorch_kernel.sq_dist

    def sq_dist(x1: Tensor, x2: Tensor, x1_eq_x2: bool = False) -> Tensor:
        res = original(x1, x2, x1_eq_x2=False)
        if not x1_eq_x2:
            return res
        eye = torch.eye(res.size(-1), dtype=torch.bool, device=res.device)
        return torch.where(eye, torch.zeros((), dtype=res.dtype, device=res.device), res)

    gpytorch_kernel.sq_dist = sq_dist
    try:
        yield
    finally:
        gpytorch_kernel.sq_dist = original


TORCHSCRIPT = Compiler("torchscript", _trace_terms, _script)
EXPORTABLE = Compiler("exportable", ReplayedTerms, lambda module: module)
