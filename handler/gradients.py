"""Gradients of the served posterior's mean and variance with respect to the inputs, by
autograd through the TorchScript module (`moment_gradients`); the compiled formats (pt2,
ONNX) carry no autograd graph and are refused. See docs/serving.md, step 11.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# The formats whose posterior autograd can differentiate.
DIFFERENTIABLE_FORMATS = ("torchscript",)


def moment_gradients(
    method: Callable[[Tensor], tuple[Tensor, Tensor]], X: Tensor, chunk_rows: int
) -> tuple[Tensor, Tensor]:
    """``d mean / d X`` and ``d variance / d X`` of a marginal method (``mean_var`` or
    ``mean_var_noisy``), each `q x m x d`.

    A point's mean and variance depend on that point only, so the gradient of each output's
    sum over the points is every point's own gradient: one backward pass per output and
    moment, ``chunk_rows`` points at a time (memory `O(chunk x N)`, as ``mean_var``'s).

    Args:
        method: The posterior's ``mean_var`` or ``mean_var_noisy``.
        X: `q x d` float64 points (not an inference tensor).
        chunk_rows: Points per call.

    Returns:
        The mean's and the variance's gradients, `q x m x d` each (entry `[i, t, j]` is
        output `t`'s at point `i` with respect to input `j`).
    """
    means: list[Tensor] = []
    variances: list[Tensor] = []
    with torch.enable_grad():
        for chunk in X.split(chunk_rows):
            points = chunk.detach().clone().requires_grad_(True)
            mean, variance = method(points)
            for moment, out in ((mean, means), (variance, variances)):
                rows = [
                    torch.autograd.grad(moment[:, t].sum(), points, retain_graph=True)[0]
                    for t in range(moment.size(-1))
                ]
                out.append(torch.stack(rows, dim=1))
    return torch.cat(means).detach(), torch.cat(variances).detach()
