"""trace_posterior equals eager BoTorch, for any q, after a save/load round trip."""

from __future__ import annotations

import pytest
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Log
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel

from gp_serve.export import export_model, trace_posterior
from gp_serve.export.gate import relative_error
from gp_serve.export.support import UnsupportedModelError
from gp_serve.handler import gp_artifact
from tests.export.conftest import assert_matches_eager, make_model, points

SIZES = (1, 2, 7, 130)

GRID = [
    # n, d, m, options
    (2, 1, 1, {}),
    (12, 1, 2, {"yvar": True}),
    (30, 2, 2, {}),
    (30, 2, 2, {"yvar": True}),
    (25, 3, 1, {"normalize": False}),
    (15, 2, 1, {"yvar": True}),
    (40, 3, 3, {"standardize": False}),
    (40, 4, 2, {"normalize": False, "standardize": False, "yvar": True}),
    (60, 5, 4, {}),
    (150, 2, 2, {"yvar": True}),
    (200, 6, 1, {}),
]


@pytest.mark.parametrize(("n", "d", "m", "options"), GRID)
def test_matches_eager_over_grid(n, d, m, options, saved_and_loaded):
    model = make_model(n, d, m, seed=n + d + m, **options)
    module = saved_and_loaded(trace_posterior(model, points(model, 5, 0)))
    for q in SIZES:
        assert_matches_eager(module, model, points(model, q, q))


@pytest.mark.parametrize(
    "kernel",
    [
        ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=3, batch_shape=torch.Size([2]))),
        ScaleKernel(MaternKernel(nu=0.5, ard_num_dims=3, batch_shape=torch.Size([2]))),
        RBFKernel(ard_num_dims=3, batch_shape=torch.Size([2])),
    ],
    ids=["matern52", "matern12", "rbf"],
)
def test_matches_eager_with_other_kernels(kernel, saved_and_loaded):
    model = make_model(35, 3, 2, covar_module=kernel.double(), seed=7)
    module = saved_and_loaded(trace_posterior(model, points(model, 3, 0)))
    for q in SIZES:
        assert_matches_eager(module, model, points(model, q, q))


@pytest.mark.parametrize("d", [1, 4])
def test_single_output_matern12_variance(d, saved_and_loaded):
    """One output, Matern-1/2, not scaled: on GPyTorch 1.13 the variance at q=7 used to
    differ by 2.6e-8 (d=4) when recomputed in blocks instead of from the joint rows."""
    model = make_model(20, d, 1, covar_module=MaternKernel(nu=0.5).double(), seed=10)
    module = saved_and_loaded(trace_posterior(model, points(model, 3, 0)))
    for q in (*SIZES, 7, 64, 257):
        assert_matches_eager(module, model, points(model, q, q + 1))


def test_fitted_default_model_matches_eager(saved_and_loaded):
    from gp_serve.export.data import default_data
    from gp_serve.export.fit import fit_model

    model = fit_model(default_data())
    module = saved_and_loaded(trace_posterior(model, torch.rand(4, 2, dtype=torch.float64)))
    for q in (1, 2, 7, 300):
        assert_matches_eager(module, model, torch.rand(q, 2, dtype=torch.float64))


def test_covariance_is_output_major_block_diagonal(saved_and_loaded):
    model = make_model(20, 2, 3, seed=3)
    module = saved_and_loaded(trace_posterior(model, points(model, 4, 0)))
    q, m = 6, 3
    mean, cov = module(points(model, q, 1))
    _, var = module.mean_var(points(model, q, 1))
    assert mean.shape == (q, m) and cov.shape == (q * m, q * m)
    blocks = cov.reshape(m, q, m, q)
    for t in range(m):
        for s in range(m):
            if s != t:
                assert torch.count_nonzero(blocks[t, :, s, :]) == 0
        # output t, point i sits at index t*q + i
        assert relative_error(torch.diagonal(blocks[t, :, t, :]), var[:, t]) <= 1e-8


def test_mean_var_scales_past_eager_limits(saved_and_loaded):
    """10^5 points in one call: rows equal the same points scored in small batches."""
    model = make_model(50, 2, 2, seed=4)
    module = saved_and_loaded(trace_posterior(model, points(model, 5, 0)))
    X = points(model, 100_000, 2)
    mean, var = module.mean_var(X)
    assert mean.shape == var.shape == (100_000, 2)
    for rows in (slice(0, 3), slice(54_321, 54_400), slice(99_990, 100_000)):
        assert_matches_eager(module, model, X[rows])
        small_mean, small_var = module.mean_var(X[rows])
        assert relative_error(mean[rows], small_mean) <= 1e-12
        assert relative_error(var[rows], small_var) <= 1e-12


