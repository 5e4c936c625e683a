"""The model zoo: BoTorch models built as BoTorch's own tutorials and tests build them.

Each case names the upstream file (in pytorch/botorch, or its tutorials) its configuration
comes from, builds the model with small seeded data and randomised raw hyperparameters
(no fitting: the export must be exact for any fitted values, and fitting would only cost
time), and says what the export must do: equal eager BoTorch, or refuse with the support
check's message (`export.support`). ``tests/export/test_zoo.py`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import botorch
import torch
from botorch.models import (
    KroneckerMultiTaskGP,
    ModelListGP,
    MultiTaskGP,
    SingleTaskGP,
)
from botorch.models.model import Model
from botorch.models.transforms.input import (
    AppendFeatures,
    ChainedInputTransform,
    InputPerturbation,
    InputStandardize,
    Normalize,
    Warp,
)
from botorch.models.transforms.outcome import Log, Standardize
from gpytorch.kernels import (
    AdditiveKernel,
    LinearKernel,
    MaternKernel,
    PeriodicKernel,
    PolynomialKernel,
    ProductKernel,
    RBFKernel,
    RQKernel,
    ScaleKernel,
)
from gpytorch.means import LinearMean, ZeroMean
from gpytorch.priors import GammaPrior

BOTORCH_MINOR = tuple(int(part) for part in botorch.__version__.split(".")[:2])
DT = torch.float64


@dataclass(frozen=True)
class Case:
    """One zoo model.

    Attributes:
        name: The test id.
        upstream: The BoTorch file (tutorial or test) the configuration is taken from.
        build: Builds the model (seeded, in eval mode).
        refusal: The support check's message (a regular expression matched against the
            whole message), or None when the export must be exact.
        minimum: The lowest BoTorch ``(major, minor)`` that has the model.
        maximum: The highest BoTorch ``(major, minor)`` that has the model.
        requires: Says why the model cannot be built in this environment (an optional
            extra it needs is missing), or None.
    """

    name: str
    upstream: str
    build: Callable[[], Model]
    refusal: str | None = None
    minimum: tuple[int, int] = (0, 12)
    maximum: tuple[int, int] = (99, 0)
    requires: Callable[[], str | None] = lambda: None

    @property
    def missing(self) -> str | None:
        """Why this environment cannot build the model, or None."""
        if not self.minimum <= BOTORCH_MINOR <= self.maximum:
            return f"not in BoTorch {botorch.__version__} ({self.upstream})"
        return self.requires()

    @property
    def available(self) -> bool:
        return self.missing is None


def saas_extra() -> str | None:
    """Why SAAS models cannot be built here: BoTorch 0.13+ needs its fully Bayesian extra."""
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

    try:
        SaasFullyBayesianSingleTaskGP(torch.rand(3, 1, dtype=DT), torch.rand(3, 1, dtype=DT))
    except ImportError:
        return "needs BoTorch's fully Bayesian extra (JAX, NumPyro): pip install 'gp-serve[saas]'"
    return None


def data(n: int, d: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n x d` inputs in ``[0, 1]`` and `n x m` smooth outcomes of different scales."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=generator, dtype=DT)
    W = torch.randn(d, m, generator=generator, dtype=DT)
    Y = torch.sin(3 * X @ W) + 0.05 * torch.randn(n, m, generator=generator, dtype=DT)
    return X, Y * torch.linspace(1, 20, m, dtype=DT) + 2


def randomised(model: Model, seed: int = 1) -> Model:
    """``model`` in eval mode with its raw hyperparameters (not the noise) moved by a seeded
    draw, as a fit would move them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "raw_" in name and "noise" not in name:
                param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    model.eval()
    return model


def single(**kwargs) -> Model:
    X, Y = data(12, 3, kwargs.pop("m", 1))
    kwargs.setdefault("outcome_transform", Standardize(Y.size(-1)))
    return randomised(SingleTaskGP(X, Y, **kwargs))


def kernel_model(kernel) -> Model:
    X, Y = data(12, 3, 1)
    return randomised(SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=Standardize(1)))


def fixed_noise() -> Model:
    X, Y = data(12, 3, 2)
    return randomised(SingleTaskGP(X, Y, 1e-3 * (1 + Y.abs()), outcome_transform=Standardize(2)))


