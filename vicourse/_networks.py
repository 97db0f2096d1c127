"""The encoder and decoder networks that :func:`vicourse.make_encoder` and
:func:`vicourse.make_decoder` build (private).

Each is a small ``tf.Module`` that holds a tf_keras multilayer perceptron and turns its
output into a TFP distribution. They are plain callables (``encoder(x)`` returns
:math:`q(z \\mid x)`, ``decoder(z)`` returns :math:`p(x \\mid z)`), so user-written networks
with the same contract work everywhere these do.

Weights are initialized with stateless random ops from the caller's seed (Glorot-uniform
kernels, zero biases), so the same seed builds the same network.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfd = tfp.distributions

__all__ = ["DECODER_LIKELIHOODS", "Decoder", "GaussianEncoder", "MLP"]

DECODER_LIKELIHOODS = ("binomial", "bernoulli", "normal")

# softplus(x + _SOFTPLUS_ONE) = 1 at x = 0: networks start with unit scales.
_SOFTPLUS_ONE = math.log(math.e - 1.0)
# Smallest standard deviation q(z | x) can take: keeps log q finite in float32.
_MIN_SCALE = 1e-4


class MLP(tf_keras.Model):
    """Dense layers with ReLU between them and a linear output layer.

    It is applied to the last axis, so inputs may have any number of leading (sample and
    batch) axes: ``[..., in] -> [..., out]``.
    """

    def __init__(self, input_dim, hidden_units, output_dim, seed, output_bias=None):
        super().__init__()
        sizes = [input_dim, *hidden_units, output_dim]
        self.dense_layers = [
            tf_keras.layers.Dense(units, activation="relu" if k < len(hidden_units) else None)
            for k, units in enumerate(sizes[1:])
        ]
        seeds = tf.random.experimental.stateless_split(seed, len(self.dense_layers))
        for k, (layer, fan_in, fan_out) in enumerate(
            zip(self.dense_layers, sizes[:-1], sizes[1:], strict=True)
        ):
            layer.build((None, fan_in))
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            layer.kernel.assign(
                tf.random.stateless_uniform([fan_in, fan_out], seeds[k], -limit, limit)
            )
        if output_bias is not None:
            self.dense_layers[-1].bias.assign(tf.cast(output_bias, tf.float32))

    def call(self, inputs):
        for layer in self.dense_layers:
            inputs = layer(inputs)
        return inputs


class GaussianEncoder(tf.Module):
    r"""``x [..., D] -> q(z | x) = N(mu(x), diag sigma(x)^2)``, batch ``[...]``, event ``[L]``.

    The input is standardized with fixed statistics of the training data (when given), so
    the encoder behaves the same whatever the units of ``x``.
    """

    def __init__(self, data_dim, latent_dim, hidden_units, seed, shift, scale):
        super().__init__(name="gaussian_encoder")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.network = MLP(data_dim, hidden_units, 2 * latent_dim, seed)
        self._shift = tf.constant(shift, tf.float32)
        self._scale = tf.constant(scale, tf.float32)

    @property
    def trainable_variables(self):
        return tuple(self.network.trainable_variables)

    def __call__(self, x):
        out = self.network((tf.cast(x, tf.float32) - self._shift) / self._scale)
        loc, raw_scale = tf.split(out, 2, axis=-1)
        scale = tf.nn.softplus(raw_scale + _SOFTPLUS_ONE) + _MIN_SCALE
        return tfd.MultivariateNormalDiag(loc, scale)


class Decoder(tf.Module):
    r"""``z [..., L] -> p(x | z)``, batch ``[...]``, event ``[D]``: independent pixels.

    ``binomial``: Binomial(total_count, sigmoid(logits)); ``bernoulli``: Bernoulli(sigmoid
    (logits)); ``normal``: Normal(shift + scale * out, sigma) with one learned noise sd
    sigma, measured in units of the data's scale.
    """

    def __init__(
        self,
        latent_dim,
        data_dim,
        hidden_units,
        likelihood,
        seed,
        total_count,
        shift,
        scale,
        data_mean=None,
    ):
        super().__init__(name=f"{likelihood}_decoder")
        self.latent_dim, self.data_dim, self.likelihood = latent_dim, data_dim, likelihood
        self.total_count = total_count
        bias = None
        if likelihood in ("binomial", "bernoulli") and data_mean is not None:
            # Start at the logit of the mean pixel value: the network learns the deviations.
            mean = np.clip(np.asarray(data_mean, np.float64) / total_count, 1e-3, 1 - 1e-3)
            bias = np.log(mean) - np.log1p(-mean)
        self.network = MLP(latent_dim, hidden_units, data_dim, seed, output_bias=bias)
        self._shift = tf.constant(shift, tf.float32)
        self._scale = tf.constant(scale, tf.float32)
        self.raw_noise = None
        if likelihood == "normal":
            self.raw_noise = tf.Variable(tf.zeros([]), name="raw_noise_scale")

    @property
    def trainable_variables(self):
        extra = () if self.raw_noise is None else (self.raw_noise,)
        return (*self.network.trainable_variables, *extra)

    @property
    def noise_scale(self):
        """sigma, the learned noise sd of the ``normal`` likelihood (None otherwise)."""
        if self.raw_noise is None:
            return None
        return self._scale * (tf.nn.softplus(self.raw_noise + _SOFTPLUS_ONE) + _MIN_SCALE)

    def __call__(self, z):
        out = self.network(z)
        if self.likelihood == "binomial":
            pixels = tfd.Binomial(tf.constant(self.total_count, tf.float32), logits=out)
        elif self.likelihood == "bernoulli":
            pixels = tfd.Bernoulli(logits=out, dtype=tf.float32)
        else:
            pixels = tfd.Normal(self._shift + self._scale * out, self.noise_scale)
        return tfd.Independent(pixels, reinterpreted_batch_ndims=1)
