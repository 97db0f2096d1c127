r"""Variational autoencoders: amortized inference with neural networks.

Chapter 8 (:doc:`/book/chapters/08_vae`) builds a VAE :cite:p:`kingma2014autoencoding,
rezende2014stochastic` from these pieces. A generative model :math:`p_\theta(x \mid z)\,
p(z)` and an *encoder* :math:`q_\lambda(z \mid x)`, one network that outputs the
variational parameters of every data point, are trained together on the ELBO

.. math::

    \mathcal L(x; \theta, \lambda) = \mathbb E_{q_\lambda(z \mid x)}\big[\log p_\theta(x
    \mid z)\big] - \mathrm{KL}\big(q_\lambda(z \mid x)\,\|\,p(z)\big) \le \log p_\theta(x),

with the reparameterized gradients of chapter 6. The module provides the bounds
(:func:`vae_elbo`, the importance-weighted :func:`iwae_bound` of :cite:t:`burda2016importance`),
network builders (:func:`make_encoder`, :func:`make_decoder`), the training loop
(:func:`fit_vae`: steps compiled with XLA, a ``tf.data`` pipeline, any
``tf.distribute.Strategy``), diagnostics (:func:`amortization_gap`, :func:`active_units`)
and two data loaders (:func:`load_digits_images`, :func:`load_mnist`).

**The callable contract.** An *encoder* maps ``x`` of shape ``[B, D]`` to a TFP
distribution over :math:`z` with batch shape ``[B]`` and event shape ``[L]``; a *decoder*
maps ``z`` of shape ``[..., B, L]`` to a distribution with batch shape ``[..., B]`` and
event shape ``[D]``, so that ``decoder(z).log_prob(x)`` has shape ``[..., B]``; the
*prior* is a distribution over :math:`z` with batch shape ``[]`` and event shape ``[L]``.
Any callables with this contract work, so you can bring your own networks; every function
checks it up front, with an error that names ``encoder`` or ``decoder``.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from vicourse._networks import DECODER_LIKELIHOODS, Decoder, GaussianEncoder
from vicourse._seed import sanitize_seed
from vicourse._vae_engine import (
    Runner,
    array_batches,
    elbo_parts,
    log_weights,
    trainable_variables,
    trainer_for,
    validation_blocks,
)
from vicourse._validation import (
    as_matrix,
    call_distribution,
    check_bool,
    check_choice,
    check_count,
    check_distribution,
    check_real,
    check_sample_budget,
    check_scalar_batch,
    check_strategy,
    check_support,
)
from vicourse.gradients import fit_vi

tfd = tfp.distributions

__all__ = [
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
]

LIKELIHOODS = DECODER_LIKELIHOODS
"""The likelihoods :func:`make_decoder` builds (``"binomial"``, ``"bernoulli"`` and
``"normal"``)."""


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


class VAEFit(NamedTuple):
    """Result of :func:`fit_vae` (the encoder and decoder are trained in place)."""

    train_elbo: tf.Tensor
    """ELBO per example, per epoch, [epochs]; the mean of the epoch's minibatch estimates
    (like the loss Keras reports, it averages over the epoch while the networks change)."""
    validation_elbo: tf.Tensor | None
    """ELBO per example on ``validation`` at the end of each epoch, [epochs]; ``None``
    without ``validation``."""
    train_kl: tf.Tensor
    r""":math:`\mathrm{KL}(q(z \mid x)\,\|\,p(z))` per example, per epoch (the epoch's mean),
    [epochs]. Near zero means posterior collapse."""
    loss_trace: tf.Tensor
    """The training loss at every step, [steps]; minus the minibatch estimate of the
    (KL-weighted) objective per example."""


class AmortizationGap(NamedTuple):
    """Result of :func:`amortization_gap`, one entry per row of ``x``."""

    amortized_elbo: tf.Tensor
    r"""ELBO of the encoder's :math:`q_\lambda(z \mid x)`, [B]."""
    optimized_elbo: tf.Tensor
    r"""ELBO of the per-example :math:`q^\ast(z \mid x)` optimized with ``fit_vi``, [B]."""
    gap: tf.Tensor
    """The amortization gap, ``optimized_elbo - amortized_elbo``, [B]."""
    optimized_q: tfd.Distribution
    r"""The per-example :math:`q^\ast(z \mid x)`, a ``MultivariateNormalDiag`` with batch
    shape [B]: ``lambda x: gap.optimized_q`` is an encoder for these rows, for instance the
    proposal of :func:`iwae_bound` (a better one than the amortized encoder)."""
    elbo_trace: tf.Tensor
    """The summed ELBO of the per-example fits at every ``fit_vi`` step, [num_steps]."""


class ActiveUnits(NamedTuple):
    """Result of :func:`active_units`."""

    activity: tf.Tensor
    r""":math:`A_u = \mathrm{Var}_x\big(\mathbb E_{q(z \mid x)}[z_u]\big)` per latent
    dimension, [L]."""
    kl_per_dimension: tf.Tensor
    r"""Mean over ``x`` of the KL between the Gaussian marginals of :math:`q(z_u \mid x)` and
    :math:`p(z_u)`, [L] (they sum to the KL for diagonal Gaussians)."""
    num_active: tf.Tensor
    """The number of units with ``activity > threshold`` (int32)."""


class ImageData(NamedTuple):
    """Result of :func:`load_digits_images` and :func:`load_mnist`: flattened images."""

    x_train: np.ndarray
    """Training images, one row per image, [N, D] float32."""
    y_train: np.ndarray
    """Their digit labels, [N] int64."""
    x_validation: np.ndarray
    """Held-out images, [N_val, D] float32."""
    y_validation: np.ndarray
    """Their labels, [N_val] int64."""
    image_shape: tuple
    """The shape to reshape a row into, e.g. ``(8, 8)``."""
    max_value: int
    """The largest pixel value (16 for the digits, 1 when binarized), the Binomial
    ``total_count``."""
    source: str
    """``"digits"`` or ``"mnist"`` (what was actually loaded)."""


# ---------------------------------------------------------------------------------------
# Validation shared by the functions below
# ---------------------------------------------------------------------------------------


def _check_prior(prior):
    check_distribution(prior, "prior")
    check_scalar_batch(prior, "prior")
    if prior.event_shape.rank != 1 or not prior.event_shape.is_fully_defined():
        raise ValueError(
            f"`prior` must be a distribution over vectors z (event shape [L]), got event "
            f"shape {prior.event_shape}. Use e.g. tfd.MultivariateNormalDiag(tf.zeros(L))."
        )
    if not prior.dtype.is_floating:
        raise TypeError(f"`prior` must be over real-valued z, got dtype {prior.dtype.name}.")
    return int(prior.event_shape[0])


def _call_encoder(encoder, x, prior):
    return call_distribution(
        encoder,
        x,
        "encoder",
        [int(x.shape[0])],
        prior.event_shape.as_list(),
        prior.dtype,
        what="q(z | x) (one distribution per row of x, over the prior's latent space)",
        source="prior",
    )


def _call_decoder(decoder, z, x, data_name="x"):
    likelihood = call_distribution(
        decoder,
        z,
        "decoder",
        z.shape[:-1].as_list(),
        [int(x.shape[1])],
        x.dtype,
        what="p(x | z) (one distribution over a data row per sample of z)",
        source="x",
    )
    check_support(likelihood, x, "decoder", data_name)
    return likelihood


def _check_model(x, encoder, decoder, prior, num_samples, name="num_samples"):
    """Validate (x, encoder, decoder, prior) once, eagerly; returns x and q(z | x)."""
    _check_prior(prior)
    x = as_matrix(x, "x", prior.dtype)
    q = _call_encoder(encoder, x, prior)
    num_samples = check_count(num_samples, name)
    check_sample_budget(num_samples, q, name)
    probe = q.sample(1, seed=tf.constant([0, 0]))
    _call_decoder(decoder, probe, x)
    return x, q, num_samples


# ---------------------------------------------------------------------------------------
# The bounds
# ---------------------------------------------------------------------------------------


def vae_elbo(
    x,
    encoder: Callable,
    decoder: Callable,
    prior: tfd.Distribution,
    *,
    num_samples: int = 1,
    seed,
    analytic_kl: bool = True,
) -> tf.Tensor:
    r"""The ELBO of each data point under an encoder and a decoder.

    With :math:`z_s \sim q_\lambda(z \mid x)`, :math:`s = 1, \dots, S`:

    .. math::

        \widehat{\mathcal L}(x) = \frac1S \sum_{s=1}^S \log p_\theta(x \mid z_s)
        - \mathrm{KL}\big(q_\lambda(z \mid x)\,\|\,p(z)\big),

    with the KL in closed form when TFP has one (``analytic_kl=True``, the default: it
    removes the KL's share of the Monte Carlo noise) and otherwise, or with
    ``analytic_kl=False``, its Monte Carlo form, which makes the whole estimate
    :cite:p:`kingma2014autoencoding`

    .. math::

        \frac1S\sum_{s=1}^S \big[\log p_\theta(x \mid z_s) + \log p(z_s)
        - \log q_\lambda(z_s \mid x)\big].

    Both are unbiased for :math:`\mathcal L(x) \le
    \log p_\theta(x)`. They differ in one case that matters: when :math:`q` is the exact
    posterior, every term of the Monte Carlo form equals :math:`\log p_\theta(x)`, so it has
    zero variance, whereas the analytic form samples only the reconstruction term and keeps
    its noise (chapter 6 explains why, with the path derivative).

    Parameters
    ----------
    x : array_like
        Data, shape ``[B, D]`` (images flattened), finite; converted to ``prior``'s dtype.
    encoder : callable
        ``x -> q(z | x)``, a distribution with batch shape ``[B]`` and event shape ``[L]``.
    decoder : callable
        ``z -> p(x | z)``, for ``z`` of shape ``[S, B, L]`` a distribution with batch
        shape ``[S, B]`` and event shape ``[D]`` whose support holds ``x``.
    prior : tfp.distributions.Distribution
        :math:`p(z)`, batch shape ``[]``, event shape ``[L]``.
    num_samples : int, default 1
        :math:`S`, draws of :math:`z` per data point.
    seed : int or Tensor of shape [2]
        Stateless seed; the same seed gives the same estimate.
    analytic_kl : bool, default True
        Use the closed-form KL where TFP has it.

    Returns
    -------
    Tensor
        The ELBO estimate of each row of ``x``, shape ``[B]``.

    Raises
    ------
    TypeError, ValueError
        If ``x`` is not a finite ``[B, D]`` array; ``encoder`` or ``decoder`` is not
        callable, fails, or returns something other than a distribution of the shapes and
        dtype above (the message names which); the decoder's likelihood cannot produce
        ``x`` (e.g. digits 0–16 given to a Bernoulli); ``prior`` is invalid; or
        ``num_samples``, ``seed`` or ``analytic_kl`` is bad.

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    x, q, num_samples = _check_model(x, encoder, decoder, prior, num_samples)
    seed = sanitize_seed(seed)
    analytic_kl = check_bool(analytic_kl, "analytic_kl")
    reconstruction, kl = elbo_parts(x, q, decoder, prior, num_samples, seed, analytic_kl)
    return reconstruction - kl


def iwae_bound(
    x,
    encoder: Callable,
    decoder: Callable,
    prior: tfd.Distribution,
    *,
    num_samples: int,
    seed,
) -> tf.Tensor:
    r"""The importance-weighted bound :math:`\mathcal L_k(x)` of each data point.

    With :math:`k` draws :math:`z_s \sim q_\lambda(z \mid x)` and importance weights
    :math:`w_s = p_\theta(x \mid z_s)\,p(z_s) / q_\lambda(z_s \mid x)`:

    .. math::

        \widehat{\mathcal L}_k(x) = \log \frac1k \sum_{s=1}^k w_s, \qquad
        \mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p_\theta(x),

    in expectation, and :math:`\mathcal L_k \to \log p_\theta(x)` as :math:`k \to \infty`
    :cite:p:`burda2016importance`. It is chapter 1's importance-sampling estimate of the
    evidence with the encoder as the proposal; by Jensen's inequality its expectation is a
    lower bound. With one sample it is the Monte Carlo ELBO (``vae_elbo(...,
    analytic_kl=False)`` with the same seed gives the same numbers). The average over the
    :math:`k` weights is ``tfp.math.reduce_logmeanexp``, stable for weights of any size;
    the decoder runs on chunks of samples, so :math:`k` in the thousands fits in memory.

    Parameters
    ----------
    x : array_like
        Data, shape ``[B, D]``, finite; converted to ``prior``'s dtype.
    encoder : callable
        ``x -> q(z | x)``, batch shape ``[B]``, event shape ``[L]``.
    decoder : callable
        ``z -> p(x | z)``: batch shape ``[k, B]``, event shape ``[D]``.
    prior : tfp.distributions.Distribution
        :math:`p(z)`, batch shape ``[]``, event shape ``[L]``.
    num_samples : int
        :math:`k \ge 1`, importance samples per data point.
    seed : int or Tensor of shape [2]
        Stateless seed.

    Returns
    -------
    Tensor
        :math:`\widehat{\mathcal L}_k` of each row of ``x``, shape ``[B]``.

    Raises
    ------
    TypeError, ValueError
        As :func:`vae_elbo`.

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    x, q, num_samples = _check_model(x, encoder, decoder, prior, num_samples)
    seed = sanitize_seed(seed)
    z = q.sample(num_samples, seed=seed)
    return tfp.math.reduce_logmeanexp(log_weights(x, q, decoder, prior, z), axis=0)


# ---------------------------------------------------------------------------------------
# Network builders
# ---------------------------------------------------------------------------------------


def _hidden_units(hidden_units):
    if isinstance(hidden_units, (str, bytes)) or not hasattr(hidden_units, "__iter__"):
        raise TypeError(
            f"`hidden_units` must be a sequence of layer widths such as (256, 128), or () "
            f"for a linear map; got {type(hidden_units).__name__} {hidden_units!r}."
        )
    return tuple(check_count(units, "hidden_units") for units in hidden_units)


def _data_statistics(data, data_dim, name="data"):
    """(column means, one overall scale) of ``data``, or (zeros, 1) without data."""
    if data is None:
        return np.zeros(data_dim, np.float32), np.float32(1.0)
    data = as_matrix(data, name, tf.float32).numpy()
    if data.shape[1] != data_dim:
        raise ValueError(
            f"`{name}` must have {data_dim} columns (`data_dim`), got shape {list(data.shape)}."
        )
    scale = float(np.sqrt(np.mean(np.var(data, axis=0))))
    if not scale > 0:
        raise ValueError(f"`{name}` is constant: it has no scale to learn from.")
    return data.mean(axis=0).astype(np.float32), np.float32(scale)


def make_encoder(
    data_dim: int,
    latent_dim: int,
    *,
    hidden_units=(256, 128),
    data=None,
    seed=None,
) -> Callable:
    r"""A Gaussian encoder :math:`q_\lambda(z \mid x) = \mathcal N\big(\mu_\lambda(x),
    \mathrm{diag}\,\sigma_\lambda(x)^2\big)`, a tf_keras MLP.

    The network maps :math:`x` (standardized with the column means and one overall scale of
    ``data``, when given) through ReLU layers to :math:`2L` outputs, read as
    :math:`\mu` and :math:`\sigma = \mathrm{softplus}(\cdot) + 10^{-4}`. The Gaussian is
    the standard choice :cite:p:`kingma2014autoencoding`: it is reparameterized
    (:math:`z = \mu + \sigma \odot \varepsilon`, chapter 6), and its KL to a standard
    normal prior has a closed form, which removes that term's Monte Carlo noise. Its
    limits (one mode, no correlations) are part of the approximation gap
    :cite:p:`cremer2018inference`; chapter 9 builds richer families.

    Parameters
    ----------
    data_dim : int
        :math:`D`, the length of a data row.
    latent_dim : int
        :math:`L`, the dimension of :math:`z`.
    hidden_units : sequence of int, default (256, 128)
        Widths of the hidden ReLU layers; ``()`` gives a linear (affine) encoder, as in
        probabilistic PCA.
    data : array_like, optional
        Training data ``[N, D]``, used only to standardize the input (fixed column means
        and one scale), so that the encoder's behaviour does not depend on the data's units.
    seed : int or Tensor of shape [2], optional
        Stateless seed of the Glorot-uniform initial weights; the same seed builds the same
        network.

    Returns
    -------
    callable
        ``encoder(x)`` for ``x`` of shape ``[..., D]`` returns a ``MultivariateNormalDiag``
        with batch shape ``[...]`` and event shape ``[L]``. Its ``trainable_variables`` are
        those of its tf_keras network, ``encoder.network`` (to save or inspect). Build it
        inside ``strategy.scope()`` to train with a ``tf.distribute.Strategy``.

    Raises
    ------
    TypeError, ValueError
        For a bad dimension, layer width, seed, or ``data`` that is not a finite, non-constant
        ``[N, data_dim]`` array.

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    data_dim = check_count(data_dim, "data_dim")
    latent_dim = check_count(latent_dim, "latent_dim")
    hidden = _hidden_units(hidden_units)
    shift, scale = _data_statistics(data, data_dim)
    seed = sanitize_seed(seed)
    return GaussianEncoder(data_dim, latent_dim, hidden, seed, shift, scale)


def make_decoder(
    latent_dim: int,
    data_dim: int,
    *,
    likelihood: Literal["binomial", "bernoulli", "normal"] = "binomial",
    total_count: int = 16,
    hidden_units=(128, 256),
    data=None,
    seed=None,
) -> Callable:
    r"""A decoder :math:`p_\theta(x \mid z) = \prod_{d=1}^D p(x_d \mid f_\theta(z)_d)`, a
    tf_keras MLP with a likelihood that fits the data.

    The network maps :math:`z` through ReLU layers to :math:`D` outputs :math:`f_\theta(z)`,
    one per pixel, and the likelihood must be able to produce the data, or the ELBO means
    nothing:

    - ``"binomial"`` (the default): :math:`x_d \sim \mathrm{Binomial}(n, \sigma(f_d))` with
      :math:`n` = ``total_count``. It is the exact likelihood for integer counts
      :math:`0, \dots, n`: scikit-learn's digits are counts of 0 to 16 (each 8×8 pixel
      counts the set pixels of a 4×4 block of a 32×32 bitmap), so ``total_count=16``. A
      Bernoulli cannot produce a 16, and a Gaussian puts mass on impossible values such as
      −0.3 and 7.5, so its "log-likelihood" is a density, not comparable to a probability
      of the data.
    - ``"bernoulli"``: :math:`x_d \sim \mathrm{Bernoulli}(\sigma(f_d))`, the exact
      likelihood for binary (binarized) images, such as the usual binarized MNIST
      :cite:p:`burda2016importance`.
    - ``"normal"``: :math:`x_d \sim \mathcal N(f_d, \sigma^2)` with one learned noise sd
      :math:`\sigma` for all pixels: for real-valued data, and the linear-Gaussian model
      of probabilistic PCA :cite:p:`tipping1999probabilistic` with ``hidden_units=()``.

    With ``data``, the output starts at the data's mean (the logit of the mean pixel
    value for the count likelihoods) and the ``normal`` likelihood works in units of the
    data's scale, so fits do not depend on the units of :math:`x`.

    Parameters
    ----------
    latent_dim : int
        :math:`L`.
    data_dim : int
        :math:`D`.
    likelihood : {"binomial", "bernoulli", "normal"}, default "binomial"
        See above and :data:`LIKELIHOODS`.
    total_count : int, default 16
        :math:`n` of the Binomial (the largest pixel value); ignored by the others.
    hidden_units : sequence of int, default (128, 256)
        Hidden ReLU layer widths; ``()`` gives a linear (affine) decoder.
    data : array_like, optional
        Training data ``[N, D]``, used only to initialize and scale the output.
    seed : int or Tensor of shape [2], optional
        Stateless seed of the initial weights.

    Returns
    -------
    callable
        ``decoder(z)`` for ``z`` of shape ``[..., L]`` returns a
        ``tfd.Independent`` distribution over data rows with batch shape ``[...]`` and
        event shape ``[D]``. ``decoder.network`` is the tf_keras network;
        ``decoder.noise_scale`` is :math:`\sigma` for ``"normal"``.

    Raises
    ------
    TypeError, ValueError
        For an unknown likelihood, a bad count, width or seed, or bad ``data`` (including
        data outside the likelihood's support, e.g. a 16 for a Bernoulli).

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    latent_dim = check_count(latent_dim, "latent_dim")
    data_dim = check_count(data_dim, "data_dim")
    check_choice(likelihood, "likelihood", LIKELIHOODS)
    total_count = check_count(total_count, "total_count")
    if likelihood == "bernoulli":
        total_count = 1
    hidden = _hidden_units(hidden_units)
    shift, scale = _data_statistics(data, data_dim)
    seed = sanitize_seed(seed)
    decoder = Decoder(
        latent_dim,
        data_dim,
        hidden,
        likelihood,
        seed,
        total_count,
        shift,
        scale,
        data_mean=None if data is None else shift,
    )
    if data is not None and likelihood == "binomial":
        largest = float(np.max(as_matrix(data, "data")))
        if largest > total_count:
            raise ValueError(
                f"`total_count` ({total_count}) is below the largest value of `data` "
                f"({largest:g}): a Binomial(n, p) cannot produce counts above n. Pass "
                f"total_count={int(np.ceil(largest))} (for the digits, 16)."
            )
    if data is not None:
        at_zero = decoder(tf.zeros([1, latent_dim]))
        check_support(at_zero, as_matrix(data, "data"), "decoder", "data", check_log_prob=False)
    return decoder


# ---------------------------------------------------------------------------------------
# fit_vae: one compiled train step per (encoder, decoder, strategy)
# ---------------------------------------------------------------------------------------


# The likelihood of each (encoder, decoder) pair already probed with a given prior and
# batch signature: shapes and dtypes are static, so a later fit need not call the
# networks eagerly again (about 0.1 s, as much as 50 small training steps).
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_networks(encoder, decoder, prior, probe, seed):
    """Check the encoder and decoder once, eagerly, on the first batch (see the module's
    contract); returns the decoder's likelihood (its family decides the support)."""
    key = (type(prior).__name__, str(prior.event_shape), prior.dtype.name, str(probe.shape))
    try:
        cache = _PROBED.setdefault(encoder, weakref.WeakKeyDictionary()).setdefault(decoder, {})
    except TypeError:
        cache = {}
    if key in cache:
        return cache[key]
    q = _call_encoder(encoder, probe, prior)
    if q.reparameterization_type != tfd.FULLY_REPARAMETERIZED:
        raise ValueError(
            f"`encoder` returns a {type(q).__name__}, which is not reparameterized: fit_vae "
            "differentiates through the samples z (chapter 6). Use a Gaussian encoder "
            "(make_encoder) or another reparameterized family."
        )
    cache[key] = _call_decoder(decoder, q.sample(1, seed=seed), probe, "train")
    return cache[key]


def _check_dataset(train, prior):
    spec = train.element_spec
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 1 or spec.shape[0] is None:
        raise ValueError(
            f"`train` as a tf.data.Dataset must yield single rows of shape [D] (unbatched; "
            f"fit_vae batches them), got element spec {spec}. Use dataset.unbatch() first."
        )
    if not (spec.dtype.is_floating or spec.dtype.is_integer):
        raise TypeError(f"`train` must yield real numbers, got dtype {spec.dtype.name}.")
    return train.map(lambda row: tf.cast(row, prior.dtype))


def _progress_bar(epoch, epochs, steps, progress):
    if not progress:
        return None
    from tqdm import tqdm  # noqa: PLC0415 (only needed for progress output)

    return tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch")


def _check_training_arguments(encoder, decoder, strategy):
    check_strategy(strategy)
    for module, name in ((encoder, "encoder"), (decoder, "decoder")):
        if not callable(module):
            raise TypeError(
                f"`{name}` must be callable (e.g. from make_{name}), got {type(module).__name__}."
            )
    variables = (
        *trainable_variables(encoder, "encoder"),
        *trainable_variables(decoder, "decoder"),
    )
    if not variables:
        raise ValueError(
            "`encoder` and `decoder` have no trainable variables: build them with "
            "make_encoder / make_decoder, or as tf.Module / tf_keras models."
        )
    if strategy is not None:
        for variable in variables:
            if not strategy.extended.variable_created_in_scope(variable):
                raise ValueError(
                    "The variables of `encoder` and `decoder` must be created under "
                    "`strategy`.scope(): build them inside `with strategy.scope():` (a "
                    "MirroredStrategy keeps one copy per device)."
                )


def fit_vae(
    train,
    encoder: Callable,
    decoder: Callable,
    prior: tfd.Distribution,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float = 1e-3,
    decay: bool = False,
    seed,
    validation=None,
    num_samples: int = 1,
    kl_weight: float = 1.0,
    kl_warmup_epochs: int = 0,
    progress: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = True,
) -> VAEFit:
    r"""Train a VAE's encoder and decoder together by maximizing the ELBO, in place.

    Each step takes a minibatch of :math:`B` rows, draws :math:`S` reparameterized
    samples :math:`z = \mu_\lambda(x) + \sigma_\lambda(x) \odot \varepsilon` per row, and
    takes an Adam step :cite:p:`kingma2015adam` on minus the minibatch mean of

    .. math::

        \frac1S\sum_{s=1}^S \log p_\theta(x_b \mid z_{bs}) - \beta_t\,
        \mathrm{KL}\big(q_\lambda(z \mid x_b)\,\|\,p(z)\big),

    whose gradient in :math:`(\theta, \lambda)` is unbiased for that of the mean ELBO when
    :math:`\beta_t = 1` :cite:p:`kingma2014autoencoding`. :math:`\beta_t` (``kl_weight``,
    ramped up linearly over ``kl_warmup_epochs``) trades reconstruction against the KL: a
    warm-up is the KL annealing remedy for posterior collapse :cite:p:`bowman2016generating`;
    a constant :math:`\beta > 1` trains the :math:`\beta`-VAE objective
    :cite:p:`higgins2017beta`, a looser bound on :math:`\log p_\theta(x)`; a constant
    :math:`\beta < 1` is no longer a bound. The history always reports the true ELBO
    (:math:`\beta = 1`).

    **Compiled once.** A step is one ``tf.function(jit_compile=True)`` (XLA) program:
    encoder, sampling, decoder, gradients and the Adam update. On one device with
    in-memory data, one call runs a block of up to 20 such steps in a ``tf.while_loop``
    inside the same XLA program (what Keras calls ``steps_per_execution``): TensorFlow's
    fixed cost per call, about a millisecond, would otherwise exceed a small model's step.
    The programs are built once per (encoder, decoder, strategy, ``num_samples``) together
    with their tf_keras Adam, and cached: every epoch and a second ``fit_vae`` call with
    the same networks run the same compiled programs (a second call continues training,
    with the Adam moments kept).

    **Input pipeline.** Arrays go through ``tf.data``: a new stateless permutation of the
    rows per epoch (the same ``seed`` gives the same order), minibatches of exactly
    ``batch_size`` rows (the last ``N mod B`` rows of each permutation are skipped, so that
    there is one static shape), gathered and prefetched by ``tf.data`` while the previous
    block trains. The pipeline is built once per data shape and reused (the rows are
    copied into a variable that it reads). A ``tf.data.Dataset`` of rows is batched the
    same way, one step per minibatch, in its own order (shuffle it yourself).

    **Several devices.** With ``strategy`` (any ``tf.distribute.Strategy``: a
    ``MirroredStrategy`` over the GPUs of a machine, a ``MultiWorkerMirroredStrategy``
    over machines), each global batch of ``batch_size`` rows is split across the replicas;
    each replica computes the gradient of its share of the minibatch mean in one XLA
    program, the optimizer sums them across replicas and applies the same update to every
    copy of the variables. The encoder and decoder must be built inside
    ``strategy.scope()``. The noise of step :math:`t` on replica :math:`r` comes from the
    seed folded with :math:`t` and :math:`r`, so a run is reproducible, and the same in
    distribution (not draw for draw) as a one-device run with the same global batch.

    Parameters
    ----------
    train : array_like or tf.data.Dataset
        Training data ``[N, D]`` (in the support of the decoder's likelihood), or a dataset
        yielding single rows ``[D]``.
    encoder : callable
        ``x -> q(z | x)`` (see the module's contract), with ``trainable_variables``;
        reparameterized, e.g. from :func:`make_encoder`.
    decoder : callable
        ``z -> p(x | z)``, with ``trainable_variables``, e.g. from :func:`make_decoder`.
    prior : tfp.distributions.Distribution
        :math:`p(z)`, batch shape ``[]``, event shape ``[L]``, held fixed.
    epochs : int
        Passes over ``train``.
    batch_size : int
        :math:`B`, the global minibatch size (at most :math:`N`).
    learning_rate : float, default 1e-3
        Adam's learning rate (constant, as in the usual VAE recipes, unless ``decay``).
    decay : bool, default False
        Decay the learning rate along a cosine from ``learning_rate`` to 1% of it over the
        steps of this call, so that the last iterate settles at an optimum instead of
        jittering around it with the gradient noise (as :func:`vicourse.fit_vi` does).
    seed : int or Tensor of shape [2]
        Stateless seed of the data order and the noise.
    validation : array_like, optional
        Held-out data ``[N_val, D]``: its ELBO per example is computed after every epoch
        (same noise every epoch, so the curve shows the networks, not the sampling).
    num_samples : int, default 1
        :math:`S`, samples of :math:`z` per row and step.
    kl_weight : float, default 1.0
        :math:`\beta`, the weight of the KL in the training objective (positive).
    kl_warmup_epochs : int, default 0
        Epochs over which :math:`\beta_t` rises linearly from about 0 to ``kl_weight``.
    progress : bool, default True
        Show a tqdm progress bar per epoch, with the ELBO at its end.
    strategy : tf.distribute.Strategy, optional
        Train on the strategy's replicas (see above).
    jit_compile : bool, default True
        Compile the step with XLA; ``False`` runs a plain ``tf.function`` graph (no XLA
        compilation, which takes a few seconds: for very short fits, or a likelihood XLA
        cannot compile).

    Returns
    -------
    VAEFit
        Per-epoch train and validation ELBO and KL, and the per-step loss.

    Raises
    ------
    TypeError, ValueError
        For data that are not finite ``[N, D]`` arrays or lie outside the likelihood's
        support; an encoder or decoder that breaks the contract (the message names which),
        is not reparameterized, or has no trainable variables; variables not created under
        ``strategy.scope()``; or a bad count, rate, weight, flag, seed or strategy.

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    _check_prior(prior)
    epochs = check_count(epochs, "epochs")
    batch_size = check_count(batch_size, "batch_size")
    rate = check_real(learning_rate, "learning_rate", low=0.0, low_inclusive=False)
    weight = check_real(kl_weight, "kl_weight", low=0.0, low_inclusive=False)
    warmup_epochs = check_count(kl_warmup_epochs, "kl_warmup_epochs", minimum=0)
    num_samples = check_count(num_samples, "num_samples")
    progress = check_bool(progress, "progress")
    decay = check_bool(decay, "decay")
    jit_compile = check_bool(jit_compile, "jit_compile")
    _check_training_arguments(encoder, decoder, strategy)
    seed = sanitize_seed(seed)
    data_seed, noise_seed, eval_seed = tfp.random.split_seed(seed, n=3)

    if isinstance(train, tf.data.Dataset):
        rows = _check_dataset(train, prior)
        probe = next(iter(rows.batch(batch_size).take(1)), None)
        if probe is None:
            raise ValueError("`train` (a tf.data.Dataset) yielded no rows.")
        cardinality = int(train.cardinality())
        batches = rows.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        if strategy is not None:
            batches = strategy.experimental_distribute_dataset(batches)
        plan = _Plan(batches, cardinality // batch_size if cardinality >= 0 else None)
        if plan.steps is None and (decay or warmup_epochs):
            raise ValueError(
                "`decay` and `kl_warmup_epochs` need the number of steps per epoch, but the "
                "length of `train` is unknown: declare it with dataset.apply("
                "tf.data.experimental.assert_cardinality(N))."
            )
    else:
        x = as_matrix(train, "train", prior.dtype)
        batch_size = check_count(batch_size, "batch_size", maximum=int(x.shape[0]))
        probe = x[:batch_size]
    likelihood = _probe_networks(encoder, decoder, prior, probe, noise_seed)
    if not isinstance(train, tf.data.Dataset):
        check_support(likelihood, x, "decoder", "train", check_log_prob=False)
    blocks = num_validation = None
    if validation is not None:
        validation = as_matrix(validation, "validation", prior.dtype)
        if int(validation.shape[1]) != int(probe.shape[1]):
            raise ValueError(
                f"`validation` must have the {int(probe.shape[1])} columns of `train`, got "
                f"shape {validation.shape.as_list()}."
            )
        check_support(likelihood, validation, "decoder", "validation", check_log_prob=False)
        blocks, num_validation = validation_blocks(validation)

    trainer = trainer_for(encoder, decoder, strategy, num_samples, jit_compile)
    if not isinstance(train, tf.data.Dataset):
        plan = _array_plan(trainer, x, batch_size, epochs, data_seed)
    trainer.set_schedule(rate, decay, (plan.steps or 1) * epochs)
    settings = _Settings(
        noise_seed,
        prior,
        tf.constant(weight, tf.float32),
        tf.constant(warmup_epochs * (plan.steps or 0), tf.int64),
    )
    history = _History()
    if plan.feed is not None:
        if plan.feed.run is None:  # resolved once per feed: later fits skip the lookup
            plan.feed.run = Runner(trainer.block_from_iterator)
        run = plan.feed.run
    else:
        run = Runner(trainer.step)
    evaluate = Runner(trainer.evaluate)
    for epoch in range(epochs):
        bar = _progress_bar(epoch, epochs, plan.steps, progress)
        elbo, kl, loss = _run_epoch(run, plan, settings, bar)
        history.add(elbo, kl, loss)
        postfix = {"elbo": f"{float(history.train[-1]):.2f}"}
        if blocks is not None:
            sums = [evaluate(block, mask, eval_seed, prior)[0] for block, mask in blocks]
            history.validation.append(tf.add_n(sums) / num_validation)
            postfix["validation"] = f"{float(history.validation[-1]):.2f}"
        if bar is not None:
            bar.set_postfix(postfix)
            bar.close()
    return history.result(validation is not None)


class _Plan(NamedTuple):
    """How fit_vae feeds its data: ``source`` (a dataset, or an iterator already open over
    all epochs) with ``steps`` minibatches per epoch (None if unknown), run in blocks of
    several steps per compiled call (``feed``, the ArrayFeed of in-memory data on one
    device) or one step per call (``feed`` None)."""

    source: object
    steps: int | None
    feed: object = None


def _array_plan(trainer, x, batch_size, epochs, seed):
    steps = int(x.shape[0]) // batch_size
    if trainer.strategy is not None:
        dataset = array_batches(x, batch_size, epochs, seed)
        return _Plan(iter(trainer.strategy.experimental_distribute_dataset(dataset)), steps)
    feed = trainer.feed(int(x.shape[0]), int(x.shape[1]), x.dtype, batch_size)
    return _Plan(feed.start(x, seed), steps, feed)


class _Settings(NamedTuple):
    seed: tf.Tensor
    prior: tfd.Distribution
    kl_weight: tf.Tensor
    warmup_steps: tf.Tensor


def _run_epoch(run, plan, settings, bar):
    """One pass: per-step (ELBO, KL, loss) traces of the epoch."""
    traces = []
    if plan.feed is not None:  # in-memory data, one device: K steps per compiled call
        for count in plan.feed.blocks:
            values = run(plan.source, *settings)
            traces.append([v[:count] for v in values])
            if bar is not None:
                bar.update(count)
    else:
        # An iterator open over all epochs: a known number of steps, each fetching its
        # minibatch inside the graph. A dataset: iterate it until it ends.
        is_iterator = isinstance(plan.source, (tf.data.Iterator, tf.distribute.DistributedIterator))
        for source in [plan.source] * plan.steps if is_iterator else plan.source:
            values = run(source, *settings)
            traces.append([tf.reshape(v, [1]) for v in values])
            if bar is not None:
                bar.update(1)
    if not traces:
        raise ValueError(
            "`train` yielded no full minibatch: use a `batch_size` at most its number of rows."
        )
    return [tf.concat(column, axis=0) for column in zip(*traces, strict=True)]


class _History:
    def __init__(self):
        self.train, self.kl, self.validation, self.loss = [], [], [], []

    def add(self, elbo, kl, loss):
        self.train.append(tf.reduce_mean(elbo))
        self.kl.append(tf.reduce_mean(kl))
        self.loss.append(loss)

    def result(self, with_validation):
        return VAEFit(
            tf.stack(self.train),
            tf.stack(self.validation) if with_validation else None,
            tf.stack(self.kl),
            tf.concat(self.loss, axis=0),
        )


# ---------------------------------------------------------------------------------------
# Diagnostics: the amortization gap and active units
# ---------------------------------------------------------------------------------------


class _DecoderLogJoint:
    """``log p(x, z) = sum_b [log p(x_b | z_b) + log p(z_b)]`` for z [S, B, L], with the
    data in a variable: one object (and one compiled fit_vi loop) per decoder, prior and
    data shape, reused by later calls with new data of the same shape."""

    def __init__(self, decoder, prior, x):
        self.decoder, self.prior = decoder, prior
        self.x = tf.Variable(x, trainable=False)

    def __call__(self, z):
        log_joint = self.decoder(z).log_prob(self.x) + self.prior.log_prob(z)
        return tf.reduce_sum(log_joint, axis=-1)


_LOG_JOINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _decoder_log_joint(decoder, prior, x):
    key = (id(prior), tuple(x.shape.as_list()), x.dtype)
    try:
        cache = _LOG_JOINTS.setdefault(decoder, {})
    except TypeError:
        return _DecoderLogJoint(decoder, prior, x)
    if key not in cache or cache[key].prior is not prior:
        cache[key] = _DecoderLogJoint(decoder, prior, x)
    else:
        cache[key].x.assign(x)
    return cache[key]


def _local_surrogate(q):
    """Per-example diagonal Gaussians q*(z_b) for all rows at once (event [B, L]), started
    at the encoder's mean and sd: the sum of their ELBOs is separable, and Adam is
    elementwise, so one fit of the joint is B independent per-example fits."""
    loc = tf.Variable(q.mean())
    scale = tfp.util.TransformedVariable(q.stddev(), tfp.bijectors.Softplus())
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=2)


def amortization_gap(
    x,
    encoder: Callable,
    decoder: Callable,
    prior: tfd.Distribution,
    *,
    num_steps: int = 2000,
    learning_rate: float = 0.05,
    num_samples: int = 1000,
    seed,
    jit_compile: bool = True,
) -> AmortizationGap:
    r"""The amortization gap of :cite:t:`cremer2018inference`, per data point.

    The encoder's :math:`q_\lambda(z \mid x)` is one network's guess; the best member of the
    same family for this :math:`x` alone, :math:`q^\ast(z \mid x)`, found by optimizing its
    own parameters with the decoder held fixed, can only do better. With
    :math:`\log p_\theta(x)` (estimated by :func:`iwae_bound` with many samples, with
    :math:`q^\ast` as the proposal: with the encoder as the proposal the estimate can fall
    below :math:`\mathcal L[q^\ast]`), the inference gap splits in two:

    .. math::

        \underbrace{\log p_\theta(x) - \mathcal L[q_\lambda]}_{\text{inference gap}}
        = \underbrace{\log p_\theta(x) - \mathcal L[q^\ast]}_{\text{approximation gap}}
        + \underbrace{\mathcal L[q^\ast] - \mathcal L[q_\lambda]}_{\text{amortization gap}}.

    The approximation gap is the family's fault (a diagonal Gaussian cannot match a skewed
    or correlated posterior); the amortization gap is the encoder's (one network cannot fit
    every data point's optimum).

    :math:`q^\ast` is a diagonal Gaussian per row, started at the encoder's mean and
    standard deviation and fitted with :func:`vicourse.fit_vi` (reparameterization
    gradients, Adam with a cosine-decayed rate; chapter 6). All rows are fitted in one
    call: their ELBOs add up and do not interact, so this is the same as one fit per row.
    Both ELBOs are then estimated with ``num_samples`` draws and the analytic KL.

    Parameters
    ----------
    x : array_like
        Data rows ``[B, D]`` (held-out data, to measure what the encoder generalizes).
    encoder : callable
        ``x -> q(z | x)``, batch ``[B]``, event ``[L]``, with ``mean()`` and ``stddev()``
        (a Gaussian encoder such as :func:`make_encoder`'s).
    decoder : callable
        ``z -> p(x | z)``, batch ``[S, B]``, event ``[D]``; held fixed.
    prior : tfp.distributions.Distribution
        :math:`p(z)`, batch ``[]``, event ``[L]``.
    num_steps : int, default 2000
        ``fit_vi`` steps of the per-example optimization.
    learning_rate : float, default 0.05
        Its initial Adam learning rate.
    num_samples : int, default 1000
        Samples for the final ELBO estimates (at least 2).
    seed : int or Tensor of shape [2]
        Stateless seed.
    jit_compile : bool, default True
        Run ``fit_vi`` compiled with XLA; ``False`` runs a plain graph (no compilation,
        which takes a few seconds: faster for a short fit).

    Returns
    -------
    AmortizationGap
        The two ELBOs and their difference per row, the optimized :math:`q^\ast`, and the
        fit's ELBO trace.

    Raises
    ------
    TypeError, ValueError
        As :func:`vae_elbo`, and for an encoder whose distribution has no mean or standard
        deviation, or a bad count or rate.

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    x, q, num_samples = _check_model(x, encoder, decoder, prior, num_samples)
    num_samples = check_count(num_samples, "num_samples", minimum=2)
    num_steps = check_count(num_steps, "num_steps")
    rate = check_real(learning_rate, "learning_rate", low=0.0, low_inclusive=False)
    jit_compile = check_bool(jit_compile, "jit_compile")
    seed = sanitize_seed(seed)
    fit_seed, amortized_seed, optimized_seed = tfp.random.split_seed(seed, n=3)
    try:
        surrogate = _local_surrogate(q)
    except NotImplementedError:
        raise TypeError(
            f"`encoder` returns a {type(q).__name__} without mean() and stddev(): the "
            "per-example fit starts from them. Use a Gaussian encoder."
        ) from None
    log_joint = _decoder_log_joint(decoder, prior, x)
    fit = fit_vi(
        log_joint,
        surrogate,
        num_steps=num_steps,
        learning_rate=rate,
        seed=fit_seed,
        jit_compile=jit_compile,
    )
    marginals = surrogate.distribution
    optimized = tfd.MultivariateNormalDiag(
        tf.convert_to_tensor(marginals.loc), tf.convert_to_tensor(marginals.scale)
    )
    amortized_elbo = _elbo(x, q, decoder, prior, num_samples, amortized_seed)
    optimized_elbo = _elbo(x, optimized, decoder, prior, num_samples, optimized_seed)
    return AmortizationGap(
        amortized_elbo, optimized_elbo, optimized_elbo - amortized_elbo, optimized, fit.elbo_trace
    )


def _elbo(x, q, decoder, prior, num_samples, seed):
    reconstruction, kl = elbo_parts(x, q, decoder, prior, num_samples, seed, True)
    return reconstruction - kl


def active_units(
    x,
    encoder: Callable,
    prior: tfd.Distribution,
    *,
    threshold: float = 0.01,
) -> ActiveUnits:
    r"""Which latent dimensions the encoder uses: the activity statistic of
    :cite:t:`burda2016importance`.

    A unit :math:`u` is *active* when the encoder's mean of :math:`z_u` changes with the
    data:

    .. math::

        A_u = \mathrm{Var}_{x}\big(\mathbb E_{q(z \mid x)}[z_u]\big) > \text{threshold}
        \quad (0.01 \text{ by default}).

    An inactive unit has :math:`q(z_u \mid x) \approx p(z_u)` for every :math:`x`: it carries
    no information about :math:`x`, and its KL term is near zero. That is *posterior
    collapse* :cite:p:`bowman2016generating,lucas2019understanding`, which the per-dimension
    KL also shows: the mean over :math:`x` of
    :math:`\mathrm{KL}\big(\mathcal N(\mu_u(x), \sigma_u(x)^2)\,\|\,\mathcal N(m_u, s_u^2)\big)`
    with :math:`(m_u, s_u)` the prior's marginal mean and sd. For diagonal Gaussians (as
    :func:`make_encoder` and a standard normal prior) these add up to the total KL; for
    other families they are the KLs of the Gaussian marginals with the same moments.

    Parameters
    ----------
    x : array_like
        Data rows ``[N, D]`` (N ≥ 2).
    encoder : callable
        ``x -> q(z | x)``, batch ``[N]``, event ``[L]``, with ``mean()`` and ``stddev()``.
    prior : tfp.distributions.Distribution
        :math:`p(z)`, batch ``[]``, event ``[L]``, with ``mean()`` and ``stddev()``.
    threshold : float, default 0.01
        The activity above which a unit counts as active (positive).

    Returns
    -------
    ActiveUnits
        ``activity`` and ``kl_per_dimension`` ([L] each) and ``num_active``.

    Raises
    ------
    TypeError, ValueError
        For bad ``x``, an encoder that breaks the contract or has no mean or sd, a bad
        prior or threshold.

    Notes
    -----
    Taught in :doc:`/book/chapters/08_vae`.
    """
    _check_prior(prior)
    x = as_matrix(x, "x", prior.dtype)
    if int(x.shape[0]) < 2:
        raise ValueError("`x` needs at least 2 rows: activity is a variance over the data.")
    threshold = check_real(threshold, "threshold", low=0.0, low_inclusive=False)
    q = _call_encoder(encoder, x, prior)
    try:
        mean, sd = q.mean(), q.stddev()
        prior_marginal = tfd.Normal(prior.mean(), prior.stddev())
    except NotImplementedError:
        raise TypeError(
            "`encoder` and `prior` must have mean() and stddev() (Gaussian families) for the "
            "activity and the per-dimension KL."
        ) from None
    activity = tf.math.reduce_variance(mean, axis=0)
    kl = tf.reduce_mean(tfd.kl_divergence(tfd.Normal(mean, sd), prior_marginal), axis=0)
    num_active = tf.reduce_sum(tf.cast(activity > threshold, tf.int32))
    return ActiveUnits(activity, kl, num_active)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def _binarized(images, max_value):
    """Threshold at half the maximum: 1 where a pixel is more than half on."""
    return (images > max_value / 2).astype(np.float32)


def load_digits_images(*, binarize: bool = False) -> ImageData:
    r"""scikit-learn's 8×8 handwritten digits as flattened images, with a fixed split.

    The 1,797 images :cite:p:`alpaydin1998optical` ship inside scikit-learn, so this works
    offline. Each pixel is an
    integer count from 0 to 16 (the number of set pixels in a 4×4 block of a 32×32 bitmap),
    which is why :func:`make_decoder`'s default Binomial(16, ·) likelihood is exact for
    them. The split is fixed: 80% training (1,437 images) and 20% validation (360),
    stratified by digit, the same on every call and every machine.

    Parameters
    ----------
    binarize : bool, default False
        Return 0/1 pixels (1 where the count is above 8), for a Bernoulli decoder.

    Returns
    -------
    ImageData
        ``x_train`` [1437, 64] and ``x_validation`` [360, 64] as float32, their labels,
        ``image_shape=(8, 8)``, ``max_value`` (16, or 1 when binarized) and
        ``source="digits"``.

    Notes
    -----
    Used in :doc:`/book/chapters/08_vae`.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 (only needed here)
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    binarize = check_bool(binarize, "binarize")
    digits = load_digits()
    images = digits.data.astype(np.float32)
    max_value = 16
    if binarize:
        images, max_value = _binarized(images, max_value), 1
    x_train, x_val, y_train, y_val = train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=0.2,
        stratify=digits.target,
        random_state=0,
    )
    return ImageData(x_train, y_train, x_val, y_val, (8, 8), max_value, "digits")


# The host the MNIST file comes from (tf_keras.datasets.mnist's origin); tests point it at
# an unroutable address to check the fallback.
_MNIST_HOST = ("storage.googleapis.com", 443)
_MNIST_FILE = "mnist.npz"


def _reachable(address, timeout):
    """Can a TCP connection to ``address`` be opened within ``timeout`` seconds? Name
    resolution ignores socket timeouts and can hang, so the attempt runs in a daemon thread
    that is abandoned when the time is up."""
    result = []

    def attempt():
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _mnist_arrays(timeout):
    """(x_train, y_train), (x_test, y_test) through tf_keras.datasets, or an error message."""
    cached = os.path.join(
        os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
        "datasets",
        _MNIST_FILE,
    )
    if not os.path.exists(cached):
        if os.environ.get("VICOURSE_OFFLINE"):
            return None, "VICOURSE_OFFLINE is set"
        if not _reachable(_MNIST_HOST, timeout):
            return None, f"{_MNIST_HOST[0]} is not reachable within {timeout:g} s"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # bounds every read of the download
    try:
        return tf_keras.datasets.mnist.load_data(), None
    except Exception as err:  # noqa: BLE001 (any download failure means: fall back)
        return None, f"the download failed ({type(err).__name__}: {err})"
    finally:
        socket.setdefaulttimeout(previous)


def load_mnist(*, binarize: bool = True, timeout: float = 10.0) -> ImageData:
    r"""MNIST :cite:p:`lecun1998gradient` (60,000 + 10,000 images of 28×28) through
    ``tf_keras.datasets``, for Colab; the digits when it cannot be downloaded.

    The file (11 MB) is downloaded once into the Keras cache (``~/.keras/datasets``, or
    ``$KERAS_HOME``). Without a cached copy, the host is first probed for ``timeout``
    seconds (name resolution included, which can otherwise hang for minutes), and every
    read of the download is bounded by the same timeout. If anything fails, or the
    environment variable ``VICOURSE_OFFLINE`` is set, it warns with the reason and returns
    :func:`load_digits_images` instead (``source`` says which): it never hangs and never
    raises for a network problem.

    Parameters
    ----------
    binarize : bool, default True
        Threshold the pixels at half their maximum (127.5 for MNIST's 0–255), for a
        Bernoulli decoder, as in the VAE literature's binarized MNIST
        :cite:p:`burda2016importance`. ``False`` keeps the counts (``max_value`` 255 or 16).
    timeout : float, default 10.0
        Seconds allowed for the reachability probe and for each network read (positive).

    Returns
    -------
    ImageData
        MNIST flattened to [60000, 784] and [10000, 784] (the official test set as the
        validation set), ``image_shape=(28, 28)``, ``source="mnist"``; or the digits.

    Warns
    -----
    UserWarning
        When it falls back to the digits, with the reason.

    Notes
    -----
    Used in :doc:`/book/chapters/08_vae`.
    """
    binarize = check_bool(binarize, "binarize")
    timeout = check_real(timeout, "timeout", low=0.0, low_inclusive=False)
    arrays, reason = _mnist_arrays(timeout)
    if arrays is None:
        warnings.warn(
            f"load_mnist: MNIST is not available ({reason}); using scikit-learn's 8x8 "
            "digits instead (load_digits_images). Connect to the internet, or place "
            f"{_MNIST_FILE} in ~/.keras/datasets, to use MNIST.",
            stacklevel=2,
        )
        return load_digits_images(binarize=binarize)
    (x_train, y_train), (x_test, y_test) = arrays
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32)
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32)
    max_value = 255
    if binarize:
        x_train, x_test, max_value = _binarized(x_train, 255), _binarized(x_test, 255), 1
    return ImageData(
        x_train,
        y_train.astype(np.int64),
        x_test,
        y_test.astype(np.int64),
        (28, 28),
        max_value,
        "mnist",
    )
