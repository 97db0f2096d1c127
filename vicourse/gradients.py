r"""Monte Carlo gradients of the ELBO, and the general-purpose VI loop.

Chapter 6 (:doc:`/book/chapters/06_reparameterization`) derives the estimators that
:func:`elbo_gradient` implements and measures their variance:

- ``"reparameterization"``: :math:`z = g(\varepsilon; \lambda)` with :math:`\varepsilon \sim
  p(\varepsilon)`, and the gradient of :math:`\log p(x, z) - \log q_\lambda(z)` through the
  sample :cite:p:`kingma2014autoencoding,rezende2014stochastic,titsias2014doubly`;
- ``"path_derivative"``: the same without the score term
  :math:`\nabla_\lambda \log q_\lambda(z)|_{z \text{ fixed}}`, whose expectation is zero
  ("sticking the landing", :cite:t:`roeder2017sticking`);
- ``"score_function"``: :math:`\nabla_\lambda \log q_\lambda(z)\,(\log p(x, z) - \log
  q_\lambda(z))`, the log-derivative (REINFORCE) estimator, which works for any :math:`q`,
  discrete ones included :cite:p:`williams1992simple,ranganath2014black`;
- ``"stratified"``, for a mixture :math:`q = \sum_k w_k q_k`: one reparameterized draw
  from *every* component, weighted by :math:`w_k`, which makes the estimate differentiable
  in the weights :cite:p:`morningstar2021automatic` (chapter 9,
  :doc:`/book/chapters/09_richer_families`).

Chapter 7 (:doc:`/book/chapters/07_bbvi`) makes the score function usable: control
variates (``control_variate=True``), Rao-Blackwellization for a mean-field :math:`q`
(``blanket_log_prob=...``), and ``"mixed"``, the score function for the discrete factors of
:math:`q` and reparameterization for the continuous ones :cite:p:`ranganath2014black`.

:func:`fit_vi` maximizes the ELBO with any of them, compiled once, full-data or on
minibatches (doubly stochastic VI, :cite:t:`titsias2014doubly`). Chapters 7–10 reuse it.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vicourse import _logging  # noqa: F401 (quiets the expected vectorized_map notes)
from vicourse._optim import adam_init, adam_update, cosine_learning_rate, run_chunked
from vicourse._score import (
    components,
    describe_factors,
    leave_one_out_control,
    score_gradients,
    score_terms,
    stop_score_parts,
)
from vicourse._seed import sanitize_seed
from vicourse._stratified import check_stratifiable, stratified_elbo_terms
from vicourse._validation import (
    as_float_tensor,
    call_log_density,
    check_bool,
    check_choice,
    check_count,
    check_distribution,
    check_finite,
    check_mean_field,
    check_real,
    check_sample_budget,
    check_scalar_batch,
)

tfd = tfp.distributions

__all__ = ["ESTIMATORS", "ELBOGradient", "VIFit", "elbo_gradient", "fit_vi"]

ESTIMATORS = ("reparameterization", "path_derivative", "score_function", "mixed", "stratified")
"""The gradient estimators of :func:`elbo_gradient` and :func:`fit_vi`. ``"mixed"`` uses
the score function for the parts of a mean-field :math:`q` that are not reparameterized
(discrete ones) and reparameterization for the others (chapter 7); ``"stratified"``
applies to mixtures only (chapter 9)."""

_REPARAMETERIZED = ("reparameterization", "path_derivative")

Estimator = Literal[
    "reparameterization", "path_derivative", "score_function", "mixed", "stratified"
]


_METHOD_CALLERS: dict[str, Callable] = {}


def _traceable(fn):
    """``(function, owner)`` such that ``function(owner, *args)`` (or ``function(*args)`` when
    ``owner`` is None) calls ``fn``.

    ``tf.function`` keys a Python callable by a weak reference, and ``target.log_prob`` is a
    new bound-method object at every attribute access, so passing it directly would retrace
    on every call. A method of a TFP distribution (a composite tensor) is therefore split
    into its owner, passed as a traced argument like any distribution, and one stable
    caller per method name.
    """
    owner = getattr(fn, "__self__", None)
    if inspect.ismethod(fn) and isinstance(owner, tf.__internal__.CompositeTensor):
        name = fn.__func__.__name__
        if name not in _METHOD_CALLERS:
            _METHOD_CALLERS[name] = lambda obj, *args: getattr(obj, name)(*args)
        return _METHOD_CALLERS[name], owner
    return fn, None


def _evaluate(fn, owner, *args):
    return fn(*args) if owner is None else fn(owner, *args)


# Steps per compiled chunk of fit_vi: the trace buffer has this fixed length.
_CHUNK_STEPS = 1000


class ELBOGradient(NamedTuple):
    """Result of :func:`elbo_gradient`."""

    gradients: tuple
    """The Monte Carlo gradient of the ELBO, one tensor per trainable variable, in the
    order of ``surrogate.trainable_variables``: the mean of the per-sample gradients."""
    variances: tuple | None
    """Per-element variance of a *single-sample* estimate (unbiased, over the
    ``num_samples`` per-sample gradients); ``None`` when ``num_samples == 1``. The variance
    of ``gradients`` itself is this divided by ``num_samples``. (With control variates the
    per-sample terms share the leave-one-out coefficients, so this holds up to a relative
    :math:`O(1/S)`.)"""
    elbo: tf.Tensor
    r"""The Monte Carlo ELBO, mean of :math:`\log p(x, z_s) - \log q(z_s)`."""
    per_sample: tuple
    """The per-sample gradients, one tensor of shape ``[S, *variable.shape]`` per
    variable (what chapters 6 and 7 plot)."""


class VIFit(NamedTuple):
    """Result of :func:`fit_vi`."""

    surrogate: tfd.Distribution
    """The surrogate, its variables now at the fitted values (updated in place)."""
    elbo_trace: tf.Tensor
    """The Monte Carlo ELBO estimate at each step, shape ``[num_steps]``, taken before that
    step's update; with minibatches, the unbiased minibatch estimate."""


# ---------------------------------------------------------------------------------------
# The estimators: one surrogate objective each, whose gradient is the estimator
# ---------------------------------------------------------------------------------------


