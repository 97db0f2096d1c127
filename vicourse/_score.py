r"""Score-function machinery shared by :mod:`vicourse.gradients` and :mod:`vicourse.bbvi`
(private): the factors of a mean-field :math:`q`, the per-sample terms of the plain,
Rao-Blackwellized and mixed estimators, and leave-one-out control variates.

Chapter 7 (:doc:`/book/chapters/07_bbvi`) derives all of it. In brief, with
:math:`q(z) = \prod_j q_j(z_j)` and :math:`f(z) = \log p(x, z) - \log q(z)`, one sample's
gradient is the gradient of the *surrogate objective*

.. math::

    \underbrace{\log p(x, z) - \sum_{k \in \mathcal R} \log q_k(z_k)}_{\text{through }
    z_k = g(\varepsilon_k; \lambda)} \;+\; \sum_{j \in \mathcal S} \log q_j(\bar z_j)\,
    \bar w_j, \qquad \bar w_j = \begin{cases} b_j(z) - \log q_j(z_j) &
    \text{(Rao-Blackwellized)} \\ f(z) & \text{(plain)} \end{cases}

with bars for values held fixed, :math:`\mathcal S` the factors that use the score function
(all of them for ``"score_function"``, the non-reparameterized ones for ``"mixed"``),
:math:`\mathcal R` the others, and :math:`b_j` the log-density terms in factor :math:`j`'s
Markov blanket.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vicourse._validation import built_distribution, joint_components

tfd = tfp.distributions

__all__ = [
    "Component",
    "components",
    "describe_factors",
    "leave_one_out_control",
    "score_gradients",
    "score_log_probs",
    "score_terms",
    "stop_score_parts",
]


class Component(NamedTuple):
    """One part of a mean-field surrogate (the whole surrogate if it is not joint)."""

    label: str
    """Its name in the joint distribution (``""`` for a surrogate that is not joint)."""
    distribution: tfd.Distribution
    """The part as the surrogate holds it."""
    factors: tfd.Distribution
    """The part with its ``tfd.Independent`` wrappers removed: each element of its batch
    shape is one factor :math:`q_j`."""
    shape: tuple
    """The factors' (batch) shape."""
    score: bool
    """Whether the score function applies to it (else it is reparameterized)."""

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _reparameterized(distribution) -> bool:
    return all(
        kind == tfd.FULLY_REPARAMETERIZED
        for kind in tf.nest.flatten(distribution.reparameterization_type)
    )


def components(surrogate, estimator: str) -> tuple[Component, ...]:
    """The parts of ``surrogate`` in the order of its samples' parts (``tf.nest.flatten``
    order: sorted names for a ``JointDistributionNamed``), each with its factors and whether
    ``estimator`` ("score_function" or "mixed") applies the score function to it."""
    q = built_distribution(surrogate)
    parts = joint_components(q) or [("", q)]
    result = []
    for label, part in parts:
        factors = part
        while isinstance(factors, tfd.Independent):
            factors = factors.distribution
        shape = tuple(factors.batch_shape.as_list())
        if None in shape:
            raise ValueError(
                f"`surrogate` part {label or 'q'} has an unknown batch shape {shape}; build it "
                "from parameters of static shape."
            )
        score = estimator == "score_function" or not _reparameterized(part)
        result.append(Component(label, part, factors, shape, score))
    return tuple(result)


def describe_factors(parts) -> str:
    """'c: 30 factors (Categorical, shape [30])' for each score-function part."""
    return "; ".join(
        f"{c.label or 'q'}: {c.size} factor{'s' if c.size != 1 else ''} "
        f"({type(c.factors).__name__}, shape {list(c.shape)})"
        for c in parts
        if c.score
    )


def stop_score_parts(surrogate, z, estimator: str):
    """``z`` with the parts that use the score function held fixed (no gradient through
    the sample: their gradient comes from the score alone)."""
    if estimator == "score_function":
        return tf.nest.map_structure(tf.stop_gradient, z)
    parts = components(surrogate, estimator)
    values = tf.nest.flatten(z)
    held = [tf.stop_gradient(v) if c.score else v for c, v in zip(parts, values, strict=True)]
    return tf.nest.pack_sequence_as(z, held)


def score_log_probs(surrogate, z, estimator: str, rao_blackwell: bool) -> tf.Tensor:
    r""":math:`\log q_j(z_j)` for each score-function factor, ``[S, J]``; without
    Rao-Blackwellization their sum, ``[S, 1]`` (one weight serves all of them)."""
    if estimator == "score_function" and not rao_blackwell:
        return surrogate.log_prob(z)[:, tf.newaxis]
    parts = components(surrogate, estimator)
    columns = [
        tf.reshape(c.factors.log_prob(v), [-1, c.size])
        for c, v in zip(parts, tf.nest.flatten(z), strict=True)
        if c.score
    ]
    if not columns:  # "mixed" with a fully reparameterized q: no score term at all
        return tf.zeros([tf.shape(tf.nest.flatten(z)[0])[0], 0], _log_dtype(surrogate))
    log_probs = tf.concat(columns, axis=-1)
    return log_probs if rao_blackwell else tf.reduce_sum(log_probs, -1, keepdims=True)


def _log_dtype(surrogate):
    dtypes = [d for d in tf.nest.flatten(surrogate.dtype) if tf.as_dtype(d).is_floating]
    return dtypes[0] if dtypes else tf.float32