def gamma_matern() -> Model:
    kernel = ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=3, lengthscale_prior=GammaPrior(3.0, 6.0)),
        outputscale_prior=GammaPrior(2.0, 0.15),
    )
    return kernel_model(kernel)


def warped(chained: bool) -> Model:
    X, Y = data(12, 3, 1)
    X = 4 * X - 1  # (Warp needs the unit cube: Normalize brings it there first)
    indices = [0, 1]
    if BOTORCH_MINOR >= (0, 14):
        warp = Warp(d=3, indices=indices, bounds=torch.tensor([[-1.0] * 3, [3.0] * 3], dtype=DT))
    else:
        warp = Warp(indices=indices)
    transform = ChainedInputTransform(tf1=Normalize(d=3), tf2=warp) if chained else warp
    if not chained:
        X = (X + 1) / 4
    model = SingleTaskGP(X, Y, input_transform=transform, outcome_transform=Standardize(1))
    return randomised(model)


def multi_fidelity(**kwargs) -> Model:
    from botorch.models import SingleTaskMultiFidelityGP

    X, Y = data(12, 3, 1)
    return randomised(SingleTaskMultiFidelityGP(X, Y, outcome_transform=Standardize(1), **kwargs))


def mixed() -> Model:
    from botorch.models import MixedSingleTaskGP

    X, Y = data(12, 3, 1)
    X[:, 2] = (3 * X[:, 2]).floor()
    return randomised(MixedSingleTaskGP(X, Y, cat_dims=[2], outcome_transform=Standardize(1)))


def orthogonal_additive() -> Model:
    from botorch.models.kernels.orthogonal_additive_kernel import OrthogonalAdditiveKernel

    kernel = OrthogonalAdditiveKernel(base_kernel=RBFKernel(), dim=3, second_order=True, dtype=DT)
    # (the kernel is defined on the unit cube, which BoTorch 0.12 checks: bounds wider than
    # the data keep the gate's points, 10% beyond the data, inside it)
    X, Y = data(12, 3, 1)
    bounds = torch.tensor([[-1.0] * 3, [2.0] * 3], dtype=DT)
    model = SingleTaskGP(
        X,
        Y,
        covar_module=kernel,
        input_transform=Normalize(d=3, bounds=bounds),
        outcome_transform=Standardize(1),
    )
    return randomised(model)


def contextual(kind: str) -> Model:
    from botorch.models.contextual import LCEAGP, SACGP

    X, Y = data(12, 4, 1)
    decomposition = {"a": [0, 1], "b": [2, 3]}
    if kind == "sac":
        return randomised(SACGP(X, Y, None, decomposition))
    return randomised(LCEAGP(X, Y, None, decomposition))


def trained(model: Model) -> Model:
    """``model`` after one training step as ``fit_gpytorch_mll`` takes them (the marginal
    log likelihood and its gradient, in train mode), back in eval mode: what a fit leaves
    in a kernel's caches (``OrthogonalAdditiveKernel``'s normalizer, LCE-A's context
    covariance: tensors with a history, which ``copy.deepcopy`` refuses)."""
    from gpytorch.mlls import ExactMarginalLogLikelihood

    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    loss = -mll(model(*model.train_inputs), model.train_targets).sum()
    loss.backward()
    return model.eval()


def conditioned() -> Model:
    model = single()
    X, Y = data(3, 3, 1, seed=5)
    model.posterior(X)  # (conditioning needs the prediction caches)
    return model.condition_on_observations(X, Y).eval()


def map_saas() -> Model:
    from botorch.models.map_saas import add_saas_prior

    X, Y = data(12, 4, 1)
    base = MaternKernel(nu=2.5, ard_num_dims=4)
    add_saas_prior(base_kernel=base, tau=None)
    return kernel_model_d(ScaleKernel(base), X, Y)


def kernel_model_d(kernel, X: torch.Tensor, Y: torch.Tensor) -> Model:
    model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=Standardize(Y.size(-1)))
    return randomised(model)


def downsampling() -> Model:
    from botorch.models.kernels.downsampling import DownsamplingKernel

    kernel = ScaleKernel(
        ProductKernel(RBFKernel(active_dims=[0, 1]), DownsamplingKernel(active_dims=[2]))
    )
    return kernel_model(kernel)


def ibnn() -> Model:
    from botorch.models.kernels.infinite_width_bnn import InfiniteWidthBNNKernel

    return kernel_model(InfiniteWidthBNNKernel(depth=3))


