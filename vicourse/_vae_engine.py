"""The arithmetic of the VAE bounds and the compiled training machinery of
:func:`vicourse.fit_vae` (private).

Compiled once (see DESIGN.md): a :class:`Trainer` per (encoder, decoder, strategy,
``num_samples``) owns a tf_keras Adam and the ``tf.function``\\s that use it, and is cached
while the encoder and decoder live, so every epoch and every later ``fit_vae`` call with the
same networks runs the same compiled programs.

- In-memory data on one device: a ``tf.data`` pipeline yields *blocks* of up to
  ``MAX_BLOCK_STEPS`` minibatches, and one XLA program runs that many optimizer steps in a
  ``tf.while_loop`` (Keras calls this ``steps_per_execution``). A block always has the same
  shape (the last block of an epoch is padded and runs fewer steps), so the program
  compiles once; the per-call overhead of TensorFlow (binding the arguments, passing ~40
  variable handles, fetching from the iterator: about 1 ms) is paid once per block
  instead of once per step, which is what makes small models fast.
- A dataset of rows, or a ``tf.distribute.Strategy``: one compiled step per minibatch.
  With a strategy each replica computes its gradients in one XLA program; the optimizer's
  all-reduce and update run outside XLA, which cannot address variables on several devices.

A tf_keras optimizer finds its slots by variable identity, so the compiled functions close
over the real networks and optimizer (as ``vicourse.gradients._bound_to_optimizer`` does);
the closures hold weak references so that the cache does not keep the networks alive.
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from vicourse._optim import cosine_learning_rate

tfd = tfp.distributions

__all__ = [
    "MAX_BLOCK_STEPS",
    "Trainer",
    "ArrayFeed",
    "array_batches",
    "block_sizes",
    "elbo_parts",
    "log_likelihood",
    "log_weights",
    "trainable_variables",
    "trainer_for",
    "validation_blocks",
]

# Decoder calls are made on at most this many (sample, example) rows at a time, so that an
# IWAE bound with thousands of samples does not hold all hidden activations at once.
MAX_DECODER_ROWS = 2**16
# Optimizer steps per compiled call on in-memory data (fewer if an epoch is shorter).
MAX_BLOCK_STEPS = 20


# ---------------------------------------------------------------------------------------
# The bounds
# ---------------------------------------------------------------------------------------


def analytic_kl(q, prior):
    """KL(q || prior) per example in closed form, or None when TFP has no formula."""
    try:
        return tfd.kl_divergence(q, prior)
    except NotImplementedError:
        return None


def log_likelihood(decoder, z, x):
    """``decoder(z).log_prob(x)`` for z [S, B, L], in chunks of samples (a static count)."""
    chunk = max(1, MAX_DECODER_ROWS // int(x.shape[0]))
    num = int(z.shape[0])
    if num <= chunk:
        return decoder(z).log_prob(x)
    pieces = [decoder(z[k : k + chunk]).log_prob(x) for k in range(0, num, chunk)]
    return tf.concat(pieces, axis=0)


def log_weights(x, q, decoder, prior, z):
    """``log p(x | z_s) + log p(z_s) - log q(z_s | x)``, [S, B]."""
    return log_likelihood(decoder, z, x) + prior.log_prob(z) - q.log_prob(z)


def elbo_parts(x, q, decoder, prior, num_samples, seed, analytic):
    """Per-example Monte Carlo (reconstruction, KL), each [B]; the KL in closed form when
    ``analytic`` and TFP has it."""
    z = q.sample(num_samples, seed=seed)
    reconstruction = tf.reduce_mean(log_likelihood(decoder, z, x), axis=0)
    kl = analytic_kl(q, prior) if analytic else None
    if kl is None:
        kl = tf.reduce_mean(q.log_prob(z) - prior.log_prob(z), axis=0)
    return reconstruction, kl


def _objective(batch, encoder, decoder, prior, seed, kl_weight, num_samples):
    """Per-example ELBO, KL and training objective (the KL weighted by ``kl_weight``)."""
    reconstruction, kl = elbo_parts(batch, encoder(batch), decoder, prior, num_samples, seed, True)
    return reconstruction - kl, kl, reconstruction - kl_weight * kl


# ---------------------------------------------------------------------------------------
# The optimizer's schedule and the per-step settings
# ---------------------------------------------------------------------------------------


class Schedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    """A constant learning rate, or a cosine decay from it to 1% of it over ``total`` steps
    counted from ``start``. The settings are variables, assigned at each fit, so that a fit
    with another rate, length or choice of decay does not retrace."""

    def __init__(self):
        self.initial = tf.Variable(1e-3, trainable=False, name="initial_learning_rate")
        self.start = tf.Variable(0, dtype=tf.int64, trainable=False, name="start_step")
        self.total = tf.Variable(1, dtype=tf.int64, trainable=False, name="total_steps")
        self.decay = tf.Variable(False, trainable=False, name="decay")

    def __call__(self, step):
        initial = tf.convert_to_tensor(self.initial)
        decayed = cosine_learning_rate(initial, tf.cast(step, tf.int64) - self.start, self.total)
        return tf.where(self.decay, decayed, initial)

    def get_config(self):
        return {}


def _kl_weight(optimizer, schedule, kl_weight, warmup_steps):
    """``kl_weight``, ramped up linearly over the first ``warmup_steps`` of the fit."""
    done = tf.cast(optimizer.iterations - schedule.start + 1, tf.float32)
    ramp = tf.minimum(1.0, done / tf.maximum(tf.cast(warmup_steps, tf.float32), 1.0))
    return kl_weight * tf.where(warmup_steps > 0, ramp, 1.0)


def _step_seed(seed, optimizer):
    """Noise of step t on replica r: ``fold_in(fold_in(seed, t), r)`` (r = 0 on one device)."""
    step_seed = tf.random.experimental.stateless_fold_in(seed, optimizer.iterations)
    replica = tf.distribute.get_replica_context()
    replica_id = 0 if replica is None else replica.replica_id_in_sync_group
    return tf.random.experimental.stateless_fold_in(step_seed, replica_id)


def trainable_variables(module, name):
    """``module.trainable_variables`` as a tuple (empty for a plain function)."""
    variables = getattr(module, "trainable_variables", ())
    try:
        return tuple(variables)
    except TypeError:
        raise TypeError(
            f"`{name}`.trainable_variables must be a sequence of tf.Variable, got "
            f"{type(variables).__name__}."
        ) from None


# ---------------------------------------------------------------------------------------
# The trainer: compiled functions of one (encoder, decoder, strategy, num_samples)
# ---------------------------------------------------------------------------------------


def _next(source):
    """``next`` on an iterator inside the graph, or the batch itself."""
    if isinstance(source, (tf.data.Iterator, tf.distribute.DistributedIterator)):
        return next(source)
    return source


class Trainer:
    """The tf_keras Adam of one (encoder, decoder, strategy, ``num_samples``) and its
    compiled functions: ``block`` (K steps per call, one device), ``step`` (one step per
    call; one XLA program per replica with a strategy) and ``evaluate`` (the ELBO of a
    block of rows)."""

    def __init__(self, encoder, decoder, strategy, num_samples, jit_compile=True):
        self.strategy, self.num_samples = strategy, num_samples
        self.variables = (
            *trainable_variables(encoder, "encoder"),
            *trainable_variables(decoder, "decoder"),
        )
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self.schedule = Schedule()
            self.optimizer = tf_keras.optimizers.Adam(self.schedule)
            self.optimizer.build(self.variables)
        self._refs = (weakref.ref(encoder), weakref.ref(decoder), weakref.ref(self))
        self.jit_compile = jit_compile
        self.xla_step = tf.function(self._one_step_fn(), jit_compile=jit_compile)
        if strategy is None:
            self.block = tf.function(self._block_fn(), jit_compile=jit_compile)
            block = self.block

            def _vae_train_block(iterator, seed, prior, kl_weight, warmup_steps):
                batches, count = next(iterator)
                return block(batches, count, seed, prior, kl_weight, warmup_steps)

            self.block_from_iterator = tf.function(_vae_train_block)
            self.step = tf.function(self._single_step_fn())
        else:
            self.block = self.block_from_iterator = None
            self.step = tf.function(self._replicated_step_fn())
        # Evaluation runs once per epoch: a plain graph, which saves an XLA compilation.
        self.evaluate = tf.function(self._evaluate_fn())
        self.feeds = {}

    def feed(self, num, dim, dtype, batch_size):
        """The cached :class:`ArrayFeed` for this data shape and batch size."""
        key = (num, dim, dtype, batch_size)
        if key not in self.feeds:
            block = min(num // batch_size, MAX_BLOCK_STEPS)
            self.feeds[key] = ArrayFeed(num, dim, dtype, batch_size, block)
        return self.feeds[key]

    def _gradients(self, batch, seed, prior, weight, scale):
        """Per-example metrics and the gradient of ``-sum(objective) * scale``."""
        encoder_ref, decoder_ref, _ = self._refs
        with tf.GradientTape() as tape:
            elbo, kl, objective = _objective(
                batch,
                encoder_ref(),
                decoder_ref(),
                prior,
                _step_seed(seed, self.optimizer),
                weight,
                self.num_samples,
            )
            loss = -tf.reduce_sum(objective) * scale
        return tape.gradient(loss, self.variables), elbo, kl, loss

    def _one_step_fn(self):
        self_ref = self._refs[2]

        def _vae_step(batch, seed, prior, kl_weight, warmup_steps):
            trainer = self_ref()
            optimizer = trainer.optimizer
            weight = _kl_weight(optimizer, trainer.schedule, kl_weight, warmup_steps)
            scale = 1.0 / tf.cast(tf.shape(batch)[0], tf.float32)
            gradients, elbo, kl, loss = trainer._gradients(batch, seed, prior, weight, scale)
            optimizer.apply_gradients(zip(gradients, trainer.variables, strict=True))
            return tf.reduce_mean(elbo), tf.reduce_mean(kl), loss

        return _vae_step

    def _block_fn(self):
        self_ref = self._refs[2]

        def _vae_block(batches, count, seed, prior, kl_weight, warmup_steps):
            """The first ``count`` of the K minibatches ``batches`` [K, B, D], one optimizer
            step each, in one while_loop; the traces have the fixed length K."""
            step = self_ref().xla_step.python_function
            size = batches.shape[0]
            traces = tuple(tf.fill([size], tf.constant(np.nan, tf.float32)) for _ in range(3))

            def body(i, traces):
                values = step(batches[i], seed, prior, kl_weight, warmup_steps)
                return i + 1, tuple(
                    tf.tensor_scatter_nd_update(t, [[i]], [v])
                    for t, v in zip(traces, values, strict=True)
                )

            _, traces = tf.while_loop(lambda i, _: i < count, body, (0, traces))
            return traces

        return _vae_block

    def _single_step_fn(self):
        xla_step = self.xla_step

        def _vae_train_step(source, seed, prior, kl_weight, warmup_steps):
            return xla_step(_next(source), seed, prior, kl_weight, warmup_steps)

        return _vae_train_step

    def _replicated_step_fn(self):
        strategy, self_ref = self.strategy, self._refs[2]

        def _vae_replica_gradients(batch, seed, prior, weight, global_batch):
            # This replica's sum / the global batch: the all-reduce (a sum over replicas)
            # then gives the gradient of the global minibatch mean.
            gradients, elbo, kl, loss = self_ref()._gradients(
                batch, seed, prior, weight, 1.0 / global_batch
            )
            return gradients, tf.reduce_sum(elbo), tf.reduce_sum(kl), loss

        gradients_xla = tf.function(_vae_replica_gradients, jit_compile=self.jit_compile)

        def replica_step(batch, seed, prior, weight, global_batch):
            trainer = self_ref()
            gradients, elbo, kl, loss = gradients_xla(batch, seed, prior, weight, global_batch)
            trainer.optimizer.apply_gradients(zip(gradients, trainer.variables, strict=True))
            return elbo, kl, loss

        def _vae_replicated_step(source, seed, prior, kl_weight, warmup_steps):
            trainer = self_ref()
            batch = _next(source)
            weight = _kl_weight(trainer.optimizer, trainer.schedule, kl_weight, warmup_steps)
            rows = strategy.run(lambda b: tf.shape(b)[0], args=(batch,))
            global_batch = tf.cast(strategy.reduce("SUM", rows, axis=None), tf.float32)
            elbo, kl, loss = strategy.run(
                replica_step, args=(batch, seed, prior, weight, global_batch)
            )
            elbo, kl, loss = (strategy.reduce("SUM", v, axis=None) for v in (elbo, kl, loss))
            return elbo / global_batch, kl / global_batch, loss

        self.replica_gradients = gradients_xla
        return _vae_replicated_step

    def _evaluate_fn(self):
        encoder_ref, decoder_ref, _ = self._refs
        num_samples = self.num_samples

        def _vae_evaluate(block, mask, seed, prior):
            elbo, kl, _ = _objective(
                block, encoder_ref(), decoder_ref(), prior, seed, 1.0, num_samples
            )
            return tf.reduce_sum(mask * elbo), tf.reduce_sum(mask * kl)

        return _vae_evaluate

    def set_schedule(self, rate, decay, total_steps):
        self.schedule.initial.assign(rate)
        self.schedule.start.assign(self.optimizer.iterations)
        self.schedule.total.assign(max(total_steps, 1))
        self.schedule.decay.assign(decay)


_TRAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trainer_for(encoder, decoder, strategy, num_samples, jit_compile=True) -> Trainer:
    """The cached trainer of this pair (a later fit continues training, with the Adam
    moments kept, without recompiling), or a new one."""
    try:
        by_decoder = _TRAINERS.setdefault(encoder, weakref.WeakKeyDictionary())
        trainers = by_decoder.setdefault(decoder, {})
    except TypeError:  # an encoder or decoder that cannot be weakly referenced or hashed
        return Trainer(encoder, decoder, strategy, num_samples, jit_compile)
    key = (id(strategy), num_samples, jit_compile)
    if key not in trainers or trainers[key][0] is not strategy:
        trainer = Trainer(encoder, decoder, strategy, num_samples, jit_compile)
        trainers[key] = (strategy, trainer)
    return trainers[key][1]


class Runner:
    """Calls one compiled function repeatedly, resolving its concrete function once per fit
    (the tf.function dispatcher compares the prior's composite type spec at every call)."""

    def __init__(self, function):
        self.function, self.concrete = function, None

    def __call__(self, *args):
        if self.concrete is None:
            self.concrete = self.function.get_concrete_function(*args)
        return self.concrete(*args)


# ---------------------------------------------------------------------------------------
# Input pipelines
# ---------------------------------------------------------------------------------------


def block_sizes(steps, block):
    """The number of steps in each block of an epoch of ``steps`` steps."""
    return [block] * (steps // block) + ([steps % block] if steps % block else [])


def _epoch_rows(num, batch_size, steps, seed, epoch):
    """The row indices of one epoch's ``steps`` minibatches, [steps, B]: a fresh stateless
    permutation per epoch (the last ``N mod B`` rows of each are skipped)."""
    epoch_seed = tf.random.experimental.stateless_fold_in(seed, epoch)
    order = tf.argsort(tf.random.stateless_uniform([num], epoch_seed))
    return tf.reshape(order[: steps * batch_size], [steps, batch_size])


class ArrayFeed:
    """The tf.data pipeline of in-memory data for one trainer and one data shape, built
    once and reused by every fit with that shape.

    The rows live in a variable that each fit assigns, and the seed in another, so the
    pipeline's functions are traced once (tracing them costs about 80 ms, as much as 40
    small training steps). Each element is ``(rows [block, B, D], count)``: ``block``
    minibatches of an epoch (the last block of an epoch is padded with copies of the first
    rows and has a smaller ``count``). The gather runs in tf.data, prefetched.
    """

    def __init__(self, num, dim, dtype, batch_size, block):
        steps = num // batch_size
        self.steps, self.block = steps, block
        self.blocks = block_sizes(steps, block)
        self.rows = tf.Variable(tf.zeros([num, dim], dtype), trainable=False, name="rows")
        self.seed = tf.Variable([0, 0], dtype=tf.int32, trainable=False, name="data_seed")
        pad, counts = -steps % block, tf.constant(self.blocks, tf.int32)

        def epoch_blocks(epoch):
            rows = _epoch_rows(num, batch_size, steps, self.seed, epoch)
            rows = tf.concat([rows, tf.zeros([pad, batch_size], rows.dtype)], axis=0)
            return tf.data.Dataset.from_tensor_slices(
                (tf.reshape(rows, [-1, block, batch_size]), counts)
            )

        def gather(rows, count):
            return tf.gather(self.rows, rows), count

        # Endless: a fit takes exactly its epochs' blocks and drops the iterator. tf.data's
        # default graph rewrites would run at every new iterator (about 25 ms) and have
        # nothing to gain on this two-stage pipeline.
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        self.dataset = (
            tf.data.Dataset.range(2**62)
            .flat_map(epoch_blocks)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(2)
            .with_options(options)
        )
        self.run = None  # the trainer's compiled call, resolved once for this feed

    def start(self, x, seed):
        """An iterator over the epochs of a new fit on ``x`` with ``seed``."""
        self.rows.assign(x)
        self.seed.assign(seed)
        return iter(self.dataset)


def array_batches(x, batch_size, epochs, seed):
    """The minibatches of in-memory rows ``x`` over all epochs, in the same order as an
    :class:`ArrayFeed`'s, one per element (for a strategy, which splits each minibatch
    across its replicas)."""
    num = int(x.shape[0])
    steps = num // batch_size

    def epoch_batches(epoch):
        return tf.data.Dataset.from_tensor_slices(_epoch_rows(num, batch_size, steps, seed, epoch))

    return (
        tf.data.Dataset.range(epochs)
        .flat_map(epoch_batches)
        .map(lambda rows: tf.gather(x, rows), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def validation_blocks(x, block_rows=2048):
    """``x`` in blocks of one fixed number of rows (the last padded with copies of the first
    rows, masked out), so that evaluation compiles once."""
    num = int(x.shape[0])
    rows = min(num, block_rows)
    padded = -num % rows
    if padded:
        x = tf.concat([x, tf.repeat(x[:1], padded, axis=0)], axis=0)
    mask = tf.concat([tf.ones([num]), tf.zeros([padded])], axis=0)
    return [(x[k : k + rows], mask[k : k + rows]) for k in range(0, num + padded, rows)], num
