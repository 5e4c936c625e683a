"""The served methods' names and the covariance modes a request picks them by, without torch
or BoTorch: they belong beside ``gp_artifact.METHODS`` in the handler (see docs/formats.md).
The methods' Protocol is the handler's ``gp_formats.PosteriorModule``.
"""

from __future__ import annotations

from typing import Literal

# The four methods every format serves (``gp_artifact.METHODS``, in the same order).
MethodName = Literal["forward", "forward_noisy", "mean_var", "mean_var_noisy"]
# What a request asks for besides mean and variance: the joint covariance ("full"), or not.
CovarianceMode = Literal["full", "diag", "none"]


def method_name(covariance: CovarianceMode, noisy: bool) -> MethodName:
    """The method that answers a request: ``forward`` with the covariance, else ``mean_var``.

    Args:
        covariance: ``"full"`` for the `(q*m) x (q*m)` covariance, ``"diag"`` or ``"none"``
            for variances only.
        noisy: With observation noise (the ``_noisy`` methods).
    """
    if covariance == "full":
        return "forward_noisy" if noisy else "forward"
    return "mean_var_noisy" if noisy else "mean_var"
