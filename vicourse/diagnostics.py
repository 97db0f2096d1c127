r"""Checking a VI fit: reference posteriors from MCMC, PSIS diagnostics, comparison tables.

A VI fit is judged against the exact posterior where one exists and against a trusted MCMC
reference where it does not (chapter 10, :doc:`/book/chapters/10_checking_vi`).

- :func:`reference_posterior` runs the No-U-Turn sampler :cite:p:`hoffman2014nuts` with an
  adapted step size and diagonal mass matrix (TFP's windowed adaptation) on several chains,
  and reports the split-:math:`\hat R` and the effective sample size of every coordinate,
  so that the reference itself can be trusted before a VI fit is compared with it.
- :func:`psis_khat` weighs draws of :math:`q` by :math:`p/q`, smooths the largest weights
  with a fitted generalized Pareto tail (ArviZ's PSIS, :cite:t:`vehtari2024pareto`), and
  reports the tail's shape :math:`\hat k`, a measure of how far :math:`q` is from
  :math:`p` :cite:p:`yao2018yes`, with the importance-weighted (PSIS-corrected) means and
  standard deviations.
- :func:`compare_posteriors` tabulates means and sds against a reference, with the errors in
  units of the reference's posterior sd.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vicourse._logging import quiet
from vicourse._seed import sanitize_seed
from vicourse._validation import (
    as_float_tensor,
    built_distribution,
    call_log_density,
    check_bool,
    check_count,
    check_distribution,
    check_finite,
    check_min_count,
    check_positive,
    check_sample_budget,
    check_scalar_batch,
    default_tolerance,
)

tfd = tfp.distributions

__all__ = [
    "PSISDiagnostic",
    "PosteriorComparison",
    "ReferencePosterior",
    "compare_posteriors",
    "psis_khat",
    "reference_posterior",
]


class ReferencePosterior(NamedTuple):
    """Result of :func:`reference_posterior`; each field maps a latent variable's name to
    an array."""

    draws: dict
    """The kept draws, ``[num_draws, num_chains, *event]`` per variable."""
    mean: dict
    """Posterior mean over all draws and chains."""
    sd: dict
    """Posterior standard deviation over all draws and chains."""
    rhat: dict
    r"""Split potential scale reduction :math:`\hat R` per coordinate; each chain is split in
    halves, so a chain that drifts is caught too (near 1 when the chains agree; above
    1.01–1.05 is a warning)."""
    ess: dict
    """Effective sample size per coordinate, pooled over chains."""


def _nuts_phase(model, observed, center, scale, state, seed, num_draws, num_adaptation_steps):
    """NUTS with dual-averaging step-size adaptation in preconditioned coordinates.

    The chains move in ``u``, with unconstrained parameters ``center + scale * u`` (per part),
    so a diagonal mass matrix is the same as a per-coordinate ``scale``. Returns the kept
    draws, mapped back to the unconstrained space.
    """
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()

    def unconstrained(u):
        parts = [c + s * x for c, s, x in zip(center, scale, u, strict=True)]
        return tf.nest.pack_sequence_as(pinned.event_shape, parts)

    def target(*u):
        free = unconstrained(u)
        return pinned.unnormalized_log_prob(bijector.forward(free)) + (
            bijector.forward_log_det_jacobian(free)
        )

    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.NoUTurnSampler(target, step_size=tf.constant(0.5, center[0].dtype)),
        num_adaptation_steps=int(0.8 * num_adaptation_steps),
    )
    draws = tfp.mcmc.sample_chain(
        num_draws,
        list(state),
        kernel=kernel,
        num_burnin_steps=num_adaptation_steps,
        trace_fn=None,
        seed=seed,
    )
    return [c + s * d for c, s, d in zip(center, scale, draws, strict=True)]


def _to_constrained(model, observed, free):
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()
    return bijector.forward(tf.nest.pack_sequence_as(pinned.event_shape, free))


# One compiled phase per model object and set of sizes: the model is a Python object (a
# JointDistribution with callables is not a composite tensor), so it keys the trace, and
# both phases of a run (and later runs) reuse it.
_nuts_xla = tf.function(_nuts_phase, jit_compile=True)
_nuts_graph = tf.function(_nuts_phase)


def _run_nuts(model, observed, num_draws, num_chains, num_adaptation_steps, seed, run):
    """Two phases: adapt the step size in the raw unconstrained space; then restart there,
    preconditioned by the first phase's per-coordinate mean and sd (a diagonal mass
    matrix), adapt the step size again, and keep ``num_draws`` draws per chain."""
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()
    shapes = tf.nest.flatten(bijector.inverse_event_shape(pinned.event_shape))
    dtype = tf.nest.flatten(pinned.dtype)[0]
    init_seed, first_seed, second_seed = tfp.random.split_seed(seed, n=3)
    # Stan's initialization: uniform in [-2, 2] on the unconstrained scale.
    state = [
        tf.random.stateless_uniform(
            [num_chains, *s],
            tfp.random.split_seed(init_seed, n=len(shapes))[i],
            -2.0,
            2.0,
            dtype,
        )
        for i, s in enumerate(shapes)
    ]
    center = [tf.zeros(s, dtype) for s in shapes]
    scale = [tf.ones(s, dtype) for s in shapes]
    free = run(model, observed, center, scale, state, first_seed, num_draws, num_adaptation_steps)
    center = [tf.reduce_mean(d, axis=[0, 1]) for d in free]
    scale = [tf.maximum(tf.math.reduce_std(d, axis=[0, 1]), 1e-8) for d in free]
    state = [(d[-1] - c) / s for d, c, s in zip(free, center, scale, strict=True)]
    free = run(model, observed, center, scale, state, second_seed, num_draws, num_adaptation_steps)
    return _to_constrained(model, observed, free)


def _as_dict(draws) -> dict:
    if isinstance(draws, Mapping):
        return {str(k): v for k, v in draws.items()}
    if hasattr(draws, "_asdict"):
        return {str(k): v for k, v in draws._asdict().items()}
    if isinstance(draws, (list, tuple)):
        return {str(i): v for i, v in enumerate(draws)}
    return {"z": draws}


def _check_observed(model, observed) -> dict:
    if not isinstance(observed, Mapping):
        raise TypeError(
            f"`observed` must be a dict from variable names to observed values, got "
            f"{type(observed).__name__}."
        )
    checked = {}
    for name, value in observed.items():
        tensor = as_float_tensor(value, f"observed[{name!r}]", tf.float64)
        check_finite(tensor, f"observed[{name!r}]")
        checked[name] = value
    try:
        pinned = model.experimental_pin(**checked)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(
            f"`observed` does not match the model's variables: {err}. Use the names of "
            "the model's variables as keys."
        ) from None
    if not tf.nest.flatten(pinned.event_shape):
        raise ValueError("`observed` pins every variable of the model; leave some latent.")
    return checked


def reference_posterior(
    model: tfd.JointDistribution,
    observed: Mapping,
    *,
    num_draws: int = 1000,
    num_chains: int = 4,
    num_adaptation_steps: int | None = None,
    seed=None,
    jit_compile: bool = True,
) -> ReferencePosterior:
    r"""Draws from :math:`p(z \mid x)` by NUTS, with :math:`\hat R` and effective sample sizes.

    Runs ``num_chains`` chains of TFP's No-U-Turn sampler :cite:p:`hoffman2014nuts` in the
    model's unconstrained space (its default event-space bijectors), initialized uniformly
    in [-2, 2] there, in two phases of ``num_adaptation_steps`` warm-up and ``num_draws``
    kept draws each. Phase one adapts the step size by dual averaging; phase two restarts
    from its last draws, preconditioned by its per-coordinate mean and standard deviation
    (a diagonal mass matrix), adapts the step size again, and keeps its draws. Both phases
    run the same compiled function (XLA by default), built once per model object and set
    of sizes: TFP's ``windowed_adaptive_nuts`` traces one NUTS kernel per adaptation window,
    which cost 30–40 s of graph building on eight schools against about 10 s here.

    The split potential scale reduction :math:`\hat R` compares between- and within-chain
    variances, with each chain split in halves; values near 1 say the chains agree. The
    effective sample size (pooled over chains) sets the Monte Carlo error of a posterior
    mean,
    :math:`\mathrm{sd}/\sqrt{\mathrm{ESS}}`. Both are TFP's estimators.

    Parameters
    ----------
    model : tfp.distributions.JointDistribution
        The joint model :math:`p(z, x)`, for example a ``tfd.JointDistributionNamed``.
    observed : dict
        Observed values by variable name, pinned in ``model``; the other variables are the
        latent ones sampled.
    num_draws : int, default 1000
        Kept draws per chain, at least 10.
    num_chains : int, default 4
        Independent chains, at least 2 (:math:`\hat R` compares chains).
    num_adaptation_steps : int, optional
        Warm-up steps (discarded); defaults to ``num_draws``.
    seed : int or Tensor of shape [2], optional
        Stateless seed; the same seed gives the same draws.
    jit_compile : bool, default True
        Compile the sampler with XLA; ``False`` runs a plain ``tf.function`` graph.

    Returns
    -------
    ReferencePosterior
        ``draws``, ``mean``, ``sd``, ``rhat`` and ``ess``, each a dict keyed by the latent
        variables' names (indices for a sequential model).

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not a TFP ``JointDistribution``, ``observed`` is not a dict of
        finite values for the model's variables (or pins all of them), or a count or seed
        is invalid.

    Notes
    -----
    Used as the reference for VI fits in :doc:`/book/chapters/06_reparameterization`.
    """
    if not isinstance(model, tfd.JointDistribution):
        raise TypeError(
            f"`model` must be a tfp.distributions.JointDistribution (e.g. "
            f"tfd.JointDistributionNamed), got {type(model).__name__}."
        )
    observed = _check_observed(model, observed)
    num_draws = check_count(num_draws, "num_draws", minimum=10)
    num_chains = check_count(num_chains, "num_chains", minimum=2)
    if num_adaptation_steps is None:
        num_adaptation_steps = num_draws
    num_adaptation_steps = check_count(num_adaptation_steps, "num_adaptation_steps", minimum=10)
    jit_compile = check_bool(jit_compile, "jit_compile")
    seed = sanitize_seed(seed)
    run = _nuts_xla if jit_compile else _nuts_graph
    observed = {k: tf.convert_to_tensor(v, dtype_hint=tf.float64) for k, v in observed.items()}
    # TF32 matmuls (TensorFlow's default on recent GPUs) lose precision that MCMC needs;
    # TFP warns about it. Off for this call, then restored.
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        draws = _as_dict(
            _run_nuts(model, observed, num_draws, num_chains, num_adaptation_steps, seed, run)
        )
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    draws = {k: np.asarray(v) for k, v in draws.items()}
    rhat = {
        k: np.asarray(tfp.mcmc.potential_scale_reduction(v, split_chains=True))
        for k, v in draws.items()
    }
    # TFP's FFT-based autocorrelation logs a harmless note when it drops the (zero)
    # imaginary part of its complex intermediate.
    with quiet("You are casting an input of type complex"):
        ess = {
            k: np.asarray(tfp.mcmc.effective_sample_size(v, cross_chain_dims=1))
            for k, v in draws.items()
        }
    mean = {k: v.mean(axis=(0, 1)) for k, v in draws.items()}
    sd = {k: v.std(axis=(0, 1)) for k, v in draws.items()}
    return ReferencePosterior(draws, mean, sd, rhat, ess)


# ---------------------------------------------------------------------------------------
# Pareto-smoothed importance sampling
# ---------------------------------------------------------------------------------------

_MIN_PSIS_SAMPLES = 100


class PSISDiagnostic(NamedTuple):
    """Result of :func:`psis_khat`."""

    khat: float
    r"""The Pareto shape :math:`\hat k` of the importance weights' right tail; ``-inf``
    when the log-weights are constant up to round-off (:math:`q` is the posterior), since
    bounded weights have no tail."""
    khat_threshold: float
    r"""The largest :math:`\hat k` at which the :math:`S` draws give reliable
    PSIS estimates, :math:`\min(1 - 1/\log_{10} S,\ 0.7)` :cite:p:`vehtari2024pareto`."""
    log_weights: np.ndarray
    """The smoothed, normalized log-weights, shape ``[S]`` (they sum to one)."""
    draws: np.ndarray
    r"""The draws :math:`z_s \sim q`, shape ``[S, *event]``."""
    mean: np.ndarray
    """The PSIS-corrected posterior mean (weighted by the smoothed weights)."""
    sd: np.ndarray
    """The PSIS-corrected posterior standard deviation."""
    ess: float
    r"""The effective sample size of the smoothed weights, :math:`1/\sum_s w_s^2`."""
    log_evidence: float
    r"""The PSIS estimate of :math:`\log p(x)`, the log of the mean smoothed weight."""
    elbo: float
    r"""The Monte Carlo ELBO from the same draws, the mean raw log-weight."""


def _arviz():
    """ArviZ, imported on first use, without the once-a-day note about its 1.x refactor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
        import arviz  # noqa: PLC0415 (an optional import cost until PSIS is used)
    return arviz


