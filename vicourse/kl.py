r"""The Kullback–Leibler divergence, and Gaussian fits under its two directions.

Chapter 2 (:doc:`/book/chapters/02_kl_divergence`) uses these to show that
:math:`\mathrm{KL}` is non-negative and asymmetric, and that minimizing the reverse
divergence :math:`\mathrm{KL}(q\,\|\,p)` seeks a mode while minimizing the forward divergence
:math:`\mathrm{KL}(p\,\|\,q)` covers the mass.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from vicourse._seed import sanitize_seed
from vicourse._validation import check_distribution, check_positive_int, mean_and_stderr

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "GaussianFit",
    "KLEstimate",
    "fit_gaussian",
    "fit_reverse_kl",
    "kl_divergence",
]

DEFAULT_NUM_SAMPLES = 10_000
"""Monte Carlo draws used by :func:`kl_divergence` when ``num_samples`` is not given."""

_METHODS = ("auto", "analytic", "monte_carlo")
_DIVERGENCES = ("reverse", "forward")


class KLEstimate(NamedTuple):
    """Result of :func:`kl_divergence`."""

    value: tf.Tensor
    """The divergence (analytic) or its Monte Carlo estimate."""
    stderr: tf.Tensor
    """Standard error of ``value``: exactly 0 for the analytic divergence."""


def _check_same_event_shape(q, p) -> None:
    if q.event_shape.is_fully_defined() and p.event_shape.is_fully_defined():
        if q.event_shape != p.event_shape:
            raise ValueError(
                f"`q` and `p` must have the same event shape, got {q.event_shape.as_list()} "
                f"and {p.event_shape.as_list()}. Compare distributions over the same space."
            )


def _check_same_dtype(q, p, names=("q", "p")) -> None:
    if q.dtype != p.dtype:
        raise TypeError(
            f"`{names[0]}` and `{names[1]}` must have the same dtype, got {q.dtype.name} and "
            f"{p.dtype.name}. Build both from float64 (or both from float32) parameters."
        )


def _analytic_kl(q, p):
    """TFP's registered KL, or ``None`` when no formula is registered for the pair."""
    try:
        return tfd.kl_divergence(q, p)
    except NotImplementedError:
        return None


def _monte_carlo_kl(q, p, num_samples: int, seed) -> KLEstimate:
    z = q.sample(num_samples, seed=sanitize_seed(seed))
    return KLEstimate(*mean_and_stderr(q.log_prob(z) - p.log_prob(z)))


def kl_divergence(
    q: tfd.Distribution,
    p: tfd.Distribution,
    method: Literal["auto", "analytic", "monte_carlo"] = "auto",
    num_samples: int | None = None,
    seed=None,
) -> KLEstimate:
    r"""The Kullback–Leibler divergence :math:`\mathrm{KL}(q\,\|\,p)`, analytic or Monte Carlo.

    .. math::

        \mathrm{KL}(q\,\|\,p) = \mathbb E_{q}\left[\log q(z) - \log p(z)\right]
        \approx \frac1S \sum_{s=1}^S \big(\log q(z_s) - \log p(z_s)\big),
        \quad z_s \sim q.

    The analytic value comes from :func:`tfp.distributions.kl_divergence`, which knows
    closed forms for many pairs (normal–normal, multivariate normal, gamma, ...). The Monte
    Carlo estimate is unbiased and its standard error is :math:`\mathrm{sd}/\sqrt S` of
    the log-ratios :cite:p:`blei2017variational`.

    Parameters
    ----------
    q, p : tfp.distributions.Distribution
        Distributions with the same event shape; the expectation is under ``q``.
    method : {"auto", "analytic", "monte_carlo"}, default "auto"
        ``"auto"`` uses the analytic divergence when TFP has one registered for the pair
        and the Monte Carlo estimate otherwise. ``"analytic"`` raises if there is none;
        ``"monte_carlo"`` always samples.
    num_samples : int, optional
        Monte Carlo draws; defaults to :data:`DEFAULT_NUM_SAMPLES` (ignored when analytic).
    seed : int or Tensor of shape [2], optional
        Stateless seed for the Monte Carlo estimate; the same seed gives the same value.

    Returns
    -------
    KLEstimate
        ``(value, stderr)`` of the distributions' batch shape; ``stderr`` is 0 when analytic.

    Raises
    ------
    TypeError
        If ``q`` or ``p`` is not a TFP distribution.
    ValueError
        If the event shapes differ, ``method`` is unknown, ``num_samples < 2``, or
        ``method="analytic"`` and TFP has no formula for the pair.

    Notes
    -----
    Taught in :doc:`/book/chapters/02_kl_divergence`.

    Examples
    --------
    >>> kl_divergence(tfd.Normal(0., 1.), tfd.Normal(1., 1.)).value  # (0 - 1)^2 / 2
    <tf.Tensor: shape=(), dtype=float32, numpy=0.5>
    """
    check_distribution(q, "q")
    check_distribution(p, "p")
    _check_same_event_shape(q, p)
    _check_same_dtype(q, p)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    if num_samples is None:
        num_samples = DEFAULT_NUM_SAMPLES
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_samples < 2:
        raise ValueError("`num_samples` must be at least 2 to estimate a standard error.")
    if method != "monte_carlo":
        value = _analytic_kl(q, p)
        if value is not None:
            return KLEstimate(value, tf.zeros_like(value))
        if method == "analytic":
            raise ValueError(
                f"TFP has no analytic KL for ({type(q).__name__}, {type(p).__name__}); "
                "use method='monte_carlo' or method='auto'."
            )
    return _monte_carlo_kl(q, p, num_samples, seed)