def _objectives(log_p, surrogate, z, estimator):
    r"""Per-sample ``(value, surrogate objective)``: ``value`` is :math:`\log p - \log q`, and
    the gradient of the surrogate objective is that sample's gradient estimate."""
    if estimator == "score_function":
        log_q = surrogate.log_prob(_held(z))
        value = tf.stop_gradient(log_p - log_q)
        # grad of log q(z) * f(z), with f and z held fixed: the score times f.
        return value, log_q * value
    log_q = surrogate.log_prob(z)
    value = log_p - log_q
    if estimator == "reparameterization":
        return value, value
    # path derivative: add log q_lambda(z) at a fixed z, which cancels the value of -log q
    # and subtracts its score term from the gradient (Roeder et al. 2017, eq. 8).
    return value, value + surrogate.log_prob(_held(z))


def _held(z):
    """``z`` (a tensor, or a joint sample's structure of them) without gradient."""
    return tf.nest.map_structure(tf.stop_gradient, z)


def _log_dtype(surrogate, z):
    """The float dtype of log-densities under ``surrogate`` (a discrete q samples ints)."""
    return surrogate.log_prob(z).dtype


def _float_dtype(surrogate) -> tf.DType:
    """The float dtype of ``surrogate``'s log-densities, known without sampling: its first
    float part (a joint q may mix float and integer parts), else its variables' dtype."""
    for dtype in tf.nest.flatten(surrogate.dtype):
        if tf.as_dtype(dtype).is_floating:
            return tf.as_dtype(dtype)
    return tf.as_dtype(surrogate.trainable_variables[0].dtype)


def _fully_reparameterized(surrogate) -> bool:
    """Whether every part of ``surrogate`` (a joint one has one type per part) is."""
    return all(
        kind == tfd.FULLY_REPARAMETERIZED
        for kind in tf.nest.flatten(surrogate.reparameterization_type)
    )


def _check_estimator(estimator, surrogate):
    check_choice(estimator, "estimator", ESTIMATORS)
    if estimator == "stratified":
        check_stratifiable(surrogate)
        return
    if estimator in _REPARAMETERIZED and not _fully_reparameterized(surrogate):
        raise ValueError(
            f"estimator={estimator!r} needs a reparameterized `surrogate`, but "
            f"{type(surrogate).__name__} is not (a discrete q, or a mixture built without "
            "reparameterize=True). Use estimator='score_function', which works for any q, or "
            "estimator='mixed' for a mean-field q with discrete and continuous parts."
        )
    if estimator == "mixed":
        check_mean_field(surrogate, "surrogate")


def _check_score_options(estimator, surrogate, num_samples, control_variate, blanket_log_prob):
    """Validate ``control_variate`` and ``blanket_log_prob`` against the estimator and q;
    return the static (control_variate, rao_blackwell) flags."""
    control_variate = check_bool(control_variate, "control_variate")
    rao_blackwell = blanket_log_prob is not None
    if rao_blackwell and not callable(blanket_log_prob):
        raise TypeError(
            "`blanket_log_prob` must be callable (z -> [S, J] log-density terms, one column "
            f"per score-function factor), got {type(blanket_log_prob).__name__}."
        )
    if not (control_variate or rao_blackwell):
        return control_variate, rao_blackwell
    option = "`control_variate`" if control_variate else "`blanket_log_prob`"
    if estimator == "stratified":
        raise ValueError(
            f"{option} reduces the variance of the score-function estimator, but "
            "estimator='stratified' reparameterizes every component of the mixture and has "
            "no score-function term. Leave it out."
        )
    if estimator in _REPARAMETERIZED:
        raise ValueError(
            f"{option} reduces the variance of the score-function estimator, but "
            f"`estimator` is {estimator!r}, which has no score-function term to apply it to. Use "
            "estimator='score_function' or 'mixed'; for a reparameterized q, "
            "estimator='path_derivative' already removes the score term (the control "
            "variate with coefficient 1)."
        )
    if rao_blackwell:
        check_mean_field(surrogate, "surrogate")
    if not any(part.score for part in components(surrogate, estimator)):
        raise ValueError(
            f"{option} has nothing to act on: every part of `surrogate` is reparameterized, "
            "so estimator='mixed' uses no score function. Leave it out, or use "
            "estimator='score_function'."
        )
    if control_variate and num_samples < 3:
        raise ValueError(
            f"`num_samples` must be at least 3 with control_variate=True, got {num_samples}: "
            "each sample's coefficient is estimated from the other S - 1 samples."
        )
    return control_variate, rao_blackwell


def _check_blanket(blanket_log_prob, surrogate, estimator, z, data=None):
    """Call ``blanket_log_prob`` once, eagerly, and check its [S, J] shape and dtype."""
    parts = components(surrogate, estimator)
    num_factors = sum(part.size for part in parts if part.score)
    num_samples = int(tf.shape(tf.nest.flatten(z)[0])[0])

    def call(z):
        return blanket_log_prob(z) if data is None else blanket_log_prob(z, data)

    call_log_density(
        call,
        z,
        "blanket_log_prob",
        [num_samples, num_factors],
        _log_dtype(surrogate, z),
        "surrogate",
        what=f"one column per score-function factor of `surrogate` ({describe_factors(parts)})",
        layout="[S, J]",
    )


def _check_surrogate(surrogate, name="surrogate"):
    check_distribution(surrogate, name)
    check_scalar_batch(surrogate, name)
    if not surrogate.trainable_variables:
        raise ValueError(
            f"`{name}` has no trainable variables; build it on tf.Variable or "
            "tfp.util.TransformedVariable parameters (see tfp.experimental.vi builders)."
        )


