"""The exactness gate refuses a compiled posterior that differs from eager BoTorch."""

from __future__ import annotations

import pytest
import torch
from gpytorch.kernels import RBFKernel

from gp_serve.export import ExportGateError, export_model, trace_posterior
from gp_serve.export.gate import check, relative_error
from tests.export.conftest import make_model


class SizeDependentRBF(RBFKernel):
    """A (legal) custom kernel whose Python branch on the number of rows cannot be
    traced: the trace freezes the branch taken for the example input."""

    def forward(self, x1, x2, diag=False, **params):
        covar = super().forward(x1, x2, diag=diag, **params)
        return covar * 0.9 if x1.size(-2) > 5 else covar


def test_gate_names_the_worst_case_and_nothing_is_written(tmp_path):
    kernel = SizeDependentRBF(ard_num_dims=2, batch_shape=torch.Size([2])).double()
    model = make_model(30, 2, 2, covar_module=kernel)
    out = tmp_path / "model"
    with pytest.raises(
        ExportGateError,
        match=r"exactness gate failed: \w+ q=\d+ \w+ at points? \d+( and \d+)?, output 1 "
        r"differs from eager BoTorch by .* relative \(tolerance 1e-08\); nothing was written",
    ):
        export_model(model, out, allow_unlisted=True)
    assert not out.exists()


def test_gate_names_the_list_member_the_worst_error_comes_from(tmp_path):
    from botorch.models import ModelListGP, SingleTaskGP
    from gpytorch.kernels import ScaleKernel

    X = torch.rand(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    Y = torch.sin(5 * X).sum(-1, keepdim=True)
    wrong = ScaleKernel(SizeDependentRBF(ard_num_dims=2)).double()
    model = ModelListGP(SingleTaskGP(X, Y), SingleTaskGP(X, Y, covar_module=wrong)).eval()
    with pytest.raises(
        ExportGateError, match=r"\w+ q=7 \w+ at points? \d+( and \d+)?, model\.models\.1 differs"
    ):
        export_model(model, tmp_path / "model", allow_unlisted=True)


def test_gate_locates_the_worst_entry():
    from gp_serve.export.gate import describe, locate

    q, m = 2, 2
    expected = torch.eye(q * m, dtype=torch.float64)
    actual = expected.clone()
    actual[3, 0] = 0.5  # (row 3: output 1, point 1; column 0: output 0, point 0)
    where = locate(actual, expected, q, lambda t: f"output {t}", joint=True)
    assert where == "points 1 and 0, output 1 and output 0"
    actual = torch.zeros(q, m, dtype=torch.float64)
    actual[1, 0] = 1.0
    assert locate(actual, torch.zeros(q, m), q, lambda t: f"part {t}", joint=False) == (
        "point 1, part 0"
    )
    assert locate(actual * float("nan"), actual, q, str, joint=False) is None
    check = {"method": "mean_var", "q": 2, "quantity": "mean", "where": "point 1, part 0"}
    assert describe(check) == "mean_var q=2 mean at point 1, part 0"


def test_failed_gate_keeps_a_previous_artifact(tmp_path):
    out = tmp_path / "model"
    export_model(make_model(30, 2, 2), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    kernel = SizeDependentRBF(ard_num_dims=2, batch_shape=torch.Size([2])).double()
    with pytest.raises(ExportGateError):
        export_model(make_model(30, 2, 2, covar_module=kernel), out, allow_unlisted=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_gate_passes_the_module_it_compiled():
    model = make_model(25, 3, 2, yvar=True)
    bounds = torch.tensor([[-1.0, 3.0]] * 3, dtype=torch.float64)
    report = check(trace_posterior(model, torch.rand(4, 3, dtype=torch.float64)), model, bounds)
    assert (
        len(report.checks) == 5 * 2 * 5
    )  # q sizes x noise x (mean, covariance, variance; mean, variance)
    assert report.to_dict()["max_relative_error"] <= 1e-8


def test_gate_refuses_another_models_posterior():
    model = make_model(25, 2, 2, seed=1)
    other = trace_posterior(make_model(25, 2, 2, seed=2), torch.rand(4, 2, dtype=torch.float64))
    bounds = torch.tensor([[-1.0, 3.0]] * 2, dtype=torch.float64)
    with pytest.raises(ExportGateError, match="exactness gate failed"):
        check(other, model, bounds)


def test_relative_error():
    expected = torch.tensor([[2.0, -4.0]], dtype=torch.float64)
    assert relative_error(expected, expected) == 0.0
    assert relative_error(expected + torch.tensor([[0.0, 1e-3]]), expected) == pytest.approx(2.5e-4)
    assert relative_error(expected.T, expected) == float("inf")
    assert relative_error(expected * float("nan"), expected) == float("inf")


def test_export_model_names_must_match(tmp_path):
    with pytest.raises(ValueError, match="expected 2 input and 2 output names, got 3 and 2"):
        export_model(make_model(10, 2, 2), tmp_path, input_names=["a", "b", "c"])


def test_served_variance_floor_is_gpytorchs() -> None:
    """The handler clamps a full answer's variances where eager BoTorch clamps them."""
    import gpytorch

    from gp_serve.handler import gp_artifact

    assert gpytorch.settings.min_variance.value(torch.float64) == gp_artifact.MIN_VARIANCE