def model_list(noise: bool) -> Model:
    parts = []
    for k, n in enumerate((10, 14)):
        X, Y = data(n, 3, 1, seed=k)
        yvar = torch.full_like(Y, 1e-3) if noise else None
        parts.append(randomised(SingleTaskGP(X, Y, yvar, outcome_transform=Standardize(1)), k))
    return ModelListGP(*parts).eval()


def multitask(**kwargs) -> Model:
    X, Y = data(16, 2, 1)
    tasks = (torch.arange(16) % 3).to(DT).unsqueeze(-1)
    return randomised(MultiTaskGP(torch.cat([X, tasks], -1), Y, task_feature=-1, **kwargs))


def kronecker(rank: int | None = None) -> Model:
    X, Y = data(10, 2, 3)
    kwargs = {}
    if rank is not None:
        from gpytorch.likelihoods import MultitaskGaussianLikelihood

        kwargs["likelihood"] = MultitaskGaussianLikelihood(num_tasks=3, rank=rank)
    return randomised(KroneckerMultiTaskGP(X, Y, outcome_transform=Standardize(3), **kwargs))


def saas() -> Model:
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

    X, Y = data(12, 3, 1)
    model = SaasFullyBayesianSingleTaskGP(X, Y)
    generator = torch.Generator().manual_seed(3)

    def draw(*shape: int, low: float, width: float) -> torch.Tensor:
        return low + width * torch.rand(*shape, generator=generator, dtype=DT)

    model.load_mcmc_samples(
        {
            "lengthscale": draw(4, 1, 3, low=0.5, width=1.0),
            "outputscale": draw(4, low=0.5, width=1.0),
            "mean": draw(4, low=-0.1, width=0.2),
            "noise": draw(4, low=1e-3, width=1e-2),
        }
    )
    model.eval()  # (not chained: on BoTorch 0.12 it returns None)
    return model


def perturbation() -> Model:
    X, Y = data(12, 3, 1)
    transform = InputPerturbation(perturbation_set=0.01 * torch.randn(4, 3, dtype=DT))
    return randomised(SingleTaskGP(X, Y, input_transform=transform))


def chained_perturbation() -> Model:
    X, Y = data(12, 3, 1)
    transform = ChainedInputTransform(
        tf1=Normalize(d=3),
        tf2=InputPerturbation(perturbation_set=0.01 * torch.randn(4, 3, dtype=DT)),
    )
    return randomised(SingleTaskGP(X, Y, input_transform=transform))


def append_features() -> Model:
    X, Y = data(12, 2, 1)
    transform = AppendFeatures(feature_set=torch.rand(5, 1, dtype=DT))
    return randomised(
        SingleTaskGP(torch.cat([X, torch.rand(12, 1, dtype=DT)], -1), Y, input_transform=transform)
    )


def log_outcome() -> Model:
    X, Y = data(12, 3, 1)
    return randomised(SingleTaskGP(X, Y.abs() + 1, outcome_transform=Log()))


def higher_order() -> Model:
    from botorch.models import HigherOrderGP

    X = torch.rand(8, 2, dtype=DT)
    return HigherOrderGP(X, torch.rand(8, 3, 4, dtype=DT)).eval()


def variational() -> Model:
    from botorch.models import SingleTaskVariationalGP

    X, Y = data(12, 3, 1)
    return SingleTaskVariationalGP(X, Y).eval()


def heterogeneous() -> Model:
    from botorch.models.heterogeneous_mtgp import HeterogeneousMTGP

    X1, Y1 = data(10, 2, 1)
    X2, Y2 = data(10, 3, 1, seed=1)
    return HeterogeneousMTGP(
        train_Xs=[X1, X2],
        train_Ys=[Y1, Y2],
        train_Yvars=None,
        feature_indices=[[0, 1], [0, 1, 2]],
        full_feature_dim=3,
    ).eval()


def batched() -> Model:
    X, Y = data(12, 3, 1)
    return randomised(SingleTaskGP(X.expand(2, 12, 3).clone(), Y.expand(2, 12, 1).clone()))


def heteroskedastic() -> Model:
    from botorch.models import HeteroskedasticSingleTaskGP

    X, Y = data(12, 3, 1)
    return HeteroskedasticSingleTaskGP(X, Y, torch.full_like(Y, 1e-2)).eval()


