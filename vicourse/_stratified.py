r"""The stratified ELBO of a mixture surrogate (private; chapter 9).

A mixture :math:`q(z) = \sum_k w_k\, q_k(z)` cannot be reparameterized as a whole: which
component a draw comes from is a discrete choice, and the weights :math:`w_k` enter only
through it. Writing the ELBO by components,

.. math::

    \mathrm{ELBO}(q) = \sum_{k=1}^K w_k\, \mathbb E_{q_k}\big[\log p(x, z) - \log q(z)\big],

every expectation is over one (reparameterizable) component and the weights appear as
plain factors, so the Monte Carlo estimate that draws :math:`S` samples from *every*
component is differentiable in all of :math:`\lambda` (Morningstar et al. 2021). Each of
the :math:`S` rows below is one unbiased estimate of the ELBO.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from vicourse._validation import built_mixture

tfd = tfp.distributions

__all__ = ["check_stratifiable", "stratified_elbo_terms"]


def check_stratifiable(surrogate, name: str = "surrogate") -> None:
    """Raise ``ValueError`` unless ``surrogate`` is a mixture with reparameterized components
    (a ``tfd.MixtureSameFamily``, possibly inside a ``tfd.TransformedDistribution``)."""
    parts = built_mixture(surrogate)
    if parts is None:
        raise ValueError(
            f"estimator='stratified' needs a mixture `{name}` (a tfd.MixtureSameFamily, or a "
            "tfd.TransformedDistribution of one, as vicourse.make_surrogate('mixture', ...) "
            f"builds), got {type(surrogate).__name__}. Use another estimator for other "
            "families."
        )
    mixture, _ = parts
    if mixture.components_distribution.reparameterization_type != tfd.FULLY_REPARAMETERIZED:
        raise ValueError(
            f"estimator='stratified' needs reparameterized components in `{name}`, but "
            f"{type(mixture.components_distribution).__name__} is not. Use Gaussian "
            "components, or estimator='score_function'."
        )


def stratified_elbo_terms(log_p_fn, surrogate, num_samples, seed) -> tf.Tensor:
    r"""``[S]`` unbiased ELBO estimates :math:`\sum_k w_k [\log p(z_{sk}) - \log q(z_{sk})]`
    with :math:`z_{sk} \sim q_k`, differentiable in the weights and the components.

    ``log_p_fn`` maps ``[S * K, *event]`` to ``[S * K]``."""
    mixture, bijector = built_mixture(surrogate)
    components = mixture.components_distribution
    num_components = tf.shape(mixture.mixture_distribution.logits_parameter())[-1]
    u = components.sample(num_samples, seed=seed)  # [S, K, *event]: one draw per component
    log_q = mixture.log_prob(u)  # [S, K]: the mixture density at every draw
    z = u
    if bijector is not None:
        z = bijector.forward(u)
        log_q = log_q - bijector.forward_log_det_jacobian(u, event_ndims=mixture.event_shape.rank)
    event = tf.shape(z)[2:]
    flat = tf.reshape(z, tf.concat([[num_samples * num_components], event], axis=0))
    log_p = tf.reshape(log_p_fn(flat), [num_samples, num_components])
    weights = mixture.mixture_distribution.probs_parameter()  # [K], differentiable
    return tf.linalg.matvec(log_p - log_q, weights)
