r"""Stochastic variational inference (SVI).

Chapter 5 (:doc:`/book/chapters/05_svi`) derives and runs :func:`fit_gmm_svi`: SVI
:cite:p:`hoffman2013stochastic` for the Bayesian mixture of Gaussians of chapter 4, which
replaces each CAVI update of the global factors by a noisy natural-gradient step computed
from a minibatch. The data come either as an in-memory array (the whole run is one
compiled loop) or as a ``tf.data.Dataset`` of minibatches (data larger than memory).

The local step, the sufficient statistics, the natural parameters and the ELBO terms are
chapter 4's (:mod:`vicourse.cavi`): with the whole data set as the minibatch and step
size 1, an SVI step *is* a CAVI sweep.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from vicourse import _logging  # noqa: F401 (quiets retracing notes for new shapes)
from vicourse._optim import run_chunked
from vicourse._seed import split_seed
from vicourse._validation import (
    check_bool,
    check_count,
    check_finite,
    check_finite_result,
    check_minibatches,
    check_real,
)
from vicourse.cavi import (
    GMMState,
    _check_init,
    _check_num_components,
    _elbo_from_stats,
    _from_natural,
    _gmm_data,
    _gmm_scales,
    _local_step,
    _model,
    _Natural,
    _natural_means,
    _to_natural,
)

__all__ = ["SVIFit", "fit_gmm_svi"]

# Steps per compiled chunk: the trace buffers have this fixed length, so one compilation
# serves every num_steps (XLA needs static shapes).
_CHUNK_STEPS = 1024

# Rounds of the Feistel permutation that draws minibatch indices (see _distinct_indices).
_CIPHER_ROUNDS = 10

_ROBBINS_MONRO_KAPPA = (
    "the Robbins–Monro conditions: the step sizes rho_t = (t + tau)^-kappa must sum to "
    "infinity, which needs kappa <= 1, while their squares sum to a finite value, which "
    "needs kappa > 0.5"
)
_ROBBINS_MONRO_TAU = (
    "the Robbins–Monro step sizes rho_t = (t + tau)^-kappa need tau >= 0, so that no step "
    "exceeds 1 and the precisions stay positive"
)


class SVIFit(NamedTuple):
    """Result of :func:`fit_gmm_svi`."""

    means_loc: tf.Tensor
    """Variational means of the cluster means, [K, D]."""
    means_var: tf.Tensor
    """Variational variances of the cluster means (per coordinate), [K]."""
    elbo_trace: tf.Tensor
    r"""[steps run]: at step :math:`t`, the unbiased minibatch estimate of the ELBO at the
    global factors the step starts from, with :math:`\varphi` optimal for them."""
    step_sizes: tf.Tensor
    r""":math:`\rho_t`, [steps run]."""
    responsibilities: tf.Tensor | None
    r""":math:`\varphi`, [N, K], from one final local step over all the points (``None``
    when the data came as a dataset)."""
    elbo: tf.Tensor | None
    """The full-data closed-form ELBO of the result with those responsibilities (``None``
    when the data came as a dataset)."""


class _Constants(NamedTuple):
    """What a run holds fixed, as tensors of the data's dtype (new values do not retrace)."""

    center: tf.Tensor  # c, [D]: every minibatch is expressed in coordinates about c
    prior_var: tf.Tensor  # tau^2
    noise_var: tf.Tensor  # sigma^2
    scale: tf.Tensor  # N / B
    delay: tf.Tensor  # tau_0 of rho_t = (t + tau_0)^-kappa
    kappa: tf.Tensor


# ---------------------------------------------------------------------------------------
# Minibatch indices: B distinct points, uniformly, at O(B) cost, compiled by XLA
# ---------------------------------------------------------------------------------------


def _hash32(x):
    """A 32-bit integer hash with full avalanche (the "lowbias32" constants of C. Wellons)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _below(hashed, modulus):
    """Map a uniform 32-bit value to [0, modulus) without a division: floor(h m / 2^32)."""
    product = tf.cast(hashed, tf.uint64) * tf.cast(modulus, tf.uint64)
    return tf.cast(tf.bitwise.right_shift(product, 32), tf.uint32)


def _add_mod(u, v, modulus):
    """(u + v) mod m for u, v in [0, m)."""
    total = u + v
    return tf.where(total >= modulus, total - modulus, total)


def _nonnegative(seed):
    """Clear the sign bits of a stateless seed.

    TensorFlow's CPU kernels and XLA turn a seed with a negative int32 entry (which
    ``split_seed`` and ``stateless_fold_in`` produce) into different random bits, so the
    compiled and graph paths would draw different minibatches; with non-negative seeds
    they agree.
    """
    return tf.bitwise.bitwise_and(seed, tf.constant(0x7FFFFFFF, seed.dtype))


def _minibatch_indices(seed, step, batch_size: int, population):
    """The indices of step ``step``'s minibatch: a function of the seed and the step only."""
    step_seed = _nonnegative(tf.random.experimental.stateless_fold_in(seed, step))
    return _distinct_indices(step_seed, batch_size, population)