def _check_surrogate_event(surrogate, name="surrogate"):
    check_distribution(surrogate, name)
    surrogate = built_distribution(surrogate)
    check_scalar_batch(surrogate, name)
    if surrogate.event_shape.rank not in (0, 1):
        raise ValueError(
            f"`{name}` must have event shape [] or [D], got {surrogate.event_shape.as_list()}; "
            "flatten the latent variables into one vector."
        )
    if not surrogate.dtype.is_floating:
        raise TypeError(f"`{name}` must be continuous (a float dtype), got {surrogate.dtype.name}.")
    return surrogate


def psis_khat(
    log_joint: Callable, surrogate: tfd.Distribution, *, num_samples: int, seed
) -> PSISDiagnostic:
    r"""Pareto-smoothed importance sampling from :math:`q`: :math:`\hat k` and corrected
    moments.

    Draw :math:`z_s \sim q` and form the log-weights :math:`\log r_s = \log p(x, z_s) -
    \log q(z_s)`. The largest :math:`M = \min(S/5, 3\sqrt S)` weights are replaced by the
    quantiles of a generalized Pareto distribution fitted to them :cite:p:`vehtari2024pareto`
    (ArviZ's ``psislw``, with relative efficiency 1 for independent draws). The fitted shape
    :math:`\hat k` estimates how heavy the weights' tail is: the weights have
    :math:`1/k` finite moments, so for :math:`k < 1/2` their variance is finite and plain
    importance sampling converges at the usual rate. :cite:t:`yao2018yes` read
    :math:`\hat k` as a diagnostic of the VI fit itself: below 0.5 (or 0.7, with smoothing),
    :math:`q` is close enough to :math:`p` for importance-weighted estimates to be
    reliable; above 0.7, neither the VI estimates nor their correction can be trusted.
    With :math:`S` draws the threshold is :math:`\min(1 - 1/\log_{10} S, 0.7)`.

    The corrected expectations use the smoothed, self-normalized weights :math:`w_s`:

    .. math::

        \hat{\mathbb E}[z] = \sum_s w_s z_s, \qquad \widehat{\mathrm{sd}}[z] = \Big(\sum_s
        w_s \big(z_s - \hat{\mathbb E}[z]\big)^2\Big)^{1/2},

    consistent for the posterior's moments whatever :math:`q` is (when they exist and
    :math:`q`'s tails are heavy enough), unlike :math:`q`'s own moments.

    Parameters
    ----------
    log_joint : callable
        :math:`\log p(x, z)` (unnormalized) for ``z`` of shape ``[S, *event]``, shape exactly
        ``[S]`` and ``surrogate``'s dtype.
    surrogate : tfp.distributions.Distribution
        The proposal :math:`q`, typically a fitted VI approximation; batch shape ``[]``,
        event shape ``[]`` or ``[D]``.
    num_samples : int
        :math:`S`, at least 100 (the tail fit needs at least 20 weights); a few thousand
        give a stable :math:`\hat k`.
    seed : int or Tensor of shape [2]
        Stateless seed of the draws.

    Returns
    -------
    PSISDiagnostic
        :math:`\hat k`, its threshold for this :math:`S`, the smoothed log-weights, the
        draws, the PSIS-corrected ``mean`` and ``sd`` (event shape), the weights'
        effective sample size, the PSIS estimate of :math:`\log p(x)` and the ELBO.

    Raises
    ------
    TypeError, ValueError
        For a surrogate that is not a continuous TFP distribution with batch shape ``[]``
        and event shape ``[]`` or ``[D]``, fewer than 100 samples, a bad seed, a
        ``log_joint`` that fails (for example on another event shape) or returns another
        shape or dtype, or log-weights that are NaN or :math:`+\infty`.

    Notes
    -----
    Taught in :doc:`/book/chapters/10_checking_vi`. The PSIS implementation is ArviZ's
    (0.x API, ``arviz.psislw``; ArviZ 1.x moves it to ``arviz_stats`` and needs Python 3.12).
    """
    built = _check_surrogate_event(surrogate)
    num_samples = check_min_count(
        num_samples,
        "num_samples",
        _MIN_PSIS_SAMPLES,
        "k-hat is fitted to the largest min(S/5, 3 sqrt(S)) weights, 20 at S = 100",
    )
    check_sample_budget(num_samples, built)
    seed = sanitize_seed(seed)
    z = surrogate.sample(num_samples, seed=seed)
    log_p = call_log_density(log_joint, z, "log_joint", [num_samples], built.dtype, "surrogate")
    raw = np.asarray(log_p - surrogate.log_prob(z), dtype=np.float64)
    if np.any(np.isnan(raw)) or np.any(raw == np.inf):
        raise ValueError(
            "`log_joint` minus the surrogate's log-density is NaN or +inf at some draws: "
            "`log_joint` must be finite (or -inf outside the support) wherever q puts mass."
        )
    finite = raw[np.isfinite(raw)]
    if finite.size == 0:
        raise ValueError(
            "`log_joint` is -inf at every draw of `surrogate`: q puts no mass on the "
            "posterior's support. Build the surrogate on that support (a `bijector`)."
        )
    # Constant log-weights (q is the posterior, up to round-off) have no tail to fit.
    tolerance = default_tolerance(built.dtype, 1e-9, 1e-4) * max(1.0, abs(np.median(finite)))
    if np.ptp(finite) <= tolerance:
        smoothed, khat = raw, -np.inf
    else:
        smoothed, khat = _arviz().psislw(raw, reff=1.0, normalize=False)
    log_total = float(tfp.math.reduce_logmeanexp(smoothed))
    log_weights = smoothed - (log_total + np.log(num_samples))
    weights = np.exp(log_weights)
    draws = np.asarray(z, dtype=np.float64)
    flat = draws.reshape(num_samples, -1)
    mean = weights @ flat
    sd = np.sqrt(weights @ (flat - mean) ** 2)
    event = draws.shape[1:]
    return PSISDiagnostic(
        khat=float(khat),
        khat_threshold=float(min(1 - 1 / np.log10(num_samples), 0.7)),
        log_weights=log_weights,
        draws=draws,
        mean=mean.reshape(event),
        sd=sd.reshape(event),
        ess=float(1 / np.sum(weights**2)),
        log_evidence=log_total,
        elbo=float(np.mean(raw)),
    )