def elbo_gradient(
    log_joint: Callable,
    surrogate: tfd.Distribution,
    *,
    estimator: Estimator = "reparameterization",
    num_samples: int = 1,
    seed=None,
    jit_compile: bool = False,
    control_variate: bool = False,
    blanket_log_prob: Callable | None = None,
) -> ELBOGradient:
    r"""Monte Carlo estimate of :math:`\nabla_\lambda \mathrm{ELBO}(\lambda)`, with its variance.

    With :math:`z_s \sim q_\lambda` and :math:`f(z) = \log p(x, z) - \log q_\lambda(z)`:

    .. math::

        \text{reparameterization:}\quad & \hat g_s = \nabla_\lambda f\big(g(\varepsilon_s;
        \lambda)\big), \\
        \text{path derivative:}\quad & \hat g_s = \nabla_\lambda f\big(g(\varepsilon_s;
        \lambda)\big) + \nabla_\lambda \log q_\lambda(z)\big|_{z = z_s}, \\
        \text{score function:}\quad & \hat g_s = \nabla_\lambda \log q_\lambda(z_s)\,
        f(z_s), \\
        \text{stratified:}\quad & \hat g_s = \nabla_\lambda \textstyle\sum_{k=1}^K
        w_k\, f\big(g_k(\varepsilon_{sk}; \lambda)\big),

    and the estimate is :math:`\frac1S\sum_s \hat g_s`. All four are unbiased. The
    stratified estimator is for a mixture :math:`q = \sum_k w_k q_k` with reparameterized
    components :math:`z = g_k(\varepsilon; \lambda)`: it draws from every component, and
    since :math:`\mathrm{ELBO} = \sum_k w_k \mathbb E_{q_k}[f(z)]`, the weights enter as
    plain factors, differentiable :cite:p:`morningstar2021automatic` (each sample costs
    :math:`K` evaluations of ``log_joint``). Each
    sample's gradient comes from its own forward and backward pass, vectorized over the
    samples with ``tf.vectorized_map`` and compiled (O(S) work, not a Python loop and not the
    O(S²) Jacobian of a batch); their sample variance is returned.

    **Chapter 7's variance reductions** :cite:p:`ranganath2014black` apply to the score
    function. For a mean-field :math:`q(z) = \prod_j q_j(z_j)`, *Rao-Blackwellization*
    replaces :math:`f` in factor :math:`j`'s score term by the terms of :math:`\log p` in
    its Markov blanket, :math:`b_j(z)`, and its own :math:`\log q_j`:

    .. math::

        \hat g_s = \sum_j \nabla_\lambda \log q_j(z_{sj})\,\big(b_j(z_s) - \log
        q_j(z_{sj})\big),

    unbiased because the dropped terms do not depend on :math:`z_j`, and
    :math:`\mathbb E_{q_j}[\nabla \log q_j] = 0`. The *control variate* subtracts
    :math:`\hat a\, h_s` with :math:`h_s = \nabla_\lambda \log q(z_s)` (mean zero), per
    element of :math:`\lambda`, with the variance-minimizing coefficient
    :math:`a^\ast = \mathrm{Cov}(\hat g, h) / \mathrm{Var}(h)`
    :cite:p:`paisley2012variational,ranganath2014black`. Estimating :math:`a^\ast` from the
    same samples would bias the estimate (:math:`\hat a` and :math:`h_s` would be
    correlated); here sample :math:`s` uses :math:`\hat a_{-s}`, estimated from the *other*
    :math:`S - 1` samples (leave-one-out), so :math:`\mathbb E[\hat a_{-s} h_s] =
    \mathbb E[\hat a_{-s}]\,\mathbb E[h_s] = 0` and the estimate stays unbiased at no extra
    sampling cost (a separate batch would be unbiased too, but costs samples). All
    :math:`S` coefficients cost :math:`O(S)`. ``"mixed"`` applies the score function (with
    either option) to the parts of :math:`q` that are not reparameterized and
    differentiates through the samples of the others.

    Parameters
    ----------
    log_joint : callable
        Maps ``z`` of shape ``[S, *event]`` (a dict or list of such for a joint
        ``surrogate``) to :math:`\log p(x, z)` of shape exactly ``[S]`` and ``surrogate``'s
        dtype.
    surrogate : tfp.distributions.Distribution
        :math:`q_\lambda`, batch shape ``[]``, built on trainable variables. The
        reparameterization estimators need a fully reparameterized ``surrogate``; the
        score function works for any, discrete ones included. ``"mixed"`` and
        ``blanket_log_prob`` need a mean-field one: a ``tfd.JointDistributionNamed`` or
        ``tfd.JointDistributionSequential`` of independent parts, or a single distribution.
        ``"stratified"`` needs a mixture (``vicourse.make_surrogate("mixture", ...)``).
    estimator : {"reparameterization", "path_derivative", "score_function", "mixed", "stratified"}
        Which estimator (see above and :data:`ESTIMATORS`).
    num_samples : int, default 1
        :math:`S`, draws per estimate (at least 3 with ``control_variate``).
    seed : int or Tensor of shape [2], optional
        Stateless seed; the same seed gives the same estimate.
    jit_compile : bool, default False
        Compile with XLA (about 8x faster for location-scale families) instead of a plain
        ``tf.function`` graph. The default is the graph, because samplers that loop per
        sample (Gamma, Beta and Dirichlet use rejection sampling) cannot be vectorized into
        an XLA program. Either is built once per ``log_joint``, surrogate structure,
        ``estimator`` and ``num_samples``.
    control_variate : bool, default False
        Subtract the leave-one-out control variate from the score-function term (needs
        ``estimator`` "score_function" or "mixed": with a reparameterization estimator it
        raises ``ValueError``, since there is no score term to control and
        ``"path_derivative"`` already removes it).
    blanket_log_prob : callable, optional
        Rao-Blackwellize the score-function term: maps ``z`` to ``[S, J]``, column
        :math:`j` the sum of the :math:`\log p(x, z)` terms that involve factor :math:`j`
        (its Markov blanket), for the :math:`J` factors the score function applies to, in
        the order of :func:`~vicourse.bbvi.mean_field_factors`. A factor is one element of the
        batch shape of a part of ``surrogate`` once its ``tfd.Independent`` wrappers are
        removed; the parts come in the order of the sample's parts (sorted names for a
        ``JointDistributionNamed``). It applies to models whose log-density is a sum of
        terms each involving few factors (local latent variables, mixtures, hierarchical
        models); its shape and dtype are checked up front, its content is not: a wrong
        blanket biases the gradient.

    Returns
    -------
    ELBOGradient
        ``gradients`` (in the order of ``surrogate.trainable_variables``), ``variances``
        of a single-sample estimate (``None`` for :math:`S = 1`), the Monte Carlo ``elbo``,
        and the ``per_sample`` gradients (with a control variate: the controlled terms,
        whose mean is the estimate).

    Raises
    ------
    TypeError, ValueError
        For an unknown estimator (the message lists the valid ones), a reparameterization
        estimator with a non-reparameterized ``surrogate``, a surrogate without trainable
        variables or with a batch shape, a bad count or seed, a ``log_joint`` that fails,
        or returns another shape or dtype, a control variate or blanket with a
        reparameterization estimator, a control variate with fewer than 3 samples, a
        ``blanket_log_prob`` whose shape does not match the factors, or a ``surrogate``
        that is not mean-field where one is needed.

    Notes
    -----
    Taught in :doc:`/book/chapters/06_reparameterization`; the score-function estimator's
    variance reduction in :doc:`/book/chapters/07_bbvi`; the stratified estimator for
    mixtures in :doc:`/book/chapters/09_richer_families`.
    """
    _check_surrogate(surrogate)
    _check_estimator(estimator, surrogate)
    num_samples = check_count(num_samples, "num_samples")
    check_sample_budget(num_samples, surrogate)
    jit_compile = check_bool(jit_compile, "jit_compile")
    control_variate, rao_blackwell = _check_score_options(
        estimator, surrogate, num_samples, control_variate, blanket_log_prob
    )
    seed = sanitize_seed(seed)
    # One eager call on a full batch: a wrong shape or dtype gets a clear error up front.
    z = surrogate.sample(num_samples, seed=seed)
    call_log_density(
        log_joint, z, "log_joint", [num_samples], _log_dtype(surrogate, z), "surrogate"
    )
    if rao_blackwell:
        _check_blanket(blanket_log_prob, surrogate, estimator, z)
    fn, owner = _traceable(log_joint)
    cfg = _Config(estimator, num_samples, None, control_variate, rao_blackwell)
    if _classic(cfg):
        run = _per_sample_gradients_xla if jit_compile else _per_sample_gradients_graph
        per_sample, values = run(fn, owner, surrogate, seed, estimator, num_samples)
    else:
        blanket_fn, blanket_owner = _traceable(blanket_log_prob)
        run = _per_sample_score_xla if jit_compile else _per_sample_score_graph
        per_sample, values = run(fn, owner, blanket_fn, blanket_owner, surrogate, seed, cfg)
    gradients = tuple(tf.reduce_mean(g, axis=0) for g in per_sample)
    variances = None
    if num_samples > 1:
        variances = tuple(
            tf.math.reduce_variance(g, axis=0) * num_samples / (num_samples - 1) for g in per_sample
        )
    return ELBOGradient(gradients, variances, tf.reduce_mean(values), tuple(per_sample))


