"""The multi-task family: ``MultiTaskGP`` (ICM), exact, with non-zero cross-task covariance."""

from __future__ import annotations

import pytest
import torch
from botorch.models import MultiTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Log

from gp_serve.export import export_model, trace_posterior
from gp_serve.export.support import UnsupportedModelError
from gp_serve.handler import gp_artifact
from tests.export.conftest import assert_matches_eager, perturbed


def make_multitask(
    n: int, d: int, tasks: int, *, task_feature: int = -1, seed: int = 0, **kwargs
) -> MultiTaskGP:
    """A float64 MultiTaskGP, tasks observed at different points, randomised hyperparameters."""
    generator = torch.Generator().manual_seed(seed)
    X = 4 * torch.rand(n, d, generator=generator, dtype=torch.float64) - 1
    t = torch.randint(0, tasks, (n, 1), generator=generator).double()
    Y = torch.sin(X.sum(-1, keepdim=True) * (1 + t)) * (1 + 3 * t)
    Y = Y + 0.05 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    train_X = torch.cat([X, t], -1) if task_feature == -1 else torch.cat([t, X], -1)
    if kwargs.pop("normalize", False):
        columns = list(range(d)) if task_feature == -1 else list(range(1, d + 1))
        kwargs["input_transform"] = Normalize(d=d + 1, indices=columns)
    if kwargs.pop("yvar", False):
        kwargs["train_Yvar"] = 1e-3 * (
            1 + torch.rand(n, 1, generator=generator, dtype=torch.float64)
        )
    return perturbed(MultiTaskGP(train_X, Y, task_feature=task_feature, **kwargs), generator)


def grid_points(d: int, q: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3000 + seed)
    return 5 * torch.rand(q, d, generator=generator, dtype=torch.float64) - 1.5


CASES = {
    "two tasks": dict(n=20, d=2, tasks=2),
    "three tasks, task first": dict(n=30, d=3, tasks=3, task_feature=0),
    "normalized inputs": dict(n=25, d=2, tasks=3, normalize=True),
    "known noise": dict(n=18, d=1, tasks=2, yvar=True),
    "output task subset, reordered": dict(n=30, d=2, tasks=3, output_tasks=[2, 0]),
    "one output task": dict(n=16, d=2, tasks=2, output_tasks=[1]),
    "no outcome transform": dict(n=20, d=2, tasks=2, outcome_transform=None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_multitask_matches_eager(case: str, saved_and_loaded) -> None:
    spec = dict(CASES[case])
    d = spec["d"]
    model = make_multitask(seed=len(case), **spec)
    module = saved_and_loaded(trace_posterior(model, grid_points(d, 3, 0)))
    m = model.num_outputs
    for q in (1, 2, 7, 130):
        X = grid_points(d, q, q)
        assert_matches_eager(module, model, X)
        mean, covariance = module(X)
        assert mean.shape == (q, m) and covariance.shape == (q * m, q * m)
        if m > 1:  # correlated outputs: the cross-task block carries information
            assert torch.count_nonzero(covariance[:q, q:]) > 0


def test_beyond_the_eager_kernel_size(saved_and_loaded) -> None:
    """q*m + N > 4096: GPyTorch's lazy regime (on 1.13: past the joint-kernel rows)."""
    model = make_multitask(20, 2, 3, seed=4)
    module = saved_and_loaded(trace_posterior(model, grid_points(2, 3, 0)))
    assert_matches_eager(module, model, grid_points(2, 1400, 1))


def test_export_records_correlated_outputs(tmp_path) -> None:
    model = make_multitask(20, 2, 3, seed=5)
    meta = export_model(model, tmp_path / "m", output_names=["a", "b", "c"])
    assert gp_artifact.load_metadata(tmp_path / "m").document == meta
    assert (meta["model_class"], meta["correlated_outputs"]) == ("MultiTaskGP", True)
    assert meta["num_inputs"] == 2 and meta["num_outputs"] == 3 and meta["num_train"] == 20
    raw = model.train_inputs[0][:, :2]
    assert meta["input_bounds"] == torch.stack([raw.min(0).values, raw.max(0).values], -1).tolist()


def test_nonlinear_outcome_transform_is_refused() -> None:
    model = make_multitask(20, 2, 2, outcome_transform=Log())
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model\.outcome_transform: Log \(nonlinear outcome transforms are not "
        r"supported: eager's posterior is then not the Gaussian whose mean and covariance "
        r"are served\)$",
    ):
        trace_posterior(model, grid_points(2, 3, 0))


def test_example_with_the_task_column_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^expected example_X of shape q x 2 \(no task "
        r"column\), got \(3, 3\)$",
    ):
        trace_posterior(make_multitask(20, 2, 2), torch.rand(3, 3, dtype=torch.float64))