# ---------------------------------------------------------------------------------------
# Comparing posteriors
# ---------------------------------------------------------------------------------------


class PosteriorComparison(NamedTuple):
    """Result of :func:`compare_posteriors`; the per-approximation fields map each
    approximation's name to an array of shape [D]."""

    coordinates: tuple
    """The names of the D coordinates (rows of the table)."""
    reference_mean: np.ndarray
    """The reference posterior means."""
    reference_sd: np.ndarray
    """The reference posterior standard deviations."""
    mean: dict
    """Each approximation's means."""
    sd: dict
    """Each approximation's standard deviations."""
    mean_error: dict
    """The error in posterior sds, (mean - reference mean) / reference sd."""
    sd_ratio: dict
    """The ratio sd / reference sd (below 1 when the approximation is too narrow)."""
    table: str
    """The comparison as a fixed-width text table, with a last row of the largest
    absolute mean error and the smallest and largest sd ratio of each approximation."""


def _moments_of_distribution(value, name, num_samples, seed):
    check_distribution(value, name)
    built = _check_surrogate_event(value, name)
    try:
        mean, sd = np.asarray(built.mean()), np.asarray(built.stddev())
        if np.all(np.isfinite(mean)) and np.all(np.isfinite(sd)):
            return mean, sd
    except NotImplementedError:  # a flow, or a transformed distribution: sample it
        pass
    draws = np.asarray(value.sample(num_samples, seed=seed), dtype=np.float64)
    return draws.mean(axis=0), draws.std(axis=0, ddof=1)