def _zeros_for_none(gradients, variables):
    return [
        tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
        for g, v in zip(gradients, variables, strict=True)
    ]


def _per_sample_gradients(fn, owner, surrogate, seed, estimator, num_samples):
    """Each sample's gradient from its own forward and backward pass, vectorized over the
    samples with ``tf.vectorized_map``: O(S) work. (A Jacobian of the S-vector of values
    would backpropagate S one-hot cotangents through all S samples: O(S^2).)"""
    variables = surrogate.trainable_variables
    seeds = tf.random.experimental.stateless_split(seed, num_samples)

    def one(sample_seed):
        with tf.GradientTape() as tape:
            if estimator == "stratified":
                value = objective = stratified_elbo_terms(
                    lambda z: _evaluate(fn, owner, z), surrogate, 1, sample_seed
                )
            else:
                z = surrogate.sample(1, seed=sample_seed)
                value, objective = _objectives(_evaluate(fn, owner, z), surrogate, z, estimator)
            objective = tf.reduce_sum(objective)
        return _zeros_for_none(tape.gradient(objective, variables), variables), value[0]

    return tf.vectorized_map(one, seeds, fallback_to_while_loop=True)


_per_sample_gradients_xla = tf.function(_per_sample_gradients, jit_compile=True)
_per_sample_gradients_graph = tf.function(_per_sample_gradients)


def _per_sample_score(fn, owner, blanket_fn, blanket_owner, surrogate, seed, cfg):
    """Per-sample gradients of the score-function estimators with chapter 7's options:
    the reparameterized part :math:`r_s`, the score part :math:`f_s` and the score
    :math:`h_s` of each sample (one persistent tape), then the leave-one-out control."""
    variables = surrogate.trainable_variables
    seeds = tf.random.experimental.stateless_split(seed, cfg.num_samples)

    def one(sample_seed):
        with tf.GradientTape(persistent=True) as tape:
            z = stop_score_parts(surrogate, surrogate.sample(1, seed=sample_seed), cfg.estimator)
            log_p = _evaluate(fn, owner, z)
            blanket = _evaluate(blanket_fn, blanket_owner, z) if cfg.rao_blackwell else None
            terms = score_terms(surrogate, z, log_p, blanket, cfg.estimator)
            reparameterized = tf.reduce_sum(terms.reparameterized)
            weighted = tf.reduce_sum(terms.log_q * terms.weights)
            total = tf.reduce_sum(terms.log_q)
        r = _zeros_for_none(tape.gradient(reparameterized, variables), variables)
        f = _zeros_for_none(tape.gradient(weighted, variables), variables)
        h = _zeros_for_none(tape.gradient(total, variables), variables)
        del tape
        return r, f, h, terms.value[0]

    r, f, h, values = tf.vectorized_map(one, seeds, fallback_to_while_loop=True)
    if cfg.control_variate:
        f = [leave_one_out_control(f_v, h_v) for f_v, h_v in zip(f, h, strict=True)]
    return [r_v + f_v for r_v, f_v in zip(r, f, strict=True)], values


_per_sample_score_xla = tf.function(_per_sample_score, jit_compile=True)
_per_sample_score_graph = tf.function(_per_sample_score)


# ---------------------------------------------------------------------------------------
# fit_vi: the compiled loop
# ---------------------------------------------------------------------------------------


class _Config(NamedTuple):
    """The static (shape- or branch-deciding) settings of the loop: part of the trace key."""

    estimator: str
    num_samples: int
    batch_size: int | None
    control_variate: bool = False
    rao_blackwell: bool = False