@pytest.mark.parametrize("q", [4096 - 40, 4096 - 39])
def test_both_sides_of_the_eager_kernel_size(q, saved_and_loaded):
    """GPyTorch switches how it evaluates the test covariance at N + q = 4096."""
    model = make_model(40, 2, 1, seed=5)
    module = saved_and_loaded(trace_posterior(model, points(model, 5, 0)))
    assert_matches_eager(module, model, points(model, q, 3))


@pytest.mark.slow
@pytest.mark.parametrize("n", [4200, pytest.param(5000, marks=pytest.mark.sweep)])
def test_above_4096_training_points_export_and_save(tmp_path, n: int):
    """Above 4096 points a plain trace keeps a Python autograd Function and cannot be
    saved; here N > 4096 exports through the gate, saves, loads and matches eager."""
    model = make_model(n, 2, 2, seed=6)
    meta = export_model(model, tmp_path / "big")
    assert meta["num_train"] == n and meta["gate"]["max_relative_error"] <= 1e-8
    module = torch.jit.load(gp_artifact.check_posterior(tmp_path / "big"))
    for q in (1, 7, 120):
        assert_matches_eager(module, model, points(model, q, q))


def test_model_is_left_untouched():
    model = make_model(20, 2, 2, seed=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    trace_posterior(model, points(model, 3, 0))
    assert model.prediction_strategy is None
    assert grads == [p.requires_grad for p in model.parameters()]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_rejects_float32_model():
    model = make_model(10, 2, 1).float()
    with pytest.raises(ValueError, match="expected a float64 model, got torch.float32"):
        trace_posterior(model, torch.rand(3, 2))


def test_rejects_unsupported_outcome_transform():
    X = torch.rand(10, 2, dtype=torch.float64)
    model = SingleTaskGP(X, X.sum(-1, keepdim=True).exp(), outcome_transform=Log()).eval()
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model\.outcome_transform: Log \(nonlinear outcome transforms are not "
        r"supported: ",
    ):
        trace_posterior(model, torch.rand(3, 2, dtype=torch.float64))


def test_rejects_example_of_wrong_width():
    model = make_model(10, 3, 2)
    with pytest.raises(
        ValueError, match=r"expected example_X of shape q x 3 with q >= 1, got \(4, 2\)"
    ):
        trace_posterior(model, torch.rand(4, 2, dtype=torch.float64))


@pytest.mark.parametrize("example", ["one point", "the training inputs"])
def test_any_example_input_traces_a_general_posterior(example, saved_and_loaded):
    model = make_model(20, 2, 2, normalize=False, seed=9)
    X = model.train_inputs[0][0][:1] if example == "one point" else model.train_inputs[0][0]
    module = saved_and_loaded(trace_posterior(model, X.clone()))
    for q in (1, 20, 33):
        assert_matches_eager(module, model, points(model, q, q))


def test_rejects_other_model_types():
    from botorch.models import SingleTaskVariationalGP

    model = SingleTaskVariationalGP(torch.rand(10, 2).double(), torch.rand(10, 1).double())
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model: SingleTaskVariationalGP \(approximate \(variational\) GPs are not "
        r"supported: only exact GP posteriors are served\)$",
    ):
        trace_posterior(model, torch.rand(3, 2, dtype=torch.float64))


def test_kernel_with_a_cached_buffer_exports_exactly():
    """``LCEAKernel`` keeps a buffer computed from its parameters (not a graph leaf, which
    ``deepcopy`` refuses): the frozen copy holds it detached (BoTorch's
    test/models/test_contextual.py builds this model)."""
    from botorch.models.contextual import LCEAGP

    generator = torch.Generator().manual_seed(0)
    X = torch.rand(14, 4, generator=generator, dtype=torch.float64)
    Y = torch.sin(3 * X.sum(-1, keepdim=True))
    model = LCEAGP(X, Y, train_Yvar=None, decomposition={"a": [0, 1], "b": [2, 3]}).eval()
    assert any(b.grad_fn is not None for b in model.buffers())  # (what deepcopy refused)
    module = trace_posterior(model, points(model, 3, 0))
    for q in (1, 4, 30):
        assert_matches_eager(module, model, points(model, q, q))
