"""Benchmark: VAE training throughput, vicourse.fit_vae against the Keras VAE design.

The same MLP VAE (encoder D -> 256 -> 128 -> 2L, decoder L -> 128 -> 256 -> D, ReLU,
L = 2 latent dimensions, a Gaussian q(z | x) and a standard normal prior), the same batch
size (128) and the same data, trained with Adam (learning rate 1e-3), one sample of z per
example and step, on two data sets:

  (a) scikit-learn's digits: 1,437 training images of 64 pixels (counts 0-16), with the
      Binomial(16, .) likelihood;
  (b) a synthetic binary data set the size of MNIST: 60,000 rows of 784 pixels, with the
      Bernoulli likelihood.

Contenders, all in this one process:
  1. vicourse.fit_vae (XLA-compiled steps, run in blocks of up to 20 per call, fed by a
     tf.data pipeline);
  2. the Keras 3 VAE example's design, written here from its idea: a `Sampling` layer and
     a custom `train_step`, trained with `model.fit` under Keras 3 (`import keras`, the
     TensorFlow backend, its default jit_compile="auto", which compiles with XLA);
  3. the same model with tf_keras (Keras 2), at its default (no XLA);
  4. the same with tf_keras and jit_compile=True.

Throughput is examples per second over a timed run of several epochs, after a warm-up epoch
that compiles; the median of --repeats timed runs (each continues training the same model,
so nothing is recompiled). Keras trains on the last partial batch of each epoch and
fit_vae skips it: each is credited with the examples it actually processed.

After training on the digits, every contender's model is scored by the IWAE bound with
k = 5,000 on the 360 held-out digits (vicourse.iwae_bound, the same function for all): a
check that the faster loop trains as good a model.

Run: `.venv/bin/python benchmarks/bench_vae.py [--repeats 5]` (or `make bench`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (Keras 3, shipped with TensorFlow 2.21)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

import vicourse  # noqa: E402
from vicourse import _vae_engine  # noqa: E402

tfd = tfp.distributions
LATENT, BATCH, RATE = 2, 128, 1e-3
ENCODER_UNITS, DECODER_UNITS = (256, 128), (128, 256)


# ---------------------------------------------------------------------------------------
# The likelihoods, written once in TensorFlow for the Keras models
# ---------------------------------------------------------------------------------------


def log_likelihood(x, logits, total_count):
    """Binomial(total_count, sigmoid(logits)) log-probability of x, summed over pixels
    (Bernoulli when total_count = 1); the same numbers as TFP's Binomial.log_prob."""
    n = tf.constant(total_count, tf.float32)
    coefficient = tf.math.lgamma(n + 1) - tf.math.lgamma(x + 1) - tf.math.lgamma(n - x + 1)
    per_pixel = (
        coefficient + x * tf.math.log_sigmoid(logits) + (n - x) * tf.math.log_sigmoid(-logits)
    )
    return tf.reduce_sum(per_pixel, axis=-1)