def _classic(cfg: _Config) -> bool:
    """Chapter 6's three estimators without chapter 7's options: one surrogate objective."""
    return cfg.estimator != "mixed" and not (cfg.control_variate or cfg.rao_blackwell)


def _minibatch(data, batch_size, seed):
    """``batch_size`` rows drawn uniformly with replacement, in O(B) (no shuffle of N)."""
    num_data = tf.shape(tf.nest.flatten(data)[0])[0]
    index = tf.random.stateless_uniform([batch_size], seed, 0, num_data, dtype=tf.int32)
    return tf.nest.map_structure(lambda a: tf.gather(a, index), data)


def _empty(data):
    return tf.nest.map_structure(lambda a: a[:0], data)


def _scaled_log_joint(fn, owner, z, data, batch, scale):
    """log p(z) + scale * [log p(batch, z) - log p(z)]: only the likelihood is scaled."""
    if data is None:
        return _evaluate(fn, owner, z)
    full = _evaluate(fn, owner, z, batch)
    if scale is None:
        return full
    prior = _evaluate(fn, owner, z, _empty(batch))
    return prior + scale * (full - prior)


def _apply_constraint(variable):
    """Project ``variable`` back onto its constraint after an update, as Keras optimizers do.
    The masked layers of ``tfb.AutoregressiveNetwork`` (MADE) keep their masks this way:
    without it, an autoregressive flow stops being autoregressive, and invertible."""
    constraint = getattr(variable, "constraint", None)
    if constraint is not None:
        variable.assign(constraint(variable))


def _vi_step(
    fn,
    owner,
    surrogate,
    optimizer,
    state,
    step,
    total,
    rate,
    seed,
    data,
    scale,
    cfg,
    blanket_fn=None,
    blanket_owner=None,
):
    """One optimization step; returns the new optimizer state and the ELBO estimate."""
    variables = surrogate.trainable_variables
    step_seed = tf.random.experimental.stateless_fold_in(seed, step)
    sample_seed, batch_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
    batch = None
    if data is not None:
        batch = _minibatch(data, cfg.batch_size, batch_seed) if cfg.batch_size else data
    with tf.GradientTape() as tape:
        if cfg.estimator == "stratified":
            value = objective = stratified_elbo_terms(
                lambda z: _scaled_log_joint(fn, owner, z, data, batch, scale),
                surrogate,
                cfg.num_samples,
                sample_seed,
            )
        elif _classic(cfg):
            z = surrogate.sample(cfg.num_samples, seed=sample_seed)
            log_p = _scaled_log_joint(fn, owner, z, data, batch, scale)
            value, objective = _objectives(log_p, surrogate, z, cfg.estimator)
        else:
            z = surrogate.sample(cfg.num_samples, seed=sample_seed)
            z = stop_score_parts(surrogate, z, cfg.estimator)
            log_p = _scaled_log_joint(fn, owner, z, data, batch, scale)
            blanket = None
            if cfg.rao_blackwell:  # full data only (checked up front): no scaling
                blanket = _evaluate(blanket_fn, blanket_owner, z, *([] if data is None else [data]))
            terms = score_terms(surrogate, z, log_p, blanket, cfg.estimator)
            value, objective = terms.value, terms.reparameterized
            if not cfg.control_variate:  # else the score part comes per sample, below
                objective = objective + tf.reduce_sum(terms.log_q * terms.weights, -1)
        loss = -tf.reduce_mean(objective)
    gradients = _zeros_for_none(tape.gradient(loss, variables), variables)
    if cfg.control_variate:
        # Per-sample scores of the fixed samples: no random op inside, so the map compiles.
        f, h = score_gradients(surrogate, z, terms.weights, cfg.estimator, cfg.rao_blackwell)
        gradients = [
            g - tf.reduce_mean(leave_one_out_control(f_v, h_v), axis=0)
            for g, f_v, h_v in zip(gradients, f, h, strict=True)
        ]
    if optimizer is None:
        state, increments = adam_update(state, gradients, cosine_learning_rate(rate, step, total))
        for variable, increment in zip(variables, increments, strict=True):
            variable.assign_add(increment)
            _apply_constraint(variable)
    else:
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
    return state, tf.reduce_mean(value)


def _vi_chunk(
    fn,
    owner,
    surrogate,
    optimizer,
    state,
    start,
    count,
    total,
    rate,
    seed,
    data,
    scale,
    cfg,
    blanket_fn=None,
    blanket_owner=None,
):
    """Up to ``count`` steps (a tensor) in one while_loop; the trace has a fixed length."""
    trace = tf.fill([_CHUNK_STEPS], tf.constant(np.nan, _float_dtype(surrogate)))

    def body(i, state, trace):
        state, elbo = _vi_step(
            fn,
            owner,
            surrogate,
            optimizer,
            state,
            start + i,
            total,
            rate,
            seed,
            data,
            scale,
            cfg,
            blanket_fn,
            blanket_owner,
        )
        return i + 1, state, tf.tensor_scatter_nd_update(trace, [[i]], [elbo])

    _, state, trace = tf.while_loop(lambda i, *_: i < count, body, (0, state, trace))
    return state, trace


_vi_chunk_xla = tf.function(_vi_chunk, jit_compile=True)
_vi_chunk_graph = tf.function(_vi_chunk)
# Streaming data: one compiled step per minibatch drawn on the host from a tf.data pipeline.
_vi_step_xla = tf.function(_vi_step, jit_compile=True)
_vi_step_graph = tf.function(_vi_step)

# A tf_keras optimizer finds its slots by variable identity, and the variables of a
# surrogate passed *as an argument* are new objects inside the trace: it would silently
# update nothing. With a user's optimizer the loop therefore closes over that optimizer and
# surrogate instead, compiled once per pair and cached while the optimizer lives.
_KERAS_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bound_to_optimizer(template, optimizer, surrogate, jit_compile):
    """A tf.function of ``template`` with ``surrogate`` and ``optimizer`` bound by closure,
    cached per pair. The closure holds weak references, so the cache entry (keyed weakly
    by the optimizer) does not keep the optimizer or the surrogate alive."""
    loops = _KERAS_LOOPS.setdefault(optimizer, {})
    key = (template.__name__, id(surrogate), jit_compile)
    if key not in loops:
        surrogate_ref, optimizer_ref = weakref.ref(surrogate), weakref.ref(optimizer)

        def bound(fn, owner, *args):
            return template(fn, owner, surrogate_ref(), optimizer_ref(), *args)

        loops[key] = tf.function(bound, jit_compile=jit_compile)
    return loops[key]


