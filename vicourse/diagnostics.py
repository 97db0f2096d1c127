r"""Checking a VI fit: reference posteriors from MCMC, with their own diagnostics.

A VI fit is judged against the exact posterior where one exists and against a trusted MCMC
reference where it does not. :func:`reference_posterior` runs the No-U-Turn sampler
:cite:p:`hoffman2014nuts` with an adapted step size and diagonal mass matrix (TFP's
windowed adaptation) on several chains, and reports the split-:math:`\hat R` and the
effective sample size of every coordinate, so that the reference itself can be trusted
before a VI fit is compared with it. Chapters 6, 7 and 10 use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vicourse._logging import quiet
from vicourse._seed import sanitize_seed
from vicourse._validation import as_float_tensor, check_bool, check_count, check_finite

tfd = tfp.distributions

__all__ = ["ReferencePosterior", "reference_posterior"]


class ReferencePosterior(NamedTuple):
    """Result of :func:`reference_posterior`; each field maps a latent variable's name to
    an array."""

    draws: dict
    """The kept draws, ``[num_draws, num_chains, *event]`` per variable."""
    mean: dict
    """Posterior mean over all draws and chains."""
    sd: dict
    """Posterior standard deviation over all draws and chains."""
    rhat: dict
    r"""Split potential scale reduction :math:`\hat R` per coordinate: each chain is split in
    halves, so a chain that drifts is caught too (near 1 when the chains agree; above
    1.01–1.05 is a warning)."""
    ess: dict
    """Effective sample size per coordinate, pooled over chains."""


def _nuts_phase(model, observed, center, scale, state, seed, num_draws, num_adaptation_steps):
    """NUTS with dual-averaging step-size adaptation in preconditioned coordinates.

    The chains move in ``u``, with unconstrained parameters ``center + scale * u`` (per part),
    so a diagonal mass matrix is the same as a per-coordinate ``scale``. Returns the kept
    draws, mapped back to the unconstrained space.
    """
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()

    def unconstrained(u):
        parts = [c + s * x for c, s, x in zip(center, scale, u, strict=True)]
        return tf.nest.pack_sequence_as(pinned.event_shape, parts)

    def target(*u):
        free = unconstrained(u)
        return pinned.unnormalized_log_prob(bijector.forward(free)) + (
            bijector.forward_log_det_jacobian(free)
        )

    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.NoUTurnSampler(target, step_size=tf.constant(0.5, center[0].dtype)),
        num_adaptation_steps=int(0.8 * num_adaptation_steps),
    )
    draws = tfp.mcmc.sample_chain(
        num_draws,
        list(state),
        kernel=kernel,
        num_burnin_steps=num_adaptation_steps,
        trace_fn=None,
        seed=seed,
    )
    return [c + s * d for c, s, d in zip(center, scale, draws, strict=True)]


def _to_constrained(model, observed, free):
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()
    return bijector.forward(tf.nest.pack_sequence_as(pinned.event_shape, free))


# One compiled phase per model object and set of sizes: the model is a Python object (a
# JointDistribution with callables is not a composite tensor), so it keys the trace, and
# both phases of a run (and later runs) reuse it.
_nuts_xla = tf.function(_nuts_phase, jit_compile=True)
_nuts_graph = tf.function(_nuts_phase)


def _run_nuts(model, observed, num_draws, num_chains, num_adaptation_steps, seed, run):
    """Two phases: adapt the step size in the raw unconstrained space; then restart there,
    preconditioned by the first phase's per-coordinate mean and sd (a diagonal mass
    matrix), adapt the step size again, and keep ``num_draws`` draws per chain."""
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()
    shapes = tf.nest.flatten(bijector.inverse_event_shape(pinned.event_shape))
    dtype = tf.nest.flatten(pinned.dtype)[0]
    init_seed, first_seed, second_seed = tfp.random.split_seed(seed, n=3)
    # Stan's initialization: uniform in [-2, 2] on the unconstrained scale.
    state = [
        tf.random.stateless_uniform(
            [num_chains, *s],
            tfp.random.split_seed(init_seed, n=len(shapes))[i],
            -2.0,
            2.0,
            dtype,
        )
        for i, s in enumerate(shapes)
    ]
    center = [tf.zeros(s, dtype) for s in shapes]
    scale = [tf.ones(s, dtype) for s in shapes]
    free = run(model, observed, center, scale, state, first_seed, num_draws, num_adaptation_steps)
    center = [tf.reduce_mean(d, axis=[0, 1]) for d in free]
    scale = [tf.maximum(tf.math.reduce_std(d, axis=[0, 1]), 1e-8) for d in free]
    state = [(d[-1] - c) / s for d, c, s in zip(free, center, scale, strict=True)]
    free = run(model, observed, center, scale, state, second_seed, num_draws, num_adaptation_steps)
    return _to_constrained(model, observed, free)


def _as_dict(draws) -> dict:
    if isinstance(draws, Mapping):
        return {str(k): v for k, v in draws.items()}
    if hasattr(draws, "_asdict"):
        return {str(k): v for k, v in draws._asdict().items()}
    if isinstance(draws, (list, tuple)):
        return {str(i): v for i, v in enumerate(draws)}
    return {"z": draws}


def _check_observed(model, observed) -> dict:
    if not isinstance(observed, Mapping):
        raise TypeError(
            f"`observed` must be a dict from variable names to observed values, got "
            f"{type(observed).__name__}."
        )
    checked = {}
    for name, value in observed.items():
        tensor = as_float_tensor(value, f"observed[{name!r}]", tf.float64)
        check_finite(tensor, f"observed[{name!r}]")
        checked[name] = value
    try:
        pinned = model.experimental_pin(**checked)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(
            f"`observed` does not match the model's variables: {err}. Use the names of "
            "the model's variables as keys."
        ) from None
    if not tf.nest.flatten(pinned.event_shape):
        raise ValueError("`observed` pins every variable of the model; leave some latent.")
    return checked


def reference_posterior(
    model: tfd.JointDistribution,
    observed: Mapping,
    *,
    num_draws: int = 1000,
    num_chains: int = 4,
    num_adaptation_steps: int | None = None,
    seed=None,
    jit_compile: bool = True,
) -> ReferencePosterior:
    r"""Draws from :math:`p(z \mid x)` by NUTS, with :math:`\hat R` and effective sample sizes.

    Runs ``num_chains`` chains of TFP's No-U-Turn sampler :cite:p:`hoffman2014nuts` in the
    model's unconstrained space (its default event-space bijectors), initialized uniformly
    in [-2, 2] there, in two phases of ``num_adaptation_steps`` warm-up and ``num_draws``
    kept draws each. Phase one adapts the step size by dual averaging; phase two restarts
    from its last draws, preconditioned by its per-coordinate mean and standard deviation
    (a diagonal mass matrix), adapts the step size again, and keeps its draws. Both phases
    run the same compiled function (XLA by default), built once per model object and set
    of sizes: TFP's ``windowed_adaptive_nuts`` traces one NUTS kernel per adaptation window,
    which cost 30–40 s of graph building on eight schools against about 10 s here.

    The split potential scale reduction :math:`\hat R` compares between- and within-chain
    variances, with each chain split in halves; values near 1 say the chains agree. The
    effective sample size (pooled over chains) sets the Monte Carlo error of a posterior
    mean,
    :math:`\mathrm{sd}/\sqrt{\mathrm{ESS}}`. Both are TFP's estimators.

    Parameters
    ----------
    model : tfp.distributions.JointDistribution
        The joint model :math:`p(z, x)`, for example a ``tfd.JointDistributionNamed``.
    observed : dict
        Observed values by variable name, pinned in ``model``; the other variables are the
        latent ones sampled.
    num_draws : int, default 1000
        Kept draws per chain, at least 10.
    num_chains : int, default 4
        Independent chains, at least 2 (:math:`\hat R` compares chains).
    num_adaptation_steps : int, optional
        Warm-up steps (discarded); defaults to ``num_draws``.
    seed : int or Tensor of shape [2], optional
        Stateless seed; the same seed gives the same draws.
    jit_compile : bool, default True
        Compile the sampler with XLA; ``False`` runs a plain ``tf.function`` graph.

    Returns
    -------
    ReferencePosterior
        ``draws``, ``mean``, ``sd``, ``rhat`` and ``ess``, each a dict keyed by the latent
        variables' names (indices for a sequential model).

    Raises
    ------
    TypeError, ValueError
        If ``model`` is not a TFP ``JointDistribution``, ``observed`` is not a dict of
        finite values for the model's variables (or pins all of them), or a count or seed
        is invalid.

    Notes
    -----
    Used as the reference for VI fits in :doc:`/book/chapters/06_reparameterization`.
    """
    if not isinstance(model, tfd.JointDistribution):
        raise TypeError(
            f"`model` must be a tfp.distributions.JointDistribution (e.g. "
            f"tfd.JointDistributionNamed), got {type(model).__name__}."
        )
    observed = _check_observed(model, observed)
    num_draws = check_count(num_draws, "num_draws", minimum=10)
    num_chains = check_count(num_chains, "num_chains", minimum=2)
    if num_adaptation_steps is None:
        num_adaptation_steps = num_draws
    num_adaptation_steps = check_count(num_adaptation_steps, "num_adaptation_steps", minimum=10)
    jit_compile = check_bool(jit_compile, "jit_compile")
    seed = sanitize_seed(seed)
    run = _nuts_xla if jit_compile else _nuts_graph
    observed = {k: tf.convert_to_tensor(v, dtype_hint=tf.float64) for k, v in observed.items()}
    # TF32 matmuls (TensorFlow's default on recent GPUs) lose precision that MCMC needs;
    # TFP warns about it. Off for this call, then restored.
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        draws = _as_dict(
            _run_nuts(model, observed, num_draws, num_chains, num_adaptation_steps, seed, run)
        )
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    draws = {k: np.asarray(v) for k, v in draws.items()}
    rhat = {
        k: np.asarray(tfp.mcmc.potential_scale_reduction(v, split_chains=True))
        for k, v in draws.items()
    }
    # TFP's FFT-based autocorrelation logs a harmless note when it drops the (zero)
    # imaginary part of its complex intermediate.
    with quiet("You are casting an input of type complex"):
        ess = {
            k: np.asarray(tfp.mcmc.effective_sample_size(v, cross_chain_dims=1))
            for k, v in draws.items()
        }
    mean = {k: v.mean(axis=(0, 1)) for k, v in draws.items()}
    sd = {k: v.std(axis=(0, 1)) for k, v in draws.items()}
    return ReferencePosterior(draws, mean, sd, rhat, ess)