def _reparameterized_log_prob(surrogate, z, estimator):
    r""":math:`\sum_{k \in \mathcal R} \log q_k(z_k)`, ``[S]``, or ``None`` if no part is
    reparameterized."""
    if estimator == "score_function":
        return None
    parts = components(surrogate, estimator)
    terms = [
        c.distribution.log_prob(v)
        for c, v in zip(parts, tf.nest.flatten(z), strict=True)
        if not c.score
    ]
    return tf.add_n(terms) if terms else None


class ScoreTerms(NamedTuple):
    """Per-sample pieces of the estimator (see the module docstring)."""

    value: tf.Tensor
    r"""[S], :math:`\log p(x, z) - \log q(z)` (the ELBO's integrand)."""
    reparameterized: tf.Tensor
    r"""[S], the part differentiated through the sample, :math:`\log p - \sum_{\mathcal R}
    \log q_k`."""
    log_q: tf.Tensor
    r"""[S, J], :math:`\log q_j(\bar z_j)` of the score-function factors (or their sum)."""
    weights: tf.Tensor
    r"""[S, J], the fixed weights :math:`\bar w_j` that multiply the scores."""


def score_terms(surrogate, z, log_p, blanket, estimator: str) -> ScoreTerms:
    """The estimator's per-sample terms; ``z`` must come from :func:`stop_score_parts` and
    ``blanket`` is the ``[S, J]`` output of ``blanket_log_prob`` or ``None``."""
    rao_blackwell = blanket is not None
    log_q_score = score_log_probs(surrogate, z, estimator, rao_blackwell)
    log_q_rest = _reparameterized_log_prob(surrogate, z, estimator)
    log_q = tf.reduce_sum(log_q_score, -1)  # [S, 0] (no score factors) sums to zeros
    if log_q_rest is not None:
        log_q = log_q + log_q_rest
    value = log_p - log_q
    reparameterized = log_p if log_q_rest is None else log_p - log_q_rest
    if rao_blackwell:
        weights = blanket - log_q_score
    else:
        weights = tf.broadcast_to(value[:, tf.newaxis], tf.shape(log_q_score))
    return ScoreTerms(value, reparameterized, log_q_score, tf.stop_gradient(weights))


def _zeros_for_none(gradients, variables):
    return [
        tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
        for g, v in zip(gradients, variables, strict=True)
    ]


def score_gradients(surrogate, z, weights, estimator: str, rao_blackwell: bool):
    r"""Per-sample :math:`f_s = \nabla_\lambda \sum_j \log q_j(\bar z_{sj})\,\bar w_{sj}` and
    :math:`h_s = \nabla_\lambda \sum_j \log q_j(\bar z_{sj})` for fixed samples ``z``
    (``[S, ...]``) and weights (``[S, J]``), each a list of ``[S, *variable.shape]``.

    Vectorized over the samples with ``tf.vectorized_map``: the samples are given, so no
    random op runs inside and the map compiles fully under XLA.
    """
    variables = surrogate.trainable_variables

    def one(args):
        sample, weight = args
        sample = tf.nest.map_structure(lambda v: v[tf.newaxis], sample)
        with tf.GradientTape(persistent=True) as tape:
            log_q = score_log_probs(surrogate, sample, estimator, rao_blackwell)[0]
            weighted = tf.reduce_sum(log_q * weight)
            total = tf.reduce_sum(log_q)
        f = _zeros_for_none(tape.gradient(weighted, variables), variables)
        h = _zeros_for_none(tape.gradient(total, variables), variables)
        del tape
        return f, h

    return tf.vectorized_map(one, (z, weights), fallback_to_while_loop=True)


def leave_one_out_control(f: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
    r"""Per-sample :math:`f_s - \hat a_{-s} h_s`, elementwise, with :math:`\hat a_{-s} =
    \widehat{\mathrm{Cov}}(f, h) / \widehat{\mathrm{Var}}(h)` from the *other* samples.

    ``f`` and ``h`` are ``[S, *shape]``. :math:`\hat a_{-s}` does not depend on :math:`z_s`,
    and :math:`\mathbb E[h_s] = 0`, so :math:`\mathbb E[\hat a_{-s} h_s] = \mathbb E[\hat
    a_{-s}]\,\mathbb E[h_s] = 0`: the estimate stays unbiased. With deviations from the
    full means, :math:`F_t = f_t - \bar f` and :math:`H_t = h_t - \bar h`, the co-moment of
    the other :math:`S - 1` samples is :math:`\sum_t F_t H_t - \tfrac{S}{S-1} F_s H_s` (shift
    invariance), so all :math:`S` coefficients cost :math:`O(S)` and no cancellation.
    Where :math:`h` does not vary over the other samples (a parameter of no score-function
    factor), :math:`\hat a_{-s} = 0`.
    """
    num = tf.cast(tf.shape(f)[0], f.dtype)
    deviation_f = f - tf.reduce_mean(f, axis=0)
    deviation_h = h - tf.reduce_mean(h, axis=0)
    co_moment = tf.reduce_sum(deviation_f * deviation_h, axis=0)
    moment = tf.reduce_sum(tf.square(deviation_h), axis=0)
    shrink = num / (num - 1.0)
    co_moment_rest = co_moment - shrink * deviation_f * deviation_h
    moment_rest = moment - shrink * tf.square(deviation_h)
    # Rounding can leave a tiny (or negative) moment where h is constant: no control there.
    eps = np.finfo(f.dtype.as_numpy_dtype).eps
    usable = moment_rest > 64.0 * eps * num * moment
    coefficient = tf.where(usable, co_moment_rest / tf.where(usable, moment_rest, 1.0), 0.0)
    return f - coefficient * h