class _Runner:
    """Calls one compiled function repeatedly within a fit.

    The first call resolves the concrete function (a lookup in the tf.function's trace
    cache, which compares composite type specs and costs about 2 ms); later calls, one per
    chunk or per streamed minibatch, go to the concrete function directly.
    """

    def __init__(self, function, prefix=()):
        self.function, self.prefix, self.concrete = function, prefix, None

    def __call__(self, fn, owner, *rest):
        args = (fn, owner, *self.prefix, *rest)
        if self.concrete is None:
            self.concrete = self.function.get_concrete_function(*args)
        return self.concrete(*args)


def _compiled(template, optimizer, surrogate, jit_compile) -> _Runner:
    """A runner of ``template`` for the default Adam (one module-level function, the
    surrogate passed as an argument) or for a user's optimizer (bound by closure)."""
    if optimizer is None:
        table = {
            "_vi_chunk": (_vi_chunk_xla, _vi_chunk_graph),
            "_vi_step": (_vi_step_xla, _vi_step_graph),
        }
        return _Runner(table[template.__name__][0 if jit_compile else 1], (surrogate, None))
    return _Runner(_bound_to_optimizer(template, optimizer, surrogate, jit_compile))


def _as_data(data, dtype):
    """Validate in-memory data: a tensor or a nest of tensors with one leading axis N."""
    leaves = tf.nest.flatten(data)
    if not leaves:
        raise ValueError("`data` is empty; pass an array of shape [N, ...] or a tuple of them.")
    tensors = []
    for leaf in leaves:
        tensor = as_float_tensor(leaf, "data", dtype)
        if tensor.shape.rank == 0 or tensor.shape[0] == 0:
            raise ValueError(
                f"`data` arrays must have a non-empty leading axis of data points, got shape "
                f"{tensor.shape.as_list()}."
            )
        check_finite(tensor, "data")
        tensors.append(tensor)
    sizes = {int(t.shape[0]) for t in tensors}
    if len(sizes) != 1:
        raise ValueError(
            f"`data` arrays must share their leading axis (the data points), got sizes "
            f"{sorted(sizes)}."
        )
    return tf.nest.pack_sequence_as(data, tensors), sizes.pop()


# Signatures (function, shapes, dtypes) whose log_joint already passed _probe: shapes and
# dtypes are static, so a repeated call with the same ones need not evaluate it eagerly.
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_key(fn, owner, surrogate, data, num_samples):
    if owner is not None and not isinstance(owner, tfd.Distribution):
        return None
    owner_key = (
        None
        if owner is None
        else (type(owner).__name__, str(owner.batch_shape), str(owner.event_shape), owner.dtype)
    )
    data_key = (
        tuple(
            (tuple(tf.convert_to_tensor(a).shape.as_list()), a.dtype.name)
            for a in tf.nest.flatten(data)
        )
        if data is not None
        else None
    )
    return (
        owner_key,
        type(surrogate).__name__,
        str(surrogate.batch_shape),
        str(surrogate.event_shape),
        str(surrogate.dtype),
        num_samples,
        data_key,
    )


def _probe(log_joint, surrogate, data, num_samples, seed):
    """Call the user's log_joint once, eagerly, so a wrong shape or dtype gets a clear error
    before anything is compiled (skipped when the same signature passed before)."""
    fn, owner = _traceable(log_joint)
    try:
        key = _probe_key(fn, owner, surrogate, data, num_samples)
        if key is not None and key in _PROBED.get(fn, ()):
            return
    except TypeError:  # an unhashable or non-weakref-able callable: always probe
        key = None
    z = surrogate.sample(num_samples, seed=seed)
    dtype = _log_dtype(surrogate, z)
    if data is None:
        call_log_density(log_joint, z, "log_joint", [num_samples], dtype, "surrogate")
    else:
        for batch, what in ((data, "a minibatch"), (_empty(data), "an empty minibatch")):

            def bound(z, batch=batch):
                return log_joint(z, batch)

            try:
                call_log_density(bound, z, "log_joint", [num_samples], dtype, "surrogate")
            except (TypeError, ValueError) as err:
                raise type(err)(
                    f"{err} (called as log_joint(z, batch) with {what}: log_joint must be "
                    "log p(z) plus a sum over the rows of batch, so that fit_vi can scale the "
                    "likelihood by N/B)"
                ) from None
    if key is not None:
        try:
            _PROBED.setdefault(fn, set()).add(key)
        except TypeError:
            pass


def _progress_bar(num_steps, progress):
    if not progress:
        return None, None
    from tqdm import tqdm  # noqa: PLC0415 (only needed for progress output)

    bar = tqdm(total=num_steps, desc="fit_vi", unit="step")
    return bar, bar.update


