"""The single-task family: the exact posterior of a ``SingleTaskGP`` (and its subclasses).

The model's own input transform, mean and kernel are traced (`export.prior_terms`), its
training-data caches taken from eager GPyTorch, and the rest scripted by the engine's
`ExactPosterior` (`export.engine`). See docs/export.md, "Design: the corrected posterior".
"""

from __future__ import annotations

import torch
from botorch.models import SingleTaskGP
from torch import Tensor

from gp_serve.export import engine
from gp_serve.export.compiler import TORCHSCRIPT, Compiled, Compiler
from gp_serve.export.prior_terms import trace_prior_terms


def trace_single_task(
    model: SingleTaskGP, example_X: Tensor, compiler: Compiler = TORCHSCRIPT
) -> Compiled:
    """Compile the posterior of a fitted ``SingleTaskGP`` into TorchScript.

    The model is not modified: a detached copy is traced.

    Args:
        model: A fitted ``SingleTaskGP`` with ``m >= 1`` outputs, float64, with or
            without ``train_Yvar``, any input transform, and a ``Standardize``
            outcome transform or none.
        example_X: A `q x d` example input (raw, untransformed), any q >= 1;
            its values do not matter.
        compiler: `export.compiler.TORCHSCRIPT`, or ``EXPORTABLE`` for an eager module
            that ``torch.export`` can export (`export.portable`).

    Returns:
        A ScriptModule (or the eager module) with ``forward``/``forward_noisy`` (mean `q x m`,
        output-major covariance `(q*m) x (q*m)`) and ``mean_var``/
        ``mean_var_noisy`` (mean and variance, `q x m`), for any `q x d` input.

    Raises:
        TypeError: If ``model`` is not a ``SingleTaskGP``.
        ValueError: If it is not float64, has batch dimensions, an unsupported likelihood
            or outcome transform, or ``example_X`` is not `q x d`.
    """
    if not isinstance(model, SingleTaskGP):
        raise TypeError(f"expected a SingleTaskGP, got {type(model).__name__}")
    engine.check_model(model, example_X, output_batch=model.num_outputs > 1)
    frozen = engine.frozen_copy(model)
    example_X = example_X.detach().to(torch.float64)
    y_mean, y_std = engine.outcome_scale(frozen)
    points = engine.tracing_points(example_X, frozen.train_inputs[0].size(-2))
    posterior = engine.exact_posterior(
        frozen,
        trace_prior_terms(frozen, points, compiler=compiler),
        example_X,
        noise=engine.observation_noise(frozen),
        y_mean=y_mean,
        y_std=y_std,
    )
    return compiler.finish(posterior)