def relevance_pursuit() -> Model:
    from botorch.models.robust_relevance_pursuit_model import (
        RobustRelevancePursuitSingleTaskGP,
    )

    X, Y = data(12, 3, 1)
    return RobustRelevancePursuitSingleTaskGP(X, Y).eval()


class ScaledMatern(MaternKernel):
    """A user's own kernel class (a subclass of a listed one): not in the table."""


def own_kernel() -> Model:
    return kernel_model(ScaleKernel(ScaledMatern(nu=1.5)))


def list_with_log_member() -> Model:
    X, Y = data(12, 3, 1)
    good = randomised(SingleTaskGP(X, Y, outcome_transform=Standardize(1)))
    bad = randomised(SingleTaskGP(X, Y.abs() + 1, outcome_transform=Log()))
    return ModelListGP(good, bad).eval()


def sgpr() -> Model:
    from gpytorch.kernels import InducingPointKernel

    X, Y = data(12, 3, 1)
    kernel = InducingPointKernel(
        ScaleKernel(RBFKernel()), inducing_points=X[:4].clone(), likelihood=None
    )
    return SingleTaskGP(X, Y, covar_module=kernel).eval()


CASES: tuple[Case, ...] = (
    Case("single-defaults", "test/models/test_gp_regression.py", single),
    Case("single-m2", "test/models/test_gp_regression.py", lambda: single(m=2)),
    Case("single-known-noise", "test/models/test_gp_regression.py", fixed_noise),
    Case(
        "single-normalize",
        "tutorials/closed_loop_botorch_only",
        lambda: single(input_transform=Normalize(d=3)),
    ),
    Case("matern-gamma-priors", "botorch/models/utils/gpytorch_modules.py", gamma_matern),
    Case("warp", "tutorials/bo_with_warped_gp", lambda: warped(False)),
    Case("normalize-then-warp", "test/models/transforms/test_input.py", lambda: warped(True)),
    Case("zero-mean", "test/models/test_gp_regression.py", lambda: single(mean_module=ZeroMean())),
    Case("linear-mean", "tutorials/custom_model", lambda: single(mean_module=LinearMean(3))),
    Case(
        "input-standardize",
        "test/models/transforms/test_input.py",
        lambda: single(input_transform=InputStandardize(d=3)),
    ),
    Case(
        "rq-kernel",
        "test/models/test_gp_regression.py",
        lambda: kernel_model(ScaleKernel(RQKernel(ard_num_dims=3))),
    ),
    Case(
        "periodic-kernel",
        "tutorials/custom_model",
        lambda: kernel_model(ScaleKernel(PeriodicKernel())),
    ),
    Case(
        "additive-active-dims",
        "tutorials/custom_model",
        lambda: kernel_model(
            AdditiveKernel(
                ScaleKernel(RBFKernel(active_dims=[0, 1])),
                ScaleKernel(MaternKernel(active_dims=[2])),
            )
        ),
    ),
    Case(
        "product-kernel",
        "test/models/test_gp_regression.py",
        lambda: kernel_model(
            ScaleKernel(ProductKernel(RBFKernel(active_dims=[0]), MaternKernel(active_dims=[1, 2])))
        ),
    ),
    Case(
        "linear-plus-rbf",
        "tutorials/custom_model",
        lambda: kernel_model(
            AdditiveKernel(ScaleKernel(LinearKernel()), ScaleKernel(RBFKernel(ard_num_dims=3)))
        ),
    ),
    Case(
        "polynomial-kernel",
        "test/models/test_gp_regression.py",
        lambda: kernel_model(ScaleKernel(PolynomialKernel(power=2))),
    ),
    Case(
        "multi-fidelity-data",
        "test/models/test_gp_regression_fidelity.py",
        lambda: multi_fidelity(data_fidelities=[2]),
    ),
    Case(
        "multi-fidelity-iteration",
        "test/models/test_gp_regression_fidelity.py",
        lambda: multi_fidelity(iteration_fidelity=2, linear_truncated=False),
    ),
    Case("mixed-categorical", "test/models/test_gp_regression_mixed.py", mixed),
    Case(
        "orthogonal-additive",
        "test/models/kernels/test_orthogonal_additive_kernel.py",
        orthogonal_additive,
    ),
    Case(
        "orthogonal-additive-trained",
        "test/models/kernels/test_orthogonal_additive_kernel.py",
        lambda: trained(orthogonal_additive()),
    ),
    Case("contextual-sac", "test/models/test_contextual.py", lambda: contextual("sac")),
    Case("contextual-lcea", "test/models/test_contextual.py", lambda: contextual("lcea")),
    Case(
        "contextual-lcea-trained",
        "test/models/test_contextual.py",
        lambda: trained(contextual("lcea")),
    ),
    Case("condition-on-observations", "test/models/test_gp_regression.py", conditioned),
    Case("map-saas", "test/models/test_map_saas.py", map_saas, minimum=(0, 13)),
    Case("ibnn", "tutorials/ibnn_bo", ibnn),
    Case("downsampling-kernel", "test/models/kernels/test_downsampling.py", downsampling),
    Case("model-list", "test/models/test_model_list.py", lambda: model_list(False)),
    Case("model-list-known-noise", "test/models/test_model_list.py", lambda: model_list(True)),
    Case("multitask", "test/models/test_multitask.py", multitask),
    Case(
        "multitask-output-subset",
        "test/models/test_multitask.py",
        lambda: multitask(output_tasks=[1]),
    ),
    Case("multitask-rank-1", "test/models/test_multitask.py", lambda: multitask(rank=1)),
    Case("kronecker", "test/models/test_multitask.py", kronecker),
    Case("kronecker-rank-1-noise", "test/models/test_multitask.py", lambda: kronecker(rank=1)),
    Case("saas", "test/models/test_fully_bayesian.py", saas, requires=saas_extra),
    Case(
        "input-perturbation",
        "tutorials/risk_averse_bo_with_input_perturbations",
        perturbation,
        refusal=r"model\.input_transform: InputPerturbation \(one-to-many input transforms "
        r"are not supported: the served posterior is per input point\)",
    ),
    Case(
        "chained-input-perturbation",
        "tutorials/risk_averse_bo_with_input_perturbations",
        chained_perturbation,
        refusal=r"model\.input_transform\.tf2: InputPerturbation \(one-to-many input "
        r"transforms are not supported: the served posterior is per input point\)",
    ),
    Case(
        "append-features",
        "tutorials/risk_averse_bo_with_environmental_variables",
        append_features,
        refusal=r"model\.input_transform: AppendFeatures \(one-to-many input transforms "
        r"are not supported: the served posterior is per input point\)",
    ),
    Case(
        "log-outcome",
        "test/models/transforms/test_outcome.py",
        log_outcome,
        refusal=r"model\.outcome_transform: Log \(.*\)",
    ),
    Case(
        "higher-order",
        "test/models/test_higher_order.py",
        higher_order,
        refusal=r"model: HigherOrderGP \(.*\)",
    ),
    Case(
        "variational",
        "test/models/test_approximate_gp.py",
        variational,
        refusal=r"model: SingleTaskVariationalGP \(.*\)",
    ),
    Case(
        "heterogeneous-multitask",
        "test/models/test_heterogeneous_multi_task.py",
        heterogeneous,
        refusal=r"model: HeterogeneousMTGP \(.*\)",
        minimum=(0, 15),
    ),
    Case(
        "batched",
        "test/models/test_gp_regression.py",
        batched,
        refusal=r"model: SingleTaskGP \(batched models are not supported: .*\)",
    ),
    Case(
        "heteroskedastic",
        "test/models/test_gp_regression.py",
        heteroskedastic,
        refusal=r"model: HeteroskedasticSingleTaskGP \(.*\)",
        maximum=(0, 12),
    ),
    Case(
        "relevance-pursuit",
        "test/models/test_robust_relevance_pursuit_model.py",
        relevance_pursuit,
        refusal=r"model\.likelihood: SparseOutlierGaussianLikelihood \(.*\)",
        minimum=(0, 13),
    ),
    Case(
        "own-kernel-subclass",
        "tutorials/custom_model",
        own_kernel,
        refusal=r"model\.covar_module\.base_kernel: ScaledMatern \(not in the single "
        r"family's kernels: RBFKernel, MaternKernel, .*\)",
    ),
    Case(
        "list-with-a-log-member",
        "test/models/test_model_list.py",
        list_with_log_member,
        refusal=r"model\.models\.1\.outcome_transform: Log \(nonlinear outcome "
        r"transforms are not supported: .*\)",
    ),
    Case(
        "sgpr-inducing-points",
        "gpytorch examples (SGPR)",
        sgpr,
        refusal=r"model\.covar_module: InducingPointKernel \(.*\)",
    ),
)