def _summary(value, name, num_samples, seed):
    """``(mean, sd)`` as float64 vectors from any of the accepted summaries."""
    from vicourse.targets import Target  # noqa: PLC0415 (targets imports nothing from here)

    if isinstance(value, (Target, PSISDiagnostic)):
        mean, sd = value.mean, value.sd
    elif isinstance(value, ReferencePosterior):
        mean = np.concatenate([np.ravel(m) for m in value.mean.values()])
        sd = np.concatenate([np.ravel(s) for s in value.sd.values()])
    elif built_distribution(value) is not None:
        mean, sd = _moments_of_distribution(value, name, num_samples, seed)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        mean = as_float_tensor(value[0], name, tf.float64)
        sd = as_float_tensor(value[1], name, tf.float64)
    else:
        raise TypeError(
            f"`{name}` must be a (mean, sd) pair, a vicourse Target, ReferencePosterior or "
            f"PSISDiagnostic, or a TFP distribution, got {type(value).__name__}."
        )
    mean = np.ravel(np.asarray(mean, dtype=np.float64))
    sd = np.ravel(np.asarray(sd, dtype=np.float64))
    if mean.size == 0 or mean.shape != sd.shape:
        raise ValueError(
            f"`{name}` must give a mean and an sd of the same length D >= 1, got lengths "
            f"{mean.size} and {sd.size}."
        )
    check_finite(mean, name)
    check_positive(sd, name, "it is a posterior standard deviation")
    return mean, sd