class GaussianFit(NamedTuple):
    """Result of :func:`fit_gaussian` and :func:`fit_reverse_kl`."""

    distribution: tfd.Distribution
    """The fitted distribution, with its parameters as constants."""
    trace: tf.Tensor
    """The objective at each optimization step (reverse), or its final value (forward)."""
    divergence: str
    """``"reverse"`` or ``"forward"``."""


def _reverse_kl_loss(surrogate, target, num_samples):
    """A function ``seed -> `` Monte Carlo :math:`\\mathrm{KL}(q\\|p)` up to nothing dropped."""

    def loss(seed):
        z = surrogate.sample(num_samples, seed=seed)
        cross = -tf.reduce_mean(target.log_prob(z))
        try:
            entropy = surrogate.entropy()  # exact where TFP has it: lower variance
        except NotImplementedError:
            entropy = -tf.reduce_mean(surrogate.log_prob(z))
        return cross - entropy

    return loss


def fit_reverse_kl(
    target: tfd.Distribution,
    surrogate: tfd.Distribution,
    *,
    num_steps: int = 1000,
    learning_rate: float = 0.05,
    num_samples: int = 64,
    seed=None,
    jit_compile: bool = True,
) -> GaussianFit:
    r"""Minimize :math:`\mathrm{KL}(q\,\|\,p)` over the trainable variables of ``surrogate``.

    Each step draws ``num_samples`` reparameterized samples :math:`z = g(\varepsilon; \phi)`
    from :math:`q_\phi`, forms :math:`-\mathbb E_q[\log p(z)] - H[q]` (the entropy analytic
    where TFP has it), and takes an Adam step on its gradient. The learning rate decays
    along a cosine to 1% of ``learning_rate``, so the last iterate is not left jittering by
    the gradient noise. The loop runs compiled with
    :func:`tfp.math.minimize` (XLA when ``jit_compile=True``).

    Parameters
    ----------
    target : tfp.distributions.Distribution
        The normalized target :math:`p`; it needs ``log_prob``.
    surrogate : tfp.distributions.Distribution
        The family :math:`q_\phi`, built on ``tf.Variable`` or
        :class:`tfp.util.TransformedVariable` parameters, with reparameterized sampling
        (for a mixture use ``tfd.MixtureSameFamily(..., reparameterize=True)``).
    num_steps, learning_rate, num_samples : int, float, int
        Adam steps, its initial learning rate, and Monte Carlo draws per step.
    seed : int or Tensor of shape [2], optional
        Stateless seed; the same seed gives the same fit.
    jit_compile : bool, default True
        Compile the loop with XLA.

    Returns
    -------
    GaussianFit
        The fitted ``surrogate`` (its variables now hold the optimum), the per-step trace of
        the Monte Carlo :math:`\mathrm{KL}(q\,\|\,p)`, and ``divergence="reverse"``.

    Raises
    ------
    TypeError, ValueError
        On a non-distribution, mismatched event shapes, a surrogate without trainable
        variables or reparameterized sampling, or non-positive step counts.

    Notes
    -----
    Reparameterized gradients of the reverse divergence follow
    :cite:t:`kingma2014autoencoding`; taught in :doc:`/book/chapters/02_kl_divergence`.
    """
    check_distribution(target, "target")
    check_distribution(surrogate, "surrogate")
    _check_same_event_shape(surrogate, target)
    num_steps = check_positive_int(num_steps, "num_steps")
    num_samples = check_positive_int(num_samples, "num_samples")
    if not surrogate.trainable_variables:
        raise ValueError(
            "`surrogate` has no trainable variables; build it on tf.Variable or "
            "tfp.util.TransformedVariable parameters."
        )
    if surrogate.reparameterization_type != tfd.FULLY_REPARAMETERIZED:
        raise ValueError(
            f"`surrogate` ({type(surrogate).__name__}) does not sample with "
            "reparameterization, so the gradient would ignore the samples' dependence on the "
            "parameters. Use a reparameterized family (for a mixture, reparameterize=True)."
        )
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive, got {learning_rate}.")
    trace = tfp.math.minimize(
        _reverse_kl_loss(surrogate, target, num_samples),
        num_steps=num_steps,
        optimizer=tf_keras.optimizers.Adam(
            tf_keras.optimizers.schedules.CosineDecay(learning_rate, num_steps, alpha=0.01)
        ),
        trainable_variables=surrogate.trainable_variables,
        jit_compile=jit_compile,
        seed=sanitize_seed(seed),
    )
    return GaussianFit(surrogate, trace, "reverse")


