"""vicourse: the package behind the open course on variational inference.

Each chapter's algorithms live in one module; this module re-exports their public names.
No public name shadows a module: ``vicourse.elbo`` is the function, ``vicourse.bounds``
the module that holds it.
"""

from vicourse.runtime import check_environment

check_environment()

from vicourse import (  # noqa: E402
    bbvi,
    bounds,
    cavi,
    diagnostics,
    evidence,
    families,
    gradients,
    kl,
    runtime,
    svi,
    targets,
    vae,
)
from vicourse.bbvi import fit_pinned, mean_field_factors  # noqa: E402
from vicourse.bounds import ELBOEstimate, ELBOTerms, elbo, elbo_terms  # noqa: E402
from vicourse.cavi import (  # noqa: E402
    GMMFit,
    GMMInfo,
    GMMState,
    NormalGammaFit,
    NormalGammaPrior,
    fit_gmm,
    fit_normal_gamma,
    gmm_elbo,
    gmm_init,
    gmm_step,
    mean_field_gaussian,
    normal_gamma_posterior,
)
from vicourse.diagnostics import (  # noqa: E402
    PosteriorComparison,
    PSISDiagnostic,
    ReferencePosterior,
    compare_posteriors,
    psis_khat,
    reference_posterior,
)
from vicourse.evidence import (  # noqa: E402
    ImportanceEstimate,
    gmm_log_evidence_exact,
    importance_log_evidence,
    normal_normal_log_evidence,
    normal_normal_posterior,
)
from vicourse.families import make_surrogate  # noqa: E402
from vicourse.gradients import ELBOGradient, VIFit, elbo_gradient, fit_vi  # noqa: E402
from vicourse.kl import (  # noqa: E402
    KLEstimate,
    KLFit,
    fit_gaussian,
    fit_reverse_kl,
    kl_divergence,
    standardizing_bijector,
)
from vicourse.svi import SVIFit, fit_gmm_svi  # noqa: E402
from vicourse.targets import (  # noqa: E402
    Target,
    banana,
    bimodal,
    correlated_gaussian,
    eight_schools,
    funnel,
)
from vicourse.vae import (  # noqa: E402
    LIKELIHOODS,
    ActiveUnits,
    AmortizationGap,
    ImageData,
    VAEFit,
    active_units,
    amortization_gap,
    fit_vae,
    iwae_bound,
    load_digits_images,
    load_mnist,
    make_decoder,
    make_encoder,
    vae_elbo,
)

__version__ = "0.1.0"

__all__ = [
    # modules, one per chapter topic
    "bbvi",
    "bounds",
    "cavi",
    "diagnostics",
    "evidence",
    "families",
    "gradients",
    "kl",
    "runtime",
    "svi",
    "vae",
    "targets",
    # chapter 1: the evidence
    "ImportanceEstimate",
    "gmm_log_evidence_exact",
    "importance_log_evidence",
    "normal_normal_log_evidence",
    "normal_normal_posterior",
    # chapter 2: KL divergence
    "KLEstimate",
    "KLFit",
    "fit_gaussian",
    "fit_reverse_kl",
    "kl_divergence",
    "standardizing_bijector",
    # chapter 3: the ELBO
    "ELBOEstimate",
    "ELBOTerms",
    "elbo",
    "elbo_terms",
    # chapter 4: CAVI
    "GMMFit",
    "GMMInfo",
    "GMMState",
    "NormalGammaFit",
    "NormalGammaPrior",
    "fit_gmm",
    "fit_normal_gamma",
    "gmm_elbo",
    "gmm_init",
    "gmm_step",
    "mean_field_gaussian",
    "normal_gamma_posterior",
    # chapter 5: SVI
    "SVIFit",
    "fit_gmm_svi",
    # chapter 6: gradient estimators and the VI loop
    "ELBOGradient",
    "VIFit",
    "elbo_gradient",
    "fit_vi",
    # chapter 7: black-box VI (control variates, Rao-Blackwellization and the "mixed"
    # estimator are options of elbo_gradient and fit_vi)
    "fit_pinned",
    "mean_field_factors",
    # chapter 8: variational autoencoders
    "LIKELIHOODS",
    "ActiveUnits",
    "AmortizationGap",
    "ImageData",
    "VAEFit",
    "active_units",
    "amortization_gap",
    "fit_vae",
    "iwae_bound",
    "load_digits_images",
    "load_mnist",
    "make_decoder",
    "make_encoder",
    "vae_elbo",
    # chapter 9: richer variational families, and targets with known answers
    "make_surrogate",
    "Target",
    "banana",
    "bimodal",
    "correlated_gaussian",
    "eight_schools",
    "funnel",
    # chapter 10: checking a fit (reference_posterior is used from chapter 6 on)
    "PSISDiagnostic",
    "PosteriorComparison",
    "ReferencePosterior",
    "compare_posteriors",
    "psis_khat",
    "reference_posterior",
    # runtime
    "check_environment",
    "describe",
]

describe = runtime.describe