def fit_vi(
    log_joint: Callable,
    surrogate: tfd.Distribution,
    *,
    num_steps: int,
    estimator: Estimator = "reparameterization",
    num_samples: int = 1,
    learning_rate: float | None = None,
    optimizer=None,
    seed=None,
    data=None,
    batch_size: int | None = None,
    num_data: int | None = None,
    progress: bool = False,
    jit_compile: bool = True,
    control_variate: bool = False,
    blanket_log_prob: Callable | None = None,
) -> VIFit:
    r"""Maximize the ELBO over ``surrogate``'s trainable variables, in place.

    Each step draws :math:`S` samples from :math:`q_\lambda`, forms the chosen estimator of
    :math:`\nabla_\lambda\mathrm{ELBO}` (see :func:`elbo_gradient`) and takes an optimizer
    step. The default optimizer is Adam :cite:p:`kingma2015adam` whose learning rate decays
    along a cosine from ``learning_rate`` to 1% of it, so that the last iterate lands at the
    optimum instead of jittering around it with the gradient noise of a constant step. Like
    ``tfp.vi.fit_surrogate_posterior``, the surrogate's variables are updated in place.

    **Compiled once.** The loop runs in chunks of 1,000 steps inside one
    ``tf.function(jit_compile=True)`` built at import; the step count, learning rate and
    seed are tensors, and the surrogate (with its variables) and the data are arguments. A
    second call with the same ``log_joint`` object and surrogates of the same structure
    does not retrace (a new ``log_joint`` function object, or a new ``optimizer`` object,
    traces once more).

    **Doubly stochastic VI.** With ``data`` and ``batch_size``, each step draws
    :math:`B` rows uniformly with replacement (stateless, :math:`O(B)`) and calls
    ``log_joint(z, batch)``. That function must return :math:`\log p(z) + \sum_{i \in
    \text{batch}} \log p(x_i \mid z)` (so that an empty batch gives the prior); ``fit_vi``
    scales its data part by :math:`N/B`,

    .. math::

        \widehat{\log p}(x, z) = \log p(z) + \frac{N}{B}\sum_{b=1}^B \log p(x_{i_b} \mid z),

    which is unbiased for :math:`\log p(x, z)`, so the ELBO estimate and its gradient stay
    unbiased :cite:p:`titsias2014doubly,hoffman2013stochastic`. ``data`` may also be a
    ``tf.data.Dataset`` of minibatches (for data larger than memory); then ``num_data``
    must give :math:`N`, each step takes the next minibatch (the dataset is repeated), each
    minibatch is scaled by :math:`N` over its own number of rows, and one compiled step
    runs per minibatch. The estimate is unbiased only if the minibatches are random:
    shuffle the dataset.

    **Chapter 7's options.** ``estimator="mixed"``, ``control_variate`` and
    ``blanket_log_prob`` work as in :func:`elbo_gradient`, inside the same compiled loop
    (built once per setting). With a control variate, each step draws its :math:`S`
    samples once, then computes every sample's score with ``tf.vectorized_map`` over the
    fixed samples; no random op runs inside the map, so it compiles under XLA. Rao-
    Blackwellization needs the full data at every step (a Markov blanket of a global
    variable spans all data points), so ``blanket_log_prob`` cannot be combined with
    ``batch_size`` or a dataset.

    Parameters
    ----------
    log_joint : callable
        ``log_joint(z)`` (no data) or ``log_joint(z, batch)`` (with ``data``): :math:`\log
        p(x, z)` of shape exactly ``[S]`` for ``z`` of shape ``[S, *event]``, in the
        surrogate's dtype.
    surrogate : tfp.distributions.Distribution
        :math:`q_\lambda`, batch shape ``[]``, on ``tf.Variable`` /
        ``tfp.util.TransformedVariable`` parameters (for instance from TFP's
        ``build_factored_surrogate_posterior`` builder).
    num_steps : int
        Optimization steps.
    estimator : {"reparameterization", "path_derivative", "score_function", "mixed", "stratified"}
        The gradient estimator (:data:`ESTIMATORS`); ``"stratified"`` for a mixture
        surrogate, with :math:`S` draws from each of its :math:`K` components per step
        (see :func:`elbo_gradient`).
    num_samples : int, default 1
        :math:`S`, Monte Carlo draws per step (at least 3 with ``control_variate``).
    learning_rate : float, optional
        Adam's initial learning rate, decayed along a cosine to 1% of it; the default is
        0.05. (At 0.01, 2,000 steps left the posterior sd of chapter 1's conjugate model 37%
        off, because a softplus-scale variable must travel about 2 units; at 0.05 it is
        within 4%.) Must not be given together with ``optimizer``.
    optimizer : tf_keras optimizer, optional
        Use this optimizer (and its own learning rate or schedule) instead of the default
        Adam. It is built on the surrogate's variables before compiling, and the loop is
        compiled once per (optimizer, surrogate) pair: calling again with the same pair, to
        continue training, does not retrace.
    seed : int or Tensor of shape [2], optional
        Stateless seed; the same seed gives the same fit.
    data : array_like, tuple of arrays, or tf.data.Dataset, optional
        Observed data, passed to ``log_joint`` as its second argument: arrays share a
        leading axis of :math:`N` data points (converted to the surrogate's dtype); a
        dataset yields minibatches.
    batch_size : int, optional
        :math:`B`, rows per step (needs ``data``); without it the whole ``data`` is used
        every step.
    num_data : int, optional
        :math:`N`, needed with a ``tf.data.Dataset`` (for arrays it is their length).
    progress : bool, default False
        Show a tqdm progress bar, updated between compiled chunks.
    jit_compile : bool, default True
        Compile with XLA; ``False`` runs a plain ``tf.function`` graph.
    control_variate : bool, default False
        Leave-one-out control variate on the score-function term (see
        :func:`elbo_gradient`; needs ``estimator`` "score_function" or "mixed").
    blanket_log_prob : callable, optional
        Rao-Blackwellize the score-function term (see :func:`elbo_gradient`):
        ``blanket_log_prob(z)``, or ``blanket_log_prob(z, data)`` with ``data``, returns
        ``[S, J]``, one column per score-function factor. Not with minibatches.

    Returns
    -------
    VIFit
        The surrogate (fitted in place) and the per-step ELBO trace.

    Raises
    ------
    TypeError, ValueError
        For a bad surrogate, an unknown or inapplicable estimator, a bad count, rate or
        seed, ``batch_size`` without ``data``, a ``batch_size`` above :math:`N`, a dataset
        without ``num_data``, ``learning_rate`` together with ``optimizer``, a
        ``log_joint`` or ``blanket_log_prob`` that fails or returns the wrong shape or dtype
        (checked once, eagerly, before compiling), chapter 7's options with an estimator
        they do not apply to, or ``blanket_log_prob`` with minibatches.

    Notes
    -----
    Taught in :doc:`/book/chapters/06_reparameterization`; the score-function options in
    :doc:`/book/chapters/07_bbvi`; reused in chapters 8–10 (the stratified estimator for
    mixtures in :doc:`/book/chapters/09_richer_families`).
    """
    _check_surrogate(surrogate)
    _check_estimator(estimator, surrogate)
    num_steps = check_count(num_steps, "num_steps")
    num_samples = check_count(num_samples, "num_samples")
    check_sample_budget(num_samples, surrogate)
    control_variate, rao_blackwell = _check_score_options(
        estimator, surrogate, num_samples, control_variate, blanket_log_prob
    )
    if rao_blackwell and (batch_size is not None or isinstance(data, tf.data.Dataset)):
        raise ValueError(
            "`blanket_log_prob` needs the full data at every step (the Markov blanket of a "
            "global factor spans every data point): leave out `batch_size` and pass arrays "
            "as `data`, or drop `blanket_log_prob` to use minibatches."
        )
    if optimizer is not None and not hasattr(optimizer, "apply_gradients"):
        raise TypeError(
            f"`optimizer` must be a tf_keras optimizer (with apply_gradients), got "
            f"{type(optimizer).__name__}."
        )
    if optimizer is not None and learning_rate is not None:
        raise ValueError(
            "Pass `learning_rate` or `optimizer`, not both: give the learning rate (or a "
            "schedule) to your optimizer."
        )
    rate = check_real(
        0.05 if learning_rate is None else learning_rate,
        "learning_rate",
        low=0.0,
        low_inclusive=False,
    )
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True or False, got {progress!r}.")
    if not isinstance(jit_compile, bool):
        raise TypeError(f"`jit_compile` must be True or False, got {jit_compile!r}.")
    seed = sanitize_seed(seed)
    if data is None and (batch_size is not None or num_data is not None):
        raise ValueError(
            "`batch_size` and `num_data` need `data`: pass the observations as `data` and "
            "write log_joint(z, batch)."
        )
    if not callable(log_joint):
        raise TypeError(
            f"`log_joint` must be callable (z -> log p(x, z)), got {type(log_joint).__name__}."
        )
    cfg = _Config(estimator, num_samples, None, control_variate, rao_blackwell)
    if isinstance(data, tf.data.Dataset):
        return _fit_streaming(
            log_joint,
            surrogate,
            optimizer,
            num_steps,
            cfg,
            rate,
            seed,
            data,
            batch_size,
            num_data,
            progress,
            jit_compile,
        )
    scale = None
    if data is not None:
        data, size = _as_data(data, _float_dtype(surrogate))
        if num_data is not None and check_count(num_data, "num_data") != size:
            raise ValueError(
                f"`num_data` ({num_data}) differs from the {size} rows of `data`; leave it "
                "out for in-memory arrays."
            )
        if batch_size is not None:
            batch_size = check_count(batch_size, "batch_size", maximum=size)
            scale = tf.constant(size / batch_size, _float_dtype(surrogate))
    _probe(log_joint, surrogate, data, num_samples, seed)
    if rao_blackwell:
        z = surrogate.sample(num_samples, seed=seed)
        _check_blanket(blanket_log_prob, surrogate, estimator, z, data)
    cfg = cfg._replace(batch_size=batch_size)
    variables = surrogate.trainable_variables
    if optimizer is not None:
        optimizer.build(variables)
    state = adam_init(variables)
    run = _compiled(_vi_chunk, optimizer, surrogate, jit_compile)
    total = tf.constant(num_steps, tf.int32)
    rate = tf.constant(rate, _float_dtype(surrogate))
    bar, update = _progress_bar(num_steps, progress)

    fn, owner = _traceable(log_joint)
    blanket_fn, blanket_owner = _traceable(blanket_log_prob)

    def chunk(state, start, count):
        state, trace = run(
            fn,
            owner,
            state,
            start,
            count,
            total,
            rate,
            seed,
            data,
            scale,
            cfg,
            blanket_fn,
            blanket_owner,
        )
        return state, trace, count, False

    try:
        _, trace, _ = run_chunked(chunk, state, num_steps, _CHUNK_STEPS, update)
    finally:
        if bar is not None:
            bar.close()
    return VIFit(surrogate, trace)


