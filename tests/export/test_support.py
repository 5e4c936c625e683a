"""The support check (`export.support`): its table is what docs/export.md shows, every class
it lists is exported exactly by a zoo case, and refusals come before anything is traced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gp_serve.export import export_model, support, trace_posterior
from gp_serve.export.support import UnsupportedModelError
from tests.export import zoo
from tests.export.conftest import assert_matches_eager

DOCS = Path(__file__).resolve().parents[2] / "docs" / "export.md"
# Classes the table lists that this BoTorch has but builds only in models of the other
# supported BoTorch (each is exported by a zoo case there).
OTHER_VERSION_ONLY = {
    # (BoTorch 0.18's HadamardGaussianLikelihood holds it; on 0.12 no zoo model does)
    "MultitaskHomoskedasticNoise": (0, 12),
}


def test_docs_show_the_support_table() -> None:
    text = DOCS.read_text()
    start = text.index("<!-- support table:")
    start = text.index("-->\n", start) + len("-->\n")
    end = text.index("<!-- end of support table -->")
    assert text[start:end] == support.markdown(), (
        "docs/export.md's support table differs from export/support.py: regenerate it (the "
        "comment above the table says how)"
    )


def test_every_listed_class_is_exported_exactly_by_a_zoo_case() -> None:
    used: set[type] = set()
    for case in zoo.CASES:
        if not case.available or case.refusal is not None:
            continue
        model = case.build()
        members = getattr(model, "models", [model])
        used |= {type(model)} | {type(member) for member in members}
        for member in members:
            for _, part, _, _ in support._parts(member, "model", support.row("single")):
                used.add(type(part))
    missing = sorted(
        {
            path
            for row in support.TABLE
            for paths in (
                row.models,
                row.likelihoods,
                row.noises,
                row.means,
                row.kernels,
                row.input_transforms,
                row.outcome_transforms,
            )
            for path in paths
            if (cls := support.resolve(path)) is not None
            and cls not in used
            and OTHER_VERSION_ONLY.get(cls.__name__) != zoo.BOTORCH_MINOR
            and not (cls.__name__ == "SaasFullyBayesianSingleTaskGP" and zoo.saas_extra())
        }
    )
    assert not missing, f"listed but exported by no zoo case: {missing}"


def test_an_unlisted_kernel_goes_to_the_gate_when_allowed() -> None:
    model = zoo.own_kernel()
    X = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model\.covar_module\.base_kernel: ScaledMatern \(not in the single family's "
        r"kernels: RBFKernel, MaternKernel, RQKernel, ",
    ):
        trace_posterior(model, X)
    module = trace_posterior(model, X, allow_unlisted=True)
    assert_matches_eager(module, model, torch.rand(9, 3, dtype=torch.float64))


def test_a_refused_part_stays_refused_when_unlisted_parts_are_allowed(tmp_path) -> None:
    out = tmp_path / "model"
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model\.input_transform\.tf2: InputPerturbation \(one-to-many input transforms "
        r"are not supported: the served posterior is per input point\)$",
    ):
        export_model(zoo.chained_perturbation(), out, allow_unlisted=True)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # (nothing staged either)


def test_the_refusal_is_both_errors_the_export_raised_before() -> None:
    with pytest.raises(TypeError):
        trace_posterior(zoo.variational(), torch.rand(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError):
        trace_posterior(zoo.log_outcome(), torch.rand(3, 3, dtype=torch.float64))


def test_only_the_full_path_diagonal_kernels_are_evaluated_per_point() -> None:
    assert support.full_path_diagonal(zoo.ibnn().covar_module)
    assert not support.full_path_diagonal(zoo.single().covar_module)
