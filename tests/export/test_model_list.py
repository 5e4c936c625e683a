"""The model-list family: ``ModelListGP`` of single-output ``SingleTaskGP`` models, exact."""

from __future__ import annotations

import pytest
import torch
from botorch.models import ModelListGP, MultiTaskGP
from gpytorch.kernels import MaternKernel

from gp_serve.export import export_model, trace_posterior
from gp_serve.export.support import UnsupportedModelError
from gp_serve.handler import gp_artifact
from tests.export.conftest import assert_matches_eager, make_model


def make_list(sizes: list[int], d: int, **kwargs) -> ModelListGP:
    """One single-output model per size, each on its own training points."""
    models = [
        make_model(
            n,
            d,
            1,
            seed=10 + k,
            **{
                key: value[k] if isinstance(value, list) else value for key, value in kwargs.items()
            },
        )
        for k, n in enumerate(sizes)
    ]
    return ModelListGP(*models).eval()


def grid_points(d: int, q: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2000 + seed)
    return 5 * torch.rand(q, d, generator=generator, dtype=torch.float64) - 1.5


CASES = {
    "one output": dict(sizes=[14], d=2),
    "two outputs": dict(sizes=[10, 23], d=3),
    "three, mixed transforms": dict(
        sizes=[8, 15, 11], d=2, normalize=[True, False, True], standardize=[True, True, False]
    ),
    "known noise": dict(sizes=[12, 9], d=1, yvar=True),
    "matern": dict(
        sizes=[20, 16],
        d=4,
        covar_module=[MaternKernel(nu=0.5).double(), MaternKernel(nu=2.5).double()],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_list_matches_eager(case: str, saved_and_loaded) -> None:
    spec = dict(CASES[case])
    sizes, d = spec.pop("sizes"), spec.pop("d")
    model = make_list(sizes, d, **spec)
    module = saved_and_loaded(trace_posterior(model, grid_points(d, 3, 0)))
    for q in (1, 2, 7, 130):
        X = grid_points(d, q, q)
        assert_matches_eager(module, model, X)
        mean, covariance = module(X)
        assert mean.shape == (q, len(sizes)) and covariance.shape == (q * len(sizes),) * 2
        if len(sizes) > 1:  # independent outputs: the cross-output block is exactly zero
            assert torch.count_nonzero(covariance[:q, q:]) == 0


def test_export_records_the_family(tmp_path) -> None:
    model = make_list([10, 14], 2)
    meta = export_model(model, tmp_path / "m", output_names=["f", "g"])
    loaded = gp_artifact.load_metadata(tmp_path / "m").document
    assert loaded == meta
    assert (meta["model_class"], meta["correlated_outputs"]) == ("ModelListGP", False)
    assert meta["num_train"] == 24 and meta["num_outputs"] == 2
    raw = torch.cat(
        [part.input_transform.untransform(part.train_inputs[0]) for part in model.models]
    )
    assert meta["input_bounds"] == torch.stack([raw.min(0).values, raw.max(0).values], -1).tolist()
    assert meta["gate"]["max_relative_error"] <= 1e-8


def test_a_single_task_model_records_its_class(tmp_path) -> None:
    meta = export_model(make_model(10, 2, 2), tmp_path / "m")
    assert (meta["model_class"], meta["correlated_outputs"]) == ("SingleTaskGP", False)


def test_multi_output_parts_are_refused() -> None:
    model = ModelListGP(make_model(10, 2, 1), make_model(10, 2, 2))
    with pytest.raises(
        ValueError,
        match=r"^ModelListGP model 1: expected a single-output "
        r"SingleTaskGP, got 2 outputs \(eager BoTorch drops the covariance "
        r"between points for multi-output models in a list",
    ):
        trace_posterior(model, torch.rand(3, 2, dtype=torch.float64))


def test_other_parts_and_mixed_dimensions_are_refused() -> None:
    X = torch.cat([torch.rand(10, 2), torch.randint(0, 2, (10, 1))], -1).double()
    other = MultiTaskGP(X, torch.rand(10, 1, dtype=torch.float64), task_feature=-1)
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model\.models\.1: MultiTaskGP \(not in the single family's model classes: "
        r"SingleTaskGP, MixedSingleTaskGP, SingleTaskMultiFidelityGP, SACGP, LCEAGP",
    ):
        trace_posterior(ModelListGP(make_model(10, 2, 1), other), torch.rand(3, 2).double())
    with pytest.raises(
        ValueError,
        match=r"^ModelListGP: expected every model to take the same "
        r"d inputs, got d in \[2, 3\]$",
    ):
        trace_posterior(
            ModelListGP(make_model(10, 2, 1), make_model(10, 3, 1)), torch.rand(3, 2).double()
        )