def _distinct_indices(seed, num: int, population):
    """``num`` distinct indices of [0, population), a uniformly random subset, in O(num).

    ``tf.random.experimental.index_shuffle`` would do this, but XLA has no kernel for it,
    and shuffling all N indices would cost O(N) per step. Instead, the indices 0..num-1 go
    through a keyed pseudo-random permutation of [0, N): a Feistel network over the
    mixed-radix domain [0, a) x [0, b) with a = ceil(sqrt(N)), b = ceil(N / a), which
    covers [0, a b) with a b < N + a + 1, and cycle-walking (re-encrypt while the result is
    >= N) restricts it to [0, N). The images of distinct indices are distinct because a
    permutation is a bijection. Each round adds a keyed hash of one half to the other,
    modulo its radix; 10 rounds pass chi-square tests of the subset frequencies even on
    tiny domains (N = 5 to 10), where fewer rounds did not. Cost: about 10 microseconds
    per 1000 indices under XLA on one CPU core.
    """
    keys = tf.random.stateless_uniform(
        [_CIPHER_ROUNDS // 2, 2], seed=seed, minval=None, maxval=None, dtype=tf.uint32
    )
    size = tf.cast(population, tf.uint32)
    low_radix = tf.cast(tf.math.ceil(tf.sqrt(tf.cast(population, tf.float64))), tf.uint32)
    high_radix = (size + low_radix - 1) // low_radix

    def two_rounds(r, low, high):
        low = _add_mod(low, _below(_hash32(high ^ keys[r, 0]), low_radix), low_radix)
        high = _add_mod(high, _below(_hash32(low ^ keys[r, 1]), high_radix), high_radix)
        return r + 1, low, high

    def permute(x):
        # The rounds run as a loop, not unrolled: the same result, and a small program
        # for XLA to compile (unrolled, compiling took seconds).
        start = (tf.constant(0), x % low_radix, x // low_radix)
        _, low, high = tf.while_loop(lambda r, *_: r < _CIPHER_ROUNDS // 2, two_rounds, start)
        return high * low_radix + low

    def walking(x, first):
        return first | tf.reduce_any(x >= size)

    def walk(x, first):
        # Encrypt every index once, then again while its image lies outside [0, N).
        return tf.where(first | (x >= size), permute(x), x), tf.constant(False)

    start = (tf.cast(tf.range(num), tf.uint32), tf.constant(True))
    indices, _ = tf.while_loop(walking, walk, start)
    return tf.cast(indices, tf.int32)


# ---------------------------------------------------------------------------------------
# The SVI step, shared by the array and the dataset paths
# ---------------------------------------------------------------------------------------


def _svi_step(constants: _Constants, natural: _Natural, batch, step):
    r"""One SVI step on a minibatch ``batch`` [B, D]; ``step`` is t = 1, 2, ... (int32).

    Local step for the minibatch (chapter 4's), the intermediate global parameters
    lambda-hat from its statistics scaled by N/B, then lambda <- (1 - rho_t) lambda +
    rho_t lambda-hat in natural parameters. Returns the new natural parameters, the
    minibatch ELBO estimate at the old ones (with phi optimal for them), and rho_t.
    """
    state = _from_natural(natural, constants.center)
    model = _model(batch, constants.prior_var, constants.noise_var, constants.center)
    _, stats = _local_step(model, state)
    elbo = _elbo_from_stats(model, stats, state, constants.scale)
    target = _natural_means(model, stats, constants.scale)
    rho = tf.pow(tf.cast(step, batch.dtype) + constants.delay, -constants.kappa)
    natural = tf.nest.map_structure(lambda old, new: (1.0 - rho) * old + rho * new, natural, target)
    return natural, elbo, rho


_svi_step_xla = tf.function(_svi_step, jit_compile=True, autograph=False)


def _record(trace, i, value):
    return tf.tensor_scatter_nd_update(trace, [[i]], [value])


def _empty_trace(dtype):
    return tf.fill([_CHUNK_STEPS], tf.constant(np.nan, dtype))


def _array_chunk(x, constants, natural, seed, start, count, batch_size: int, step_fn):
    """``count`` steps (a tensor) on minibatches drawn from ``x``, in one while_loop.

    Step t draws its minibatch with the seed folded with t, so a run of n steps is the
    prefix of a longer run with the same seed, whatever the chunking.
    """
    num_points = tf.shape(x)[0]

    def body(i, natural, elbos, rhos):
        step = start + i + 1
        batch = tf.gather(x, _minibatch_indices(seed, step, batch_size, num_points))
        natural, elbo, rho = step_fn(constants, natural, batch, step)
        return i + 1, natural, _record(elbos, i, elbo), _record(rhos, i, rho)

    start_loop = (tf.constant(0), natural, _empty_trace(x.dtype), _empty_trace(x.dtype))
    _, natural, elbos, rhos = tf.while_loop(lambda i, *_: i < count, body, start_loop)
    return natural, elbos, rhos


# The step is inlined into the XLA loop; the graph twin runs the same ops without XLA.
_array_chunk_xla = tf.function(
    functools.partial(_array_chunk, step_fn=_svi_step_xla), jit_compile=True, autograph=False
)
_array_chunk_graph = tf.function(
    functools.partial(_array_chunk, step_fn=_svi_step), autograph=False
)


def _dataset_chunk(iterator, constants, natural, start, count, step_fn):
    """Up to ``count`` steps on the minibatches ``iterator`` yields, in one while_loop
    (a graph, not XLA: the input pipeline runs outside the compiled step). Stops early
    when the dataset ends; returns the steps run and whether it ended."""
    dtype = natural.precision.dtype

    def body(i, natural, elbos, rhos, ended):
        batch = iterator.get_next_as_optional()

        def advance():
            new, elbo, rho = step_fn(constants, natural, batch.get_value(), start + i + 1)
            return i + 1, new, _record(elbos, i, elbo), _record(rhos, i, rho), False

        return tf.cond(batch.has_value(), advance, lambda: (i, natural, elbos, rhos, True))

    start_loop = (tf.constant(0), natural, _empty_trace(dtype), _empty_trace(dtype), False)
    ran, natural, elbos, rhos, ended = tf.while_loop(
        lambda i, natural, elbos, rhos, ended: (i < count) & ~ended, body, start_loop
    )
    return natural, elbos, rhos, ran, ended


_dataset_chunk_xla = tf.function(
    functools.partial(_dataset_chunk, step_fn=_svi_step_xla), autograph=False
)
_dataset_chunk_graph = tf.function(
    functools.partial(_dataset_chunk, step_fn=_svi_step), autograph=False
)


def _final_pass(x, state, prior_var, noise_var):
    """One local step over all the points, and the full-data closed-form ELBO."""
    model = _model(x, prior_var, noise_var)
    phi, stats = _local_step(model, state)
    return phi, _elbo_from_stats(model, stats, state)


_final_pass_xla = tf.function(_final_pass, jit_compile=True, autograph=False)
_final_pass_graph = tf.function(_final_pass, autograph=False)


# ---------------------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------------------


def _check_step_sizes(tau, kappa):
    tau = check_real(tau, "tau", low=0.0, why=_ROBBINS_MONRO_TAU)
    kappa = check_real(
        kappa, "kappa", low=0.5, high=1.0, low_inclusive=False, why=_ROBBINS_MONRO_KAPPA
    )
    return tau, kappa


def _check_batch_size(batch_size, num_points, source="the number of data points"):
    return check_count(
        batch_size,
        "batch_size",
        maximum=num_points,
        why=f"{source}: a minibatch holds distinct points",
    )


def _array_inputs(data, num_components, prior_scale, noise_scale, batch_size, num_data):
    x, num_components, prior_scale, noise_scale = _gmm_data(
        data, num_components, prior_scale, noise_scale, name="data"
    )
    num_points = x.shape[0]
    if num_data is not None and check_count(num_data, "num_data") != num_points:
        raise ValueError(
            f"`num_data` is for a tf.data.Dataset; with an array it must be None or the "
            f"number of rows, {num_points:,}, got {num_data:,}."
        )
    batch_size = _check_batch_size(batch_size, num_points)
    return x, num_points, num_components, prior_scale, noise_scale, batch_size


def _dataset_inputs(data, num_components, prior_scale, noise_scale, batch_size, num_data):
    if num_data is None:
        raise ValueError(
            "`num_data` is required when `data` is a tf.data.Dataset: pass N, the number "
            "of data points the minibatches come from (each minibatch counts N/B times)."
        )
    num_data = check_count(num_data, "num_data")
    batch_size = _check_batch_size(batch_size, num_data, "`num_data`, the number of points")
    spec = check_minibatches(data, "data", batch_size)
    num_components = _check_num_components(num_components, num_data)
    prior_scale, noise_scale = _gmm_scales(prior_scale, noise_scale, spec.dtype)
    return spec, num_data, num_components, prior_scale, noise_scale, batch_size


def _first_points(data, num_components, batch_size, seed):
    """K distinct points of the dataset's first minibatch (read once for this)."""
    if num_components > batch_size:
        raise ValueError(
            f"`init` is needed when `num_components` ({num_components}) exceeds "
            f"`batch_size` ({batch_size}): without it the initial means are K distinct "
            "points of the dataset's first minibatch."
        )
    first = next(iter(data), None)
    if first is None:
        raise ValueError("`data` is an empty dataset; it must yield at least one minibatch.")
    check_finite(first, "data")
    return tf.gather(first, _distinct_indices(seed, num_components, batch_size))


def _constants(center, prior_scale, noise_scale, num_points, batch_size, tau, kappa):
    dtype = center.dtype
    return _Constants(
        center=center,
        prior_var=tf.square(prior_scale),
        noise_var=tf.square(noise_scale),
        scale=tf.constant(num_points / batch_size, dtype),
        delay=tf.constant(tau, dtype),
        kappa=tf.constant(kappa, dtype),
    )


def fit_gmm_svi(
    data,
    num_components: int,
    prior_scale,
    noise_scale=1.0,
    *,
    batch_size: int,
    num_steps: int,
    tau: float = 1.0,
    kappa: float = 0.7,
    seed=None,
    init=None,
    num_data: int | None = None,
    progress: bool = False,
    jit_compile: bool = True,
) -> SVIFit:
    r"""Stochastic variational inference for the Bayesian mixture of Gaussians.

    The model and the mean-field family are those of :func:`~vicourse.cavi.fit_gmm`:
    :math:`\mu_k \sim \mathcal N(0, \tau^2 I)`, :math:`c_i \sim
    \mathrm{Categorical}(1/K)`, :math:`x_i \mid c_i, \mu \sim \mathcal N(\mu_{c_i},
    \sigma^2 I)`, with global factors :math:`q(\mu_k) = \mathcal N(m_k, s_k^2 I)` and
    local factors :math:`q(c_i) = \mathrm{Categorical}(\varphi_i)`. The global factors are
    held in natural parameters :math:`\lambda_k = (\eta_{1k}, \eta_{2k}) = (1/s_k^2,\;
    m_k/s_k^2)` (stored about a fixed centre among the data, which changes no update but
    keeps float32 accurate far from the origin). Step :math:`t = 1, 2, \dots` of SVI
    :cite:p:`hoffman2013stochastic`:

    1. draw a minibatch :math:`\mathcal B` of :math:`B` distinct points, uniformly;
    2. local step: :math:`\varphi_{ik} \propto \exp\big((x_i^\top m_k - \tfrac12(D s_k^2 +
       \lVert m_k\rVert^2))/\sigma^2\big)` for :math:`i \in \mathcal B`;
    3. intermediate global parameters, the CAVI update as if the minibatch were the data
       replicated :math:`N/B` times:

       .. math::

           \hat\eta_{1k} = \frac{1}{\tau^2} + \frac NB \sum_{i \in \mathcal B}
           \frac{\varphi_{ik}}{\sigma^2}, \qquad
           \hat\eta_{2k} = \frac NB \sum_{i \in \mathcal B} \frac{\varphi_{ik}\, x_i}{\sigma^2};

    4. a natural-gradient step of size :math:`\rho_t = (t + \tau_0)^{-\kappa}`:
       :math:`\lambda \leftarrow (1 - \rho_t)\lambda + \rho_t \hat\lambda`, since the
       natural gradient of the ELBO is :math:`\hat\lambda - \lambda`.

    With ``batch_size = N`` and ``tau = 0`` (so :math:`\rho_1 = 1`), one step is one CAVI
    sweep of :func:`~vicourse.cavi.gmm_step`. The ELBO estimate of each step, the global terms
    plus :math:`N/B` times the local terms of the minibatch, is unbiased for the full-data
    ELBO at the step's starting point. Steps 2 to 4 are chapter 4's code (the local step,
    the sufficient statistics and the ELBO terms are shared, not copied).

    **Array data** run as one compiled ``tf.while_loop`` (XLA when ``jit_compile=True``)
    in chunks of 1024 steps: minibatch indices are drawn inside the loop, statelessly from
    ``seed`` and the step number, at :math:`O(B)` cost, and the data never leave the
    device. The host only joins the chunks (and updates the progress bar). A later call
    with data of the same shape and dtype and the same ``batch_size`` reuses the compiled
    loop: step counts and step-size constants are tensors.

    **A** ``tf.data.Dataset`` yielding minibatches of static shape ``[batch_size, D]``
    (with ``num_data`` = :math:`N`) is consumed by the same compiled step, one minibatch
    per step, from a graph loop over the dataset's iterator. The dataset decides which
    points each minibatch holds: shuffle it (and ``repeat`` it for more than one pass) so
    that minibatches are uniform draws. Memory is :math:`O(BK + KD)` whatever :math:`N`
    is: the step allocates the minibatch and its responsibilities ([B, D] and [B, K]) and
    the global parameters ([K, D]), and the dataset reads its input lazily. With an array,
    the SVI loop needs the same working memory beyond the data themselves; only the final
    ``responsibilities`` ([N, K]) scale with :math:`N`.

    Parameters
    ----------
    data : array_like of shape [N, D] or [N], or tf.data.Dataset
        The data (a 1-D array is :math:`D = 1`), or a dataset of float minibatches of
        static shape ``[batch_size, D]`` (``.batch(batch_size, drop_remainder=True)``).
        Float64 runs in float64; integer arrays are converted to float32.
    num_components : int
        :math:`K \ge 1`, at most :math:`N`.
    prior_scale : float
        :math:`\tau > 0`, the prior standard deviation of each cluster mean (a scalar).
    noise_scale : float, default 1.0
        :math:`\sigma > 0`, the likelihood standard deviation (a scalar). With data in other
        units, scale ``prior_scale`` and ``noise_scale`` with them and the fit is the same.
    batch_size : int
        :math:`B`, from 1 to :math:`N`: points per minibatch, all distinct.
    num_steps : int
        SVI steps to run (with a dataset, fewer if it ends first, with a warning).
    tau : float, default 1.0
        The delay :math:`\tau_0 \ge 0` of the step sizes :math:`\rho_t = (t +
        \tau_0)^{-\kappa}` (Hoffman et al.'s :math:`\tau`; written :math:`\tau_0` here
        because :math:`\tau` is the prior scale). A larger delay damps the early steps.
    kappa : float, default 0.7
        The forgetting rate :math:`\kappa \in (0.5, 1]`: the Robbins–Monro conditions
        :math:`\sum_t \rho_t = \infty` and :math:`\sum_t \rho_t^2 < \infty` hold exactly
        for these values.
    seed : int or Tensor of shape [2], optional
        Chooses the initial means (unless ``init`` is given) and, for arrays, the
        minibatches. The same seed gives the same fit.
    init : array_like, shape [K, D], optional
        Initial means. Without it, the means start at :math:`K` distinct data points drawn
        with ``seed`` (for a dataset, points of its first minibatch, read once for this;
        then :math:`K \le B` is needed). The variances start at :math:`\sigma^2` either
        way (ones at the default ``noise_scale``, as in chapter 4): one data point's worth
        of precision, in the data's units, which keeps the fit scale-equivariant.
    num_data : int, optional
        :math:`N`, required with a dataset (it sets the scale :math:`N/B`); with an array
        it must be ``None`` or the number of rows.
    progress : bool, default False
        Show a tqdm progress bar, updated between compiled chunks.
    jit_compile : bool, default True
        Compile the step with XLA; ``False`` runs it as a plain ``tf.function`` graph.

    Returns
    -------
    SVIFit
        ``means_loc`` [K, D], ``means_var`` [K], ``elbo_trace`` and ``step_sizes``
        [steps run]; for array data also ``responsibilities`` [N, K] from one final local
        step over all points, and ``elbo``, the full-data closed-form ELBO
        (:func:`~vicourse.cavi.gmm_elbo`) of the result.

    Raises
    ------
    ValueError
        If the data are empty, not finite or of the wrong rank; a dataset yields
        minibatches of another shape, or comes without ``num_data``; ``batch_size`` is
        not in :math:`[1, N]`; ``kappa`` is not in :math:`(0.5, 1]` or ``tau`` is negative
        (Robbins–Monro); ``num_components`` is not in :math:`[1, N]`; a scale is not a
        positive scalar; a count is below 1 or beyond int32; ``init`` has the wrong shape.
    TypeError
        If an argument has the wrong type (a float count, a string, a float seed, a
        dataset of integers or of tuples).

    Notes
    -----
    The ELBO estimates are noisy; ``elbo`` (arrays) is exact. SVI converges to a local
    optimum of the ELBO when the step sizes satisfy the Robbins–Monro conditions
    :cite:p:`hoffman2013stochastic`. Taught in :doc:`/book/chapters/05_svi`.
    """
    streaming = isinstance(data, tf.data.Dataset)
    inputs = _dataset_inputs if streaming else _array_inputs
    source, num_points, num_components, prior_scale, noise_scale, batch_size = inputs(
        data, num_components, prior_scale, noise_scale, batch_size, num_data
    )
    num_steps = check_count(num_steps, "num_steps")
    tau, kappa = _check_step_sizes(tau, kappa)
    progress = check_bool(progress, "progress")
    jit_compile = check_bool(jit_compile, "jit_compile")
    init_seed, sample_seed = (_nonnegative(part) for part in split_seed(seed, n=2))
    dtype, dim = source.dtype, source.shape[1]
    if init is not None:
        loc = _check_init(init, num_components, dim, dtype)
    elif streaming:
        loc = _first_points(data, num_components, batch_size, init_seed)
    else:
        loc = tf.gather(source, _distinct_indices(init_seed, num_components, num_points))
    # Any fixed centre gives the same fit (chapter 4); the initial means' average lies
    # among the data, which keeps float32 inner products accurate, and is the same for the
    # array and the dataset paths.
    constants = _constants(
        tf.reduce_mean(loc, axis=0),
        prior_scale,
        noise_scale,
        num_points,
        batch_size,
        tau,
        kappa,
    )
    # The initial precision 1/sigma^2 is one data point's worth: in the data's units, so
    # the fit is scale-equivariant (CAVI forgets its initial variances; SVI averages them).
    start_var = tf.fill([num_components], constants.noise_var)
    natural = _to_natural(GMMState(loc, start_var), constants.center)
    with tqdm(total=num_steps, disable=not progress, desc="SVI", unit="step") as bar:
        if streaming:
            natural, elbos, rhos = _run_dataset(
                data, constants, natural, num_steps, jit_compile, bar.update
            )
        else:
            natural, elbos, rhos = _run_array(
                source,
                constants,
                natural,
                sample_seed,
                num_steps,
                batch_size,
                jit_compile,
                bar.update,
            )
    state = _from_natural(natural, constants.center)
    if streaming:
        return SVIFit(state.means_loc, state.means_var, elbos, rhos, None, None)
    final = _final_pass_xla if jit_compile else _final_pass_graph
    phi, elbo = final(source, state, constants.prior_var, constants.noise_var)
    return SVIFit(state.means_loc, state.means_var, elbos, rhos, phi, elbo)


def _run_array(x, constants, natural, seed, num_steps, batch_size, jit_compile, progress):
    run = _array_chunk_xla if jit_compile else _array_chunk_graph

    def chunk(natural, start, count):
        natural, elbos, rhos = run(x, constants, natural, seed, start, count, batch_size)
        return natural, tf.stack([elbos, rhos], axis=1), count, False

    natural, trace, _ = run_chunked(chunk, natural, num_steps, _CHUNK_STEPS, progress)
    return natural, trace[:, 0], trace[:, 1]


def _run_dataset(data, constants, natural, num_steps, jit_compile, progress):
    run = _dataset_chunk_xla if jit_compile else _dataset_chunk_graph
    iterator = iter(data)

    def chunk(natural, start, count):
        natural, elbos, rhos, ran, ended = run(iterator, constants, natural, start, count)
        # A dataset's values cannot be checked up front; a NaN would spread to every
        # parameter, so check them here, once per chunk.
        check_finite_result(
            natural, "data", f"in steps {int(start) + 1} to {int(start) + int(ran)}"
        )
        return natural, tf.stack([elbos, rhos], axis=1), ran, ended

    natural, trace, done = run_chunked(chunk, natural, num_steps, _CHUNK_STEPS, progress)
    if done < num_steps:
        warnings.warn(
            f"`data` ended after {done} of num_steps={num_steps} minibatches, and the fit "
            "stopped there. Repeat the dataset (data.repeat()) for more passes.",
            stacklevel=3,
        )
    return natural, trace[:, 0], trace[:, 1]
