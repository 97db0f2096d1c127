"""Run fit_vae on one device and on a MirroredStrategy over two logical CPUs (a worker).

tests/test_vae.py runs this file in a subprocess: logical devices must be configured before
TensorFlow initializes its devices, which the test process has long done by then. It
prints one JSON line with the traces of both runs.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    CPU, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import numpy as np  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import vicourse  # noqa: E402

tfd = tfp.distributions
L = 2


class PointEncoder(tf.Module):
    """A deterministic encoder (q is a point mass): training has no Monte Carlo noise, so the
    one-device and the mirrored runs must agree up to floating-point rounding."""

    def __init__(self, seed):
        super().__init__()
        self.inner = vicourse.make_encoder(64, L, hidden_units=(8,), seed=seed)

    @property
    def trainable_variables(self):
        return self.inner.trainable_variables

    def __call__(self, x):
        return tfd.VectorDeterministic(self.inner(x).mean())


def build(kind, strategy):
    scope = strategy.scope() if strategy is not None else tf.init_scope()
    with scope:
        if kind == "point":
            encoder = PointEncoder(seed=1)
        else:
            encoder = vicourse.make_encoder(64, L, hidden_units=(8,), seed=1)
        decoder = vicourse.make_decoder(L, 64, hidden_units=(8,), seed=2)
    return encoder, decoder


def run(kind, strategy, x, epochs, jit_compile):
    encoder, decoder = build(kind, strategy)
    prior = tfd.MultivariateNormalDiag(tf.zeros(L))
    fit = vicourse.fit_vae(
        x,
        encoder,
        decoder,
        prior,
        epochs=epochs,
        batch_size=64,
        learning_rate=3e-3,
        seed=5,
        progress=False,
        strategy=strategy,
        jit_compile=jit_compile,
    )
    return {"loss": fit.loss_trace.numpy().tolist(), "elbo": fit.train_elbo.numpy().tolist()}


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    x = vicourse.load_digits_images().x_train[:384]
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"replicas": mirrored.num_replicas_in_sync}
    # The exact comparison runs the replicas' XLA programs against a one-device graph (the
    # same arithmetic, so it also checks XLA against the graph); the statistical one runs
    # plain graphs (it checks the noise, not the compiler). One XLA compilation in all.
    for kind, jit_single, jit_mirrored in (("point", False, True), ("gaussian", False, False)):
        result[kind] = {
            "single": run(kind, None, x, epochs, jit_single),
            "mirrored": run(kind, mirrored, x, epochs, jit_mirrored),
        }
    print(json.dumps(result))
    return np.int64(0)


if __name__ == "__main__":
    sys.exit(int(main()))
