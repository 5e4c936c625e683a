"""What the export supports, as one table, and the check that walks a model against it.

Before anything is traced, `check` walks the fitted model (its class, likelihood and noise
model, mean and kernel trees, input and outcome transforms, batch shape) and refuses any part
outside its family's row of `TABLE` with one message that names the part, its path in the
model and why: for example ``model.input_transform.tf2: InputPerturbation (one-to-many
input transforms are not supported: the served posterior is per input point)``. Parts are
matched by exact class: a subclass may compute something else, so it is refused unless it is
listed too (or ``allow_unlisted`` hands the decision to the exactness gate).

The table is the documentation: docs/export.md, "What is supported", is `markdown` of it,
checked by a test (the comment above the table there says how to print it). Value checks that are
not about a part's class (float64, the shape of ``example_X``, ``Standardize``'s ``m`` for a
multi-task model) stay with the families (`export.engine.check_model`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from botorch.models.model import Model
from botorch.models.transforms.input import ChainedInputTransform, InputTransform
from botorch.models.transforms.outcome import OutcomeTransform
from gpytorch.kernels import Kernel
from gpytorch.means import Mean
from torch import nn


class UnsupportedModelError(TypeError, ValueError):
    """A part of the model is outside the support table.

    A ``TypeError`` (an unsupported class) and a ``ValueError`` (an unsupported part), as
    the export raised before this check existed, so that callers catching either still do.
    """


# Classes by import path: some exist only in some BoTorch or GPyTorch versions (absent ones
# are skipped), and the table renders the names without importing anything optional.
_BOTORCH = "botorch.models"
_KERNELS = "gpytorch.kernels"
_BOTORCH_KERNELS = "botorch.models.kernels"

DATA_KERNELS = (
    f"{_KERNELS}:RBFKernel",
    f"{_KERNELS}:MaternKernel",
    f"{_KERNELS}:RQKernel",
    f"{_KERNELS}:PeriodicKernel",
    f"{_KERNELS}:LinearKernel",
    f"{_KERNELS}:PolynomialKernel",
    f"{_KERNELS}:ScaleKernel",
    f"{_KERNELS}:AdditiveKernel",
    f"{_KERNELS}:ProductKernel",
    f"{_BOTORCH_KERNELS}.categorical:CategoricalKernel",
    f"{_BOTORCH_KERNELS}.exponential_decay:ExponentialDecayKernel",
    f"{_BOTORCH_KERNELS}.downsampling:DownsamplingKernel",
    f"{_BOTORCH_KERNELS}.linear_truncated_fidelity:LinearTruncatedFidelityKernel",
    f"{_BOTORCH_KERNELS}.contextual_lcea:LCEAKernel",
    f"{_BOTORCH_KERNELS}.contextual_sac:SACKernel",
    f"{_BOTORCH_KERNELS}.orthogonal_additive_kernel:OrthogonalAdditiveKernel",
    f"{_BOTORCH_KERNELS}.infinite_width_bnn:InfiniteWidthBNNKernel",
)
TASK_KERNELS = (
    f"{_KERNELS}:IndexKernel",
    f"{_BOTORCH_KERNELS}.positive_index:PositiveIndexKernel",
)
MEANS = (
    "gpytorch.means:ConstantMean",
    "gpytorch.means:ZeroMean",
    "gpytorch.means:LinearMean",
)
INPUT_TRANSFORMS = (
    "botorch.models.transforms.input:Normalize",
    "botorch.models.transforms.input:InputStandardize",
    "botorch.models.transforms.input:Warp",
    "botorch.models.transforms.input:ChainedInputTransform",
)
STANDARDIZE = ("botorch.models.transforms.outcome:Standardize",)
GAUSSIAN_LIKELIHOODS = (
    "gpytorch.likelihoods:GaussianLikelihood",
    "gpytorch.likelihoods:FixedNoiseGaussianLikelihood",
)
NOISES = (
    "gpytorch.likelihoods.noise_models:HomoskedasticNoise",
    "gpytorch.likelihoods.noise_models:FixedGaussianNoise",
)

# Kernels whose ``diag=True`` path computes the diagonal differently from the full kernel
# (eager's variance is the full kernel's diagonal): the served variance evaluates the full
# kernel one point at a time instead (`export.prior_terms.PriorTerms.diag`).
FULL_PATH_DIAGONAL = (f"{_BOTORCH_KERNELS}.infinite_width_bnn:InfiniteWidthBNNKernel",)

_ONE_TO_MANY = (
    "one-to-many input transforms are not supported: the served posterior is per input point"
)
_NONLINEAR_OUTCOME = (
    "nonlinear outcome transforms are not supported: eager's posterior is then not the "
    "Gaussian whose mean and covariance are served"
)

# Parts refused with their own reason (matched by exact class, before the table).
REFUSED: dict[str, str] = {
    "botorch.models.transforms.input:InputPerturbation": _ONE_TO_MANY,
    "botorch.models.transforms.input:AppendFeatures": _ONE_TO_MANY,
    "botorch.models.transforms.outcome:Log": _NONLINEAR_OUTCOME,
    "botorch.models.transforms.outcome:Power": _NONLINEAR_OUTCOME,
    "botorch.models.transforms.outcome:Bilog": _NONLINEAR_OUTCOME,
    "botorch.models.transforms.outcome:ChainedOutcomeTransform": (
        "chained outcome transforms are not supported: use a single Standardize"
    ),
    f"{_BOTORCH}.higher_order_gp:HigherOrderGP": (
        "higher-order GPs are not supported: their outputs are a tensor per point, not m outputs"
    ),
    f"{_BOTORCH}.approximate_gp:SingleTaskVariationalGP": (
        "approximate (variational) GPs are not supported: only exact GP posteriors are served"
    ),
    f"{_BOTORCH}.heterogeneous_mtgp:HeterogeneousMTGP": (
        "heterogeneous multi-task GPs are not supported: their tasks have different input "
        "features, and BoTorch's posterior answers only the target task"
    ),
    f"{_BOTORCH}.gp_regression:HeteroskedasticSingleTaskGP": (
        "heteroskedastic GPs are not supported: their noise is a second GP's prediction"
    ),
    f"{_BOTORCH}.robust_relevance_pursuit_model:RobustRelevancePursuitSingleTaskGP": (
        "its likelihood is not supported: see model.likelihood"
    ),
    f"{_BOTORCH}.likelihoods.sparse_outlier_noise:SparseOutlierGaussianLikelihood": (
        "the robust relevance-pursuit likelihood is not supported: its outlier noise is "
        "fitted per training point and has no value at a new point"
    ),
    f"{_KERNELS}:InducingPointKernel": (
        "inducing-point (SGPR) kernels are not supported: their prediction strategy is not "
        "the exact GP's"
    ),
    f"{_KERNELS}:GridInterpolationKernel": (
        "interpolation (KISS-GP) kernels are not supported: their prediction strategy is "
        "not the exact GP's"
    ),
    f"{_BOTORCH}.fully_bayesian_multitask:SaasFullyBayesianMultiTaskGP": (
        "fully Bayesian multi-task GPs are not supported yet: only the single-task SAAS "
        "mixture is served"
    ),
}
# (RobustRelevancePursuitSingleTaskGP is a SingleTaskGP whose only difference is its
# likelihood: it is let through to the likelihood's own refusal, which says more)
_DEFER_TO_PARTS = (f"{_BOTORCH}.robust_relevance_pursuit_model:RobustRelevancePursuitSingleTaskGP",)


@dataclass(frozen=True)
class Support:
    """One family's row of the support table: the classes allowed at each place.

    Attributes:
        family: The family's name (`export.families.Family.name`).
        models: Model classes (exact).
        likelihoods: Likelihood classes (exact).
        noises: The likelihood's noise model (``likelihood.noise_covar``) classes.
        means: Mean module classes (the whole tree).
        kernels: Kernel classes (the whole tree).
        input_transforms: Input transform classes (a chain's members too).
        outcome_transforms: Outcome transform classes (none is always allowed).
        batch: What the model's batch shape may be: ``"none"`` or ``"MCMC samples"``.
        parts: For a list of models: the family each member must satisfy.
        notes: What the table cannot say (value checks, how outputs are served).
    """

    family: str
    models: tuple[str, ...]
    likelihoods: tuple[str, ...] = ()
    noises: tuple[str, ...] = ()
    means: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()
    input_transforms: tuple[str, ...] = ()
    outcome_transforms: tuple[str, ...] = ()
    batch: str = "none"
    parts: str | None = None
    notes: str = ""


_SINGLE_MODELS = (
    f"{_BOTORCH}:SingleTaskGP",
    f"{_BOTORCH}:MixedSingleTaskGP",
    f"{_BOTORCH}:SingleTaskMultiFidelityGP",
    f"{_BOTORCH}.contextual:SACGP",
    f"{_BOTORCH}.contextual:LCEAGP",
)

TABLE: tuple[Support, ...] = (
    Support(
        family="single",
        models=_SINGLE_MODELS,
        likelihoods=GAUSSIAN_LIKELIHOODS,
        noises=NOISES,
        means=MEANS,
        kernels=DATA_KERNELS,
        input_transforms=INPUT_TRANSFORMS,
        outcome_transforms=STANDARDIZE,
        notes="float64; m >= 1 outputs (BoTorch's batched multi-output layout)",
    ),
    Support(
        family="list",
        models=(f"{_BOTORCH}:ModelListGP",),
        parts="single",
        notes="every member a single-output model of the single family, on the same d inputs",
    ),
    Support(
        family="multitask",
        models=(f"{_BOTORCH}:MultiTaskGP",),
        likelihoods=(
            *GAUSSIAN_LIKELIHOODS,
            "gpytorch.likelihoods:HadamardGaussianLikelihood",
        ),
        noises=(*NOISES, "gpytorch.likelihoods.noise_models:MultitaskHomoskedasticNoise"),
        means=(*MEANS, "gpytorch.means:MultitaskMean"),
        kernels=(*DATA_KERNELS, *TASK_KERNELS),
        input_transforms=INPUT_TRANSFORMS,
        outcome_transforms=STANDARDIZE,
        notes="float64; Standardize(m=1); X without the task column",
    ),
    Support(
        family="kronecker",
        models=(f"{_BOTORCH}:KroneckerMultiTaskGP",),
        likelihoods=("gpytorch.likelihoods:MultitaskGaussianLikelihood",),
        noises=(
            "gpytorch.likelihoods.noise_models:HomoskedasticNoise",
            "gpytorch.likelihoods.noise_models:MultitaskHomoskedasticNoise",
        ),
        means=(*MEANS, "gpytorch.means:MultitaskMean"),
        kernels=(*DATA_KERNELS, *TASK_KERNELS, f"{_KERNELS}:MultitaskKernel"),
        input_transforms=INPUT_TRANSFORMS,
        outcome_transforms=STANDARDIZE,
        notes="float64; served as the exact posterior (docs/export.md, Kronecker)",
    ),
    Support(
        family="saas",
        models=(f"{_BOTORCH}.fully_bayesian:SaasFullyBayesianSingleTaskGP",),
        likelihoods=GAUSSIAN_LIKELIHOODS,
        noises=NOISES,
        means=MEANS,
        kernels=DATA_KERNELS,
        input_transforms=INPUT_TRANSFORMS,
        outcome_transforms=STANDARDIZE,
        batch="MCMC samples",
        notes="float64; one output; its MCMC samples loaded",
    ),
)


@cache
def resolve(path: str) -> type | None:
    """The class at ``module:Class``, or None where this BoTorch or GPyTorch has none."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _classes(paths: tuple[str, ...]) -> tuple[type, ...]:
    return tuple(cls for cls in map(resolve, paths) if cls is not None)


def _name(path: str) -> str:
    return path.partition(":")[2]


def row(family: str) -> Support:
    """The support table's row of ``family``."""
    for support in TABLE:
        if support.family == family:
            return support
    raise KeyError(f"expected a family of {[s.family for s in TABLE]}, got {family!r}")


def refusal(part: object) -> str | None:
    """The reason ``part``'s class is refused outright, or None."""
    for path, reason in REFUSED.items():
        cls = resolve(path)
        if cls is not None and type(part) is cls:
            return reason
    if (
        isinstance(part, InputTransform)
        and not isinstance(part, ChainedInputTransform)  # (one-to-many if a member is)
        and getattr(part, "is_one_to_many", False)
    ):
        return _ONE_TO_MANY
    return None


def family_name(model: Model, allow_unlisted: bool = False) -> str:
    """The family whose table row lists ``model``'s class (exactly; with ``allow_unlisted``,
    also a subclass of a listed class).

    Raises:
        UnsupportedModelError: If the class is refused, or listed by no family.
    """
    for support in TABLE:
        if type(model) in _classes(support.models):
            return support.family
    if any(type(model) is resolve(path) for path in _DEFER_TO_PARTS):
        return "single"
    reason = refusal(model)
    if reason is None and allow_unlisted:
        for support in TABLE:
            if isinstance(model, _classes(support.models)):
                return support.family
    if reason is None:
        listed = ", ".join(_name(p) for s in TABLE for p in s.models if resolve(p) is not None)
        reason = f"not a supported model class: expected one of {listed}"
    raise UnsupportedModelError(f"model: {type(model).__name__} ({reason})")


def check(model: Model, allow_unlisted: bool = False) -> str:
    """Walk ``model`` against the support table; refuse the first unsupported part.

    Args:
        model: A fitted BoTorch model.
        allow_unlisted: Let classes the table does not list through (an own kernel, a
            subclass): the exactness gate then decides. Refused parts stay refused.

    Returns:
        The name of the model's family.

    Raises:
        UnsupportedModelError: ``<path>: <class> (<reason>)`` for the first part outside
            the table.
    """
    family = family_name(model, allow_unlisted)
    support = row(family)
    if support.parts is not None:
        for k, part in enumerate(getattr(model, "models", ())):
            _check_part(part, f"model.models.{k}", row(support.parts), allow_unlisted)
        return family
    _check_part(model, "model", support, allow_unlisted)
    return family


def _check_part(model: nn.Module, path: str, support: Support, allow_unlisted: bool) -> None:
    """Walk one model (not a list) against ``support``."""
    if path != "model":  # (a list's member: its class is checked here)
        reason = refusal(model)
        if reason is None and type(model) not in _classes(support.models):
            reason = _unlisted(support, "model classes", support.models)
        if reason is not None and not (allow_unlisted and refusal(model) is None):
            raise UnsupportedModelError(f"{path}: {type(model).__name__} ({reason})")
    _check_batch(model, path, support)
    for where, part, allowed, label in _parts(model, path, support):
        reason = refusal(part)
        if reason is None and type(part) not in _classes(allowed):
            if allow_unlisted:
                continue
            reason = _unlisted(support, label, allowed)
        if reason is not None:
            raise UnsupportedModelError(f"{where}: {type(part).__name__} ({reason})")


def _unlisted(support: Support, label: str, allowed: tuple[str, ...]) -> str:
    names = ", ".join(_name(path) for path in allowed if resolve(path) is not None)
    return f"not in the {support.family} family's {label}: {names}"


def _check_batch(model: nn.Module, path: str, support: Support) -> None:
    try:
        # (BoTorch's Model.batch_shape; nn.Module's typing sees attributes as tensors)
        batch = tuple(getattr(model, "batch_shape"))  # noqa: B009
    except (AttributeError, RuntimeError):  # (a SAAS model before its samples: the family says so)
        return
    allowed = 1 if support.batch == "MCMC samples" else 0
    if len(batch) > allowed:
        raise UnsupportedModelError(
            f"{path}: {type(model).__name__} (batched models are not supported: fit the model "
            f"on N x d inputs, got batch shape {batch})"
        )


def _parts(
    model: nn.Module, path: str, support: Support
) -> Iterator[tuple[str, object, tuple[str, ...], str]]:
    """Every part of ``model`` to check: ``(path, part, allowed classes, what they are)``."""
    likelihood = getattr(model, "likelihood", None)
    if likelihood is not None:
        yield f"{path}.likelihood", likelihood, support.likelihoods, "likelihoods"
        noise = getattr(likelihood, "noise_covar", None)
        if isinstance(noise, nn.Module):
            yield f"{path}.likelihood.noise_covar", noise, support.noises, "noise models"
    for attribute, kind, allowed, label in (
        ("mean_module", Mean, support.means, "means"),
        ("covar_module", Kernel, support.kernels, "kernels"),
    ):
        module = getattr(model, attribute, None)
        if isinstance(module, nn.Module):
            for where, part in _tree(module, f"{path}.{attribute}", kind):
                yield where, part, allowed, label
    for attribute, kind, allowed, label in (
        ("input_transform", InputTransform, support.input_transforms, "input transforms"),
        ("outcome_transform", OutcomeTransform, support.outcome_transforms, "outcome transforms"),
    ):
        module = getattr(model, attribute, None)
        if isinstance(module, nn.Module):
            for where, part in _tree(module, f"{path}.{attribute}", kind):
                yield where, part, allowed, label


def _tree(module: nn.Module, path: str, kind: type) -> Iterator[tuple[str, nn.Module]]:
    """``module`` and every descendant of the same ``kind`` (through module lists and dicts),
    with its path; priors, constraints and other helpers are not walked."""
    yield path, module
    for name, child in module.named_children():
        if isinstance(child, kind):
            yield from _tree(child, f"{path}.{name}", kind)
        elif isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            for key, item in child.named_children():
                if isinstance(item, kind):
                    yield from _tree(item, f"{path}.{name}.{key}", kind)


def full_path_diagonal(kernel: nn.Module) -> bool:
    """Whether any kernel in ``kernel``'s tree needs its diagonal from the full kernel
    (`FULL_PATH_DIAGONAL`)."""
    classes = _classes(FULL_PATH_DIAGONAL)
    return any(type(part) in classes for _, part in _tree(kernel, "", Kernel))


# The sets the table's rows share, named once in its rendering.
_SHARED = (
    ("the data kernels", DATA_KERNELS),
    ("the means", MEANS),
    ("the input transforms", INPUT_TRANSFORMS),
    ("the Gaussian likelihoods", GAUSSIAN_LIKELIHOODS),
    ("the noise models", NOISES),
)


def _names(paths: tuple[str, ...], empty: str = "-") -> str:
    """``paths`` as a table cell: a shared set by its name, the rest as class names."""
    named = []
    for label, shared in _SHARED:
        if paths[: len(shared)] == shared:
            named.append(label)
            paths = paths[len(shared) :]
            break
    named += [f"`{_name(path)}`" for path in paths]
    return ", ".join(named) or empty


def markdown() -> str:
    """The support table as docs/export.md shows it (every class the table names, present
    in this BoTorch or not)."""
    lines = [
        "| family | models | likelihoods (noise models) | means | kernels "
        "| input transforms | outcome transforms | batch | also |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in TABLE:
        if s.parts is not None:
            cells = [f"each model as the {s.parts} family"] + ["(same)"] * 4
        else:
            cells = [
                f"{_names(s.likelihoods)} ({_names(s.noises)})",
                _names(s.means),
                _names(s.kernels),
                _names(s.input_transforms, "none"),
                _names(s.outcome_transforms) + " or none",
            ]
        cells = [s.family, _names(s.models), *cells, s.batch, s.notes]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for label, shared in _SHARED:
        lines.append(f"- {label[4:].capitalize()}: " + ", ".join(f"`{_name(p)}`" for p in shared))
    lines += ["", "| refused | why |", "| --- | --- |"]
    lines += [f"| `{_name(path)}` | {reason} |" for path, reason in REFUSED.items()]
    lines.append(f"| any other input transform with `is_one_to_many` | {_ONE_TO_MANY} |")
    return "\n".join(lines) + "\n"