def gaussian_kl(z_mean, z_log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)), summed over the latent dimensions."""
    return -0.5 * tf.reduce_sum(1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=-1)


# ---------------------------------------------------------------------------------------
# The Keras VAE design: a Sampling layer and a custom train_step (one factory per Keras)
# ---------------------------------------------------------------------------------------


def build_keras_vae(k, data_dim, total_count, seed, jit_compile):
    """The VAE with Keras module ``k`` (``keras`` 3 or ``tf_keras``)."""
    if k is keras:

        class Sampling(k.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.seed_generator = k.random.SeedGenerator(seed)

            def call(self, inputs):
                z_mean, z_log_var = inputs
                noise = k.random.normal(tf.shape(z_mean), seed=self.seed_generator)
                return z_mean + tf.exp(0.5 * z_log_var) * noise

    else:

        class Sampling(k.layers.Layer):
            def call(self, inputs):
                z_mean, z_log_var = inputs
                return z_mean + tf.exp(0.5 * z_log_var) * tf.random.normal(tf.shape(z_mean))

    inputs = k.Input(shape=(data_dim,))
    hidden = inputs
    for units in ENCODER_UNITS:
        hidden = k.layers.Dense(units, activation="relu")(hidden)
    z_mean = k.layers.Dense(LATENT)(hidden)
    z_log_var = k.layers.Dense(LATENT)(hidden)
    z = Sampling()([z_mean, z_log_var])
    encoder = k.Model(inputs, [z_mean, z_log_var, z])

    latent = k.Input(shape=(LATENT,))
    hidden = latent
    for units in DECODER_UNITS:
        hidden = k.layers.Dense(units, activation="relu")(hidden)
    decoder = k.Model(latent, k.layers.Dense(data_dim)(hidden))

    class VAE(k.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder, self.decoder = encoder, decoder
            self.elbo_tracker = k.metrics.Mean(name="elbo")

        @property
        def metrics(self):
            return [self.elbo_tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                z_mean, z_log_var, z = self.encoder(data, training=True)
                logits = self.decoder(z, training=True)
                elbo = log_likelihood(data, logits, total_count) - gaussian_kl(z_mean, z_log_var)
                loss = -tf.reduce_mean(elbo)
            gradients = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
            self.elbo_tracker.update_state(elbo)
            return {"elbo": self.elbo_tracker.result()}

    model = VAE(encoder, decoder)
    model.compile(optimizer=k.optimizers.Adam(RATE), jit_compile=jit_compile)
    return model


def keras_as_vicourse(model):
    """The Keras model's networks as vicourse encoder/decoder callables (for iwae_bound)."""

    def encoder(x):
        z_mean, z_log_var, _ = model.encoder(x)
        return tfd.MultivariateNormalDiag(z_mean, tf.exp(0.5 * z_log_var))

    def decoder(z, total_count=model.total_count):
        flat = tf.reshape(z, [-1, LATENT])
        logits = tf.reshape(model.decoder(flat), tf.concat([tf.shape(z)[:-1], [-1]], 0))
        logits = tf.ensure_shape(logits, [*z.shape[:-1], model.data_dim])
        return tfd.Independent(tfd.Binomial(float(total_count), logits=logits), 1)

    return encoder, decoder


# ---------------------------------------------------------------------------------------
# Contenders: each returns (train(epochs) -> examples processed, encoder, decoder)
# ---------------------------------------------------------------------------------------