def _exact_moments(target):
    """Mean and (co)variance from TFP's formulas, or ``None`` if it has none."""
    try:
        mean = target.mean()
        if target.event_shape.rank == 0:
            return mean, target.variance()
        return mean, target.covariance()
    except NotImplementedError:
        return None


def _sample_moments(target, num_samples, seed):
    z = target.sample(num_samples, seed=seed)
    mean = tf.reduce_mean(z, axis=0)
    centred = z - mean
    if target.event_shape.rank == 0:
        return mean, tf.reduce_mean(tf.square(centred), axis=0)
    return mean, tf.einsum("si,sj->ij", centred, centred) / tf.cast(num_samples, z.dtype)


def _gaussian(mean, cov, event_rank):
    if event_rank == 0:
        return tfd.Normal(mean, tf.sqrt(cov))
    return tfd.MultivariateNormalTriL(mean, tf.linalg.cholesky(cov))


def _gaussian_surrogate(init_loc, init_scale, event_rank):
    loc = tf.Variable(init_loc, name="loc")
    if event_rank == 0:
        scale = tfp.util.TransformedVariable(init_scale, tfb.Softplus(), name="scale")
        return tfd.Normal(loc, scale)
    scale_tril = tfp.util.TransformedVariable(
        init_scale,
        tfb.FillScaleTriL(diag_shift=tf.constant(1e-6, init_scale.dtype)),
        name="scale_tril",
    )
    return tfd.MultivariateNormalTriL(loc, scale_tril)


def _initial_moments(target, init_loc, init_scale, num_samples, seed):
    """Start at ``init_loc`` (default: the target's mean) with a scale ``init_scale`` times
    the target's standard deviation (its Cholesky factor in D dimensions)."""
    moments = _exact_moments(target) or _sample_moments(target, num_samples, seed)
    loc = moments[0] if init_loc is None else tf.cast(init_loc, target.dtype)
    factor = tf.cast(init_scale, target.dtype)
    if target.event_shape.rank == 0:
        return loc, factor * tf.sqrt(moments[1])
    return loc, factor * tf.linalg.cholesky(moments[1])