def _format_table(coordinates, ref_mean, ref_sd, names, errors, ratios) -> str:
    width = max(16, *(len(n) + 2 for n in names))
    head = f"{'':>10} {'reference':>18}" + "".join(f"{n:>{width}}" for n in names)
    sub = f"{'':>10} {'mean (sd)':>18}" + "".join(f"{'err / sd ratio':>{width}}" for _ in names)
    lines = [head, sub]
    for i, label in enumerate(coordinates):
        cells = "".join(f"{f'{errors[n][i]:+.2f} / {ratios[n][i]:.2f}':>{width}}" for n in names)
        reference = f"{ref_mean[i]:.3g} ({ref_sd[i]:.3g})"
        lines.append(f"{str(label)[:10]:>10} {reference:>18}" + cells)
    worst = "".join(
        f"{f'{np.max(np.abs(errors[n])):.2f} / {np.min(ratios[n]):.2f}':>{width}}" for n in names
    )
    lines.append(f"{'worst':>10} {'max|err|/min ratio':>18}" + worst)
    return "\n".join(lines)


def compare_posteriors(
    reference,
    approximations: Mapping,
    *,
    coordinates=None,
    num_samples: int = 10_000,
    seed=None,
) -> PosteriorComparison:
    r"""Means and standard deviations of approximations against a reference posterior.

    For each coordinate :math:`i` and approximation :math:`q`, the error of the mean in
    units of the reference's posterior sd and the ratio of the sds,

    .. math::

        e_i = \frac{\mathbb E_q[z_i] - \mathbb E_p[z_i]}{\mathrm{sd}_p[z_i]}, \qquad
        r_i = \frac{\mathrm{sd}_q[z_i]}{\mathrm{sd}_p[z_i]},

    so that :math:`|e_i| < 0.1` says the mean is right to a tenth of the posterior's width
    whatever the units, and :math:`r_i < 1` that :math:`q` is too narrow (mean field's
    usual error, chapter 4). A reference from MCMC carries its own Monte Carlo error,
    :math:`1/\sqrt{\mathrm{ESS}}` in these units :cite:p:`yao2018yes`.

    Parameters
    ----------
    reference : Target, ReferencePosterior, PSISDiagnostic, distribution or (mean, sd)
        The reference posterior: a :class:`vicourse.targets.Target` (exact moments), a
        :class:`ReferencePosterior` (its variables' means and sds flattened and
        concatenated in the order of its dicts), a :class:`PSISDiagnostic`, a TFP
        distribution (exact moments where TFP has them, else ``num_samples`` draws), or a
        pair of arrays.
    approximations : dict
        Names (str) to summaries of any of the same kinds, each of the reference's length.
    coordinates : sequence of str, optional
        Row labels, one per coordinate; default ``z1, z2, ...`` (a ``Target``'s names
        when the reference is one).
    num_samples : int, default 10_000
        Draws for distributions whose moments TFP does not know (flows).
    seed : int or Tensor of shape [2], optional
        Stateless seed of those draws.

    Returns
    -------
    PosteriorComparison
        The reference's and each approximation's means and sds, the errors, the sd ratios,
        and ``table``, the text table.

    Raises
    ------
    TypeError, ValueError
        For an unsupported summary, an empty or non-dict ``approximations``, summaries of
        different lengths, non-finite means, non-positive sds, ``coordinates`` of another
        length, or a bad count or seed.

    Notes
    -----
    Taught in :doc:`/book/chapters/10_checking_vi`.
    """
    num_samples = check_count(num_samples, "num_samples", minimum=2)
    seeds = tfp.random.split_seed(sanitize_seed(seed), n=1 + len(approximations or {}))
    ref_mean, ref_sd = _summary(reference, "reference", num_samples, seeds[0])
    if not isinstance(approximations, Mapping) or not approximations:
        raise TypeError(
            "`approximations` must be a non-empty dict from names to summaries, got "
            f"{type(approximations).__name__}."
        )
    means, sds = {}, {}
    for k, (label, value) in enumerate(approximations.items()):
        if not isinstance(label, str):
            raise TypeError(f"`approximations` keys must be names (str), got {label!r}.")
        mean, sd = _summary(value, "approximations", num_samples, seeds[1 + k])
        if mean.shape != ref_mean.shape:
            raise ValueError(
                f"`approximations`[{label!r}] has {mean.size} coordinates and `reference` "
                f"{ref_mean.size}: compare posteriors over the same variables."
            )
        means[label], sds[label] = mean, sd
    coordinates = _coordinates(coordinates, reference, ref_mean.size)
    errors = {k: (means[k] - ref_mean) / ref_sd for k in means}
    ratios = {k: sds[k] / ref_sd for k in means}
    table = _format_table(coordinates, ref_mean, ref_sd, list(means), errors, ratios)
    return PosteriorComparison(coordinates, ref_mean, ref_sd, means, sds, errors, ratios, table)


def _coordinates(coordinates, reference, dim) -> tuple:
    if coordinates is None:
        names = getattr(reference, "coordinates", None)
        if isinstance(names, tuple) and len(names) == dim:
            return names
        return tuple(f"z{i + 1}" for i in range(dim))
    if isinstance(coordinates, (str, bytes)) or not hasattr(coordinates, "__len__"):
        raise TypeError(
            f"`coordinates` must be a list of {dim} names, got {type(coordinates).__name__}."
        )
    if len(coordinates) != dim:
        raise ValueError(
            f"`coordinates` must name the {dim} coordinates, got {len(coordinates)} names."
        )
    return tuple(str(c) for c in coordinates)