def _fit_streaming(
    log_joint,
    surrogate,
    optimizer,
    num_steps,
    cfg,
    rate,
    seed,
    dataset,
    batch_size,
    num_data,
    progress,
    jit_compile,
):
    """fit_vi over a tf.data.Dataset of minibatches: one compiled step per minibatch."""
    if num_data is None:
        raise ValueError(
            "`num_data` is required with a tf.data.Dataset: pass N, the number of data "
            "points, so that each minibatch's likelihood can be scaled by N/B."
        )
    num_data = check_count(num_data, "num_data")
    if batch_size is not None:
        raise ValueError(
            "`batch_size` is set by the dataset's own batching; leave it out with a "
            "tf.data.Dataset."
        )
    num_samples = cfg.num_samples
    variables = surrogate.trainable_variables
    if optimizer is not None:
        optimizer.build(variables)
    state = adam_init(variables)
    step_fn = _compiled(_vi_step, optimizer, surrogate, jit_compile)
    total = tf.constant(num_steps, tf.int32)
    dtype = _float_dtype(surrogate)
    rate_t = tf.constant(rate, dtype)
    bar, update = _progress_bar(num_steps, progress)
    trace = []
    fn, owner = _traceable(log_joint)
    try:
        for step, batch in enumerate(dataset.repeat().take(num_steps)):
            batch = tf.nest.map_structure(lambda a: tf.cast(a, dtype), batch)
            if step == 0:
                _probe(log_joint, surrogate, batch, num_samples, seed)
            rows = tf.shape(tf.nest.flatten(batch)[0])[0]
            scale = tf.cast(num_data, dtype) / tf.cast(rows, dtype)
            state, elbo = step_fn(
                fn,
                owner,
                state,
                tf.constant(step, tf.int32),
                total,
                rate_t,
                seed,
                batch,
                scale,
                cfg,
                None,  # no blanket_log_prob with minibatches
                None,
            )
            trace.append(elbo)
            if update is not None and (step + 1) % _CHUNK_STEPS == 0:
                update(_CHUNK_STEPS)
    finally:
        if bar is not None:
            bar.close()
    if len(trace) < num_steps:
        raise ValueError("`data` (a tf.data.Dataset) yielded no minibatches.")
    return VIFit(surrogate, tf.stack(trace))