def vicourse_contender(x, total_count, seed):
    likelihood = "binomial" if total_count > 1 else "bernoulli"
    data_dim = x.shape[1]
    encoder = vicourse.make_encoder(data_dim, LATENT, hidden_units=ENCODER_UNITS, seed=seed)
    decoder = vicourse.make_decoder(
        LATENT,
        data_dim,
        likelihood=likelihood,
        total_count=total_count,
        hidden_units=DECODER_UNITS,
        seed=seed + 1,
    )
    prior = tfd.MultivariateNormalDiag(tf.zeros(LATENT))
    calls = []

    def train(epochs):
        calls.append(epochs)
        vicourse.fit_vae(
            x,
            encoder,
            decoder,
            prior,
            epochs=epochs,
            batch_size=BATCH,
            learning_rate=RATE,
            seed=len(calls),
            progress=False,
        )
        return epochs * (len(x) // BATCH) * BATCH

    def traces():
        return _vae_engine.trainer_for(
            encoder, decoder, None, 1
        ).block.experimental_get_tracing_count()

    train.traces = traces
    return train, encoder, decoder


def keras_contender(k, jit_compile):
    def make(x, total_count, seed):
        k.utils.set_random_seed(seed)
        model = build_keras_vae(k, x.shape[1], total_count, seed, jit_compile)
        model.total_count, model.data_dim = total_count, x.shape[1]

        def train(epochs):
            model.fit(x, epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0)
            return epochs * len(x)

        return (train, *keras_as_vicourse(model))

    return make


CONTENDERS = {
    "vicourse.fit_vae": vicourse_contender,
    "Keras 3 model.fit (XLA auto)": keras_contender(keras, "auto"),
    "tf_keras model.fit (default, no XLA)": keras_contender(tf_keras, None),
    "tf_keras model.fit (jit_compile=True)": keras_contender(tf_keras, True),
}


def measure(contenders, x, total_count, epochs, repeats, seed=0):
    """Warm up every contender (one epoch, which compiles), then time ``repeats`` runs of
    ``epochs`` epochs, taking the contenders in turn in each round so that changes in the
    machine's load fall on all of them alike. Returns {name: (median examples/s, first
    epoch seconds, encoder, decoder)}."""
    built, first = {}, {}
    for name, make in contenders.items():
        built[name] = make(x, total_count, seed)
        start = time.perf_counter()
        built[name][0](1)
        first[name] = time.perf_counter() - start
    rates = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (train, _, _) in built.items():
            start = time.perf_counter()
            examples = train(epochs)
            rates[name].append(examples / (time.perf_counter() - start))
    train = built["vicourse.fit_vae"][0]
    assert train.traces() == 1, "fit_vae retraced across calls"
    return {
        name: (float(np.median(rates[name])), first[name], *built[name][1:]) for name in contenders
    }


def synthetic_binary_images(num, dim, seed=0):
    """Binary images with structure: a thresholded random 10-factor linear model."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(num, 10)) @ rng.normal(size=(10, dim))
    return (factors + rng.normal(size=(num, dim)) > 0.5).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--digits-epochs", type=int, default=30)
    parser.add_argument("--mnist-epochs", type=int, default=1)
    parser.add_argument("--iwae-samples", type=int, default=5000)
    parser.add_argument("--only", choices=("digits", "mnist"), default=None)
    args = parser.parse_args()

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, TFP "
        f"{tfp.__version__}, Keras {keras.__version__}, tf_keras {tf_keras.__version__}, "
        f"vicourse {vicourse.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    digits = vicourse.load_digits_images()
    prior = tfd.MultivariateNormalDiag(tf.zeros(LATENT))
    datasets = {
        "digits (N = 1,437, D = 64, Binomial(16))": (digits.x_train, 16, args.digits_epochs),
        "mnist-sized synthetic data (N = 60,000, D = 784, Bernoulli)": (
            synthetic_binary_images(60_000, 784),
            1,
            args.mnist_epochs,
        ),
    }
    if args.only:
        datasets = {k: v for k, v in datasets.items() if k.startswith(args.only[:5])}
    for label, (x, total_count, epochs) in datasets.items():
        print(
            f"\n### {label}: batch {BATCH}, {epochs} epoch(s) per timed run, "
            f"median of {args.repeats}\n"
        )
        print(
            "| contender | first epoch incl. compile (s) | examples/s | fit_vae speed-up |"
            + (" IWAE-5000 held-out (nats) |" if total_count > 1 else "")
        )
        print("|---|---|---|---|" + ("---|" if total_count > 1 else ""))
        measured = measure(CONTENDERS, x, total_count, epochs, args.repeats)
        results = {}
        for name, (rate, first, encoder, decoder) in measured.items():
            iwae = ""
            if total_count > 1:
                bound = vicourse.iwae_bound(
                    digits.x_validation,
                    encoder,
                    decoder,
                    prior,
                    num_samples=args.iwae_samples,
                    seed=0,
                )
                iwae = f" {float(tf.reduce_mean(bound)):.2f} |"
            results[name] = rate
            speedup = measured["vicourse.fit_vae"][0] / rate
            print(f"| {name} | {first:.2f} | {rate:,.0f} | {speedup:.2f}× |{iwae}", flush=True)
        fastest_keras = max(v for k, v in results.items() if k != "vicourse.fit_vae")
        print(f"\nfit_vae / fastest Keras: {results['vicourse.fit_vae'] / fastest_keras:.2f}×")


if __name__ == "__main__":
    main()
