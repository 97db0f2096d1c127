"""vicourse: the package behind the open course on variational inference.

Each chapter's algorithms live in one module; this module re-exports the public names.
"""

from vicourse.runtime import check_environment

check_environment()

from vicourse import cavi, evidence, kl, runtime  # noqa: E402
from vicourse.cavi import (  # noqa: E402
    GMMFit,
    NormalGammaFit,
    NormalGammaPrior,
    fit_gmm,
    fit_normal_gamma,
    mean_field_gaussian,
    normal_gamma_posterior,
)
from vicourse.elbo import ELBOEstimate, ELBOTerms, elbo, elbo_terms  # noqa: E402
from vicourse.evidence import (  # noqa: E402
    ImportanceEstimate,
    gmm_log_evidence_exact,
    importance_log_evidence,
    normal_normal_log_evidence,
    normal_normal_posterior,
)
from vicourse.kl import (  # noqa: E402
    GaussianFit,
    KLEstimate,
    fit_gaussian,
    fit_reverse_kl,
    kl_divergence,
)

__version__ = "0.1.0"

__all__ = [
    "GMMFit",
    "NormalGammaFit",
    "NormalGammaPrior",
    "cavi",
    "fit_gmm",
    "fit_normal_gamma",
    "mean_field_gaussian",
    "normal_gamma_posterior",
    "ELBOEstimate",
    "ELBOTerms",
    "GaussianFit",
    "ImportanceEstimate",
    "KLEstimate",
    "elbo",
    "elbo_terms",
    "evidence",
    "fit_gaussian",
    "fit_reverse_kl",
    "gmm_log_evidence_exact",
    "importance_log_evidence",
    "kl",
    "kl_divergence",
    "normal_normal_log_evidence",
    "normal_normal_posterior",
    "runtime",
]
