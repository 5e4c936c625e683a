"""The model zoo tier: every configuration of `tests/export/zoo.py` exports exactly or is
refused by the support check with its message, on the BoTorch of the venv that runs it
(``make test`` runs tests/export on BoTorch 0.18.1 and 0.12.0)."""

from __future__ import annotations

import re

import pytest
import torch

from gp_serve.export.families import family_of, trace_posterior
from gp_serve.export.support import UnsupportedModelError
from tests.export.conftest import assert_matches_eager
from tests.export.zoo import BOTORCH_MINOR, CASES, Case

SIZES = (1, 3, 17)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_zoo_model_is_exact_or_refused_by_the_support_check(case: Case, saved_and_loaded) -> None:
    if case.missing is not None:
        pytest.skip(f"{case.name}: {case.missing}")
    model = case.build()
    if case.refusal is not None:
        with pytest.raises(UnsupportedModelError) as refused:
            trace_posterior(model, torch.rand(3, 3, dtype=torch.float64))
        assert re.fullmatch(case.refusal, str(refused.value)), str(refused.value)
        return
    d = family_of(model).training_inputs(model)[0].size(-1)
    generator = torch.Generator().manual_seed(7)
    module = saved_and_loaded(trace_posterior(model, torch.rand(3, d, dtype=torch.float64)))
    for q in SIZES:
        # (in the unit cube, where every zoo model's data are: fidelity kernels are not
        # defined beyond it)
        X = torch.rand(q, d, generator=generator, dtype=torch.float64)
        assert_matches_eager(module, model, X)


def test_the_zoo_covers_at_least_25_configurations_on_this_botorch() -> None:
    available = [case for case in CASES if case.minimum <= BOTORCH_MINOR <= case.maximum]
    assert len(available) >= 25, [case.name for case in available]
    assert sum(case.refusal is None for case in available) >= 25