def fit_gaussian(
    target: tfd.Distribution,
    divergence: Literal["reverse", "forward"],
    *,
    init_loc=None,
    init_scale: float = 0.25,
    num_steps: int = 1000,
    learning_rate: float = 0.05,
    num_samples: int = 64,
    num_moment_samples: int = 100_000,
    seed=None,
) -> GaussianFit:
    r"""Fit a Gaussian :math:`q` to ``target`` by minimizing a KL divergence.

    ``divergence="reverse"`` minimizes :math:`\mathrm{KL}(q\,\|\,p)` with reparameterized
    stochastic gradients (:func:`fit_reverse_kl`): mode-seeking. ``divergence="forward"``
    minimizes :math:`\mathrm{KL}(p\,\|\,q)`, which for a Gaussian family is solved by
    moment matching, :math:`q = \mathcal N(\mathbb E_p[z], \mathrm{Cov}_p[z])`
    :cite:p:`bishop2006pattern` (§10.7): mass-covering. The moments are exact when TFP
    knows them (mixtures, for instance) and Monte Carlo estimates otherwise.

    Parameters
    ----------
    target : tfp.distributions.Distribution
        The normalized target :math:`p`, with a scalar batch shape and event shape ``[]``
        (1-D, fitted with ``tfd.Normal``) or ``[D]`` (full covariance,
        ``tfd.MultivariateNormalTriL``).
    divergence : {"reverse", "forward"}
        Which direction of the divergence to minimize.
    init_loc : array_like, optional
        Starting mean for the reverse fit; defaults to the target's mean.
    init_scale : float, default 0.25
        Starting scale for the reverse fit, as a multiple of the target's standard deviation
        (its Cholesky factor in D dimensions). Starting narrow lets the fit settle into the
        mode nearest ``init_loc``; a start as wide as the target can straddle several modes
        for many steps.
    num_steps, learning_rate, num_samples : int, float, int
        Adam settings for the reverse fit.
    num_moment_samples : int, default 100_000
        Draws for Monte Carlo moments when the target's are not known exactly.
    seed : int or Tensor of shape [2], optional
        Stateless seed; the same seed gives the same fit.

    Returns
    -------
    GaussianFit
        The fitted Gaussian, the objective's trace, and the divergence used. For the forward
        fit the trace holds one value, the Monte Carlo :math:`\mathrm{KL}(p\,\|\,q)` at the
        moment-matched solution.

    Raises
    ------
    TypeError
        If ``target`` is not a TFP distribution.
    ValueError
        If ``divergence`` is unknown, the target is batched or its event rank exceeds 1.

    Notes
    -----
    Taught in :doc:`/book/chapters/02_kl_divergence`.
    """
    check_distribution(target, "target")
    if divergence not in _DIVERGENCES:
        raise ValueError(
            f"`divergence` must be 'reverse' (KL(q||p), mode-seeking) or 'forward' "
            f"(KL(p||q), mass-covering), got {divergence!r}."
        )
    if target.batch_shape.rank != 0 or target.event_shape.rank not in (0, 1):
        raise ValueError(
            "`target` must have batch shape [] and event shape [] or [D], got batch shape "
            f"{target.batch_shape} and event shape {target.event_shape}. Fit one target at "
            "a time; use tfd.Independent to turn a batch into an event."
        )
    event_rank = target.event_shape.rank
    moment_seed, fit_seed, kl_seed = tfp.random.split_seed(sanitize_seed(seed), n=3)
    if divergence == "forward":
        moments = _exact_moments(target)
        if moments is None:
            moments = _sample_moments(target, num_moment_samples, moment_seed)
        fitted = _gaussian(*moments, event_rank)
        forward_kl = _monte_carlo_kl(target, fitted, num_moment_samples, kl_seed).value
        return GaussianFit(fitted, forward_kl[tf.newaxis], "forward")
    if not init_scale > 0:
        raise ValueError(f"`init_scale` must be positive, got {init_scale}.")
    loc, scale = _initial_moments(target, init_loc, init_scale, num_moment_samples, moment_seed)
    surrogate = _gaussian_surrogate(loc, scale, event_rank)
    result = fit_reverse_kl(
        target,
        surrogate,
        num_steps=num_steps,
        learning_rate=learning_rate,
        num_samples=num_samples,
        seed=fit_seed,
    )
    frozen = _gaussian(
        tf.convert_to_tensor(surrogate.mean()),
        tf.convert_to_tensor(surrogate.variance() if event_rank == 0 else surrogate.covariance()),
        event_rank,
    )
    return GaussianFit(frozen, result.trace, "reverse")
