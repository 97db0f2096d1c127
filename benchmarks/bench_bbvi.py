"""Benchmark: gradient variance and time to a target ELBO of chapter 7's score-function
estimators, and NumPyro's TraceGraph_ELBO on the mixture.

Two models, float64, every contender in one process run:

  (a) the Bayesian logistic regression of chapter 6 (scikit-learn's breast-cancer data,
      N = 569, D = 31 with the intercept, w ~ N(0, I)), mean-field normal q;
  (b) the Bayesian mixture of chapter 4 (K = 3 clusters in the plane, N = 500 points,
      tau = 10, sigma = 1) with CAVI's family: q(mu_k) = N(m_k, s_k^2 I) and
      q(c_i) = Categorical(softmax(l_i)).

Estimators (vicourse.fit_vi / elbo_gradient options): the plain score function; + the
leave-one-out control variate; + Rao-Blackwellization (blanket_log_prob); both; and
reparameterization where it applies (the regression; for the mixture, "mixed":
reparameterized means, Rao-Blackwellized score function with the control variate for the
labels). Peer, on the mixture: NumPyro's TraceGraph_ELBO (reparameterized means, the
score function with Rao-Blackwellization by provenance tracking for the labels).

Measured:
  1. the per-parameter variance of one sample's gradient (mean over parameters), at the
     starting point, from 4,000 samples;
  2. the variance of the S = 16 estimate used in the fits, from 200 independent
     estimates (this is where a control variate's coefficient is estimated from 15 other
     samples, and what the optimizer sees);
  3. wall time to a target ELBO: each estimator runs 2,000 steps of S = 16 (Adam, cosine
     decay); the first step at which the 100-step moving average of the Monte Carlo ELBO
     reaches the target, times the seconds per step of a warm (already compiled) run;
  4. for the mixture, the closed-form ELBO after 2,000 steps (vicourse.gmm_elbo), for ours
     and NumPyro's, against CAVI's optimum from the same start.

Run: `make bench` (installs the bench extra: jax, numpyro), or
`.venv/bin/python benchmarks/bench_bbvi.py`.
"""

from __future__ import annotations

import math
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as ndist  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from numpyro.infer import SVI, TraceGraph_ELBO  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

import vicourse  # noqa: E402

jax.config.update("jax_enable_x64", True)
tfd, tfb = tfp.distributions, tfp.bijectors
F64 = np.float64
STEPS, SAMPLES, REPLICATES, PER_SAMPLE = 2000, 16, 200, 4000
WINDOW = 100

# ---------------------------------------------------------------------------------------
# (a) Logistic regression: every w_d appears in every likelihood term, so the Markov
#     blanket of w_d is its prior term plus the whole likelihood.
# ---------------------------------------------------------------------------------------

_X, _Y = load_breast_cancer(return_X_y=True)
X_LR = np.hstack([np.ones((len(_X), 1)), (_X - _X.mean(0)) / _X.std(0)])
Y_LR = _Y.astype(F64)
D_LR = X_LR.shape[1]
W_PRIOR = tfd.Normal(F64(0.0), F64(1.0))


def lr_likelihood(w):
    logits = tf.einsum("nd,sd->sn", X_LR, w)
    return tf.reduce_sum(tfd.Bernoulli(logits=logits, dtype=tf.float64).log_prob(Y_LR), -1)


def lr_log_joint(w):
    return tf.reduce_sum(W_PRIOR.log_prob(w), -1) + lr_likelihood(w)


def lr_blanket(w):
    return W_PRIOR.log_prob(w) + lr_likelihood(w)[:, None]


def lr_q():
    scale = tfp.util.TransformedVariable(np.full(D_LR, 0.1), tfb.Softplus())
    return tfd.Independent(tfd.Normal(tf.Variable(np.zeros(D_LR)), scale), 1)


LR_CONTENDERS = {
    "score function": dict(estimator="score_function"),
    "+ control variate": dict(estimator="score_function", control_variate=True),
    "+ Rao-Blackwellization": dict(estimator="score_function", blanket_log_prob=lr_blanket),
    "+ both": dict(estimator="score_function", control_variate=True,
                   blanket_log_prob=lr_blanket),
    "reparameterization": dict(estimator="reparameterization"),
}

# ---------------------------------------------------------------------------------------
# (b) The mixture
# ---------------------------------------------------------------------------------------

K, D, N = 3, 2, 500
TAU, SIGMA = 10.0, 1.0
TRUE_MEANS = np.array([[-3.0, -1.0], [3.0, -1.5], [0.0, 3.5]])
_rng = np.random.default_rng(0)
X_MIX = TRUE_MEANS[_rng.integers(0, K, N)] + _rng.normal(size=(N, D))
INIT = vicourse.gmm_init(X_MIX, K, seed=0).means_loc.numpy()
MEAN_PRIOR = tfd.Normal(F64(0.0), F64(TAU))


def label_blanket(z):
    """log p(c_i) + log N(x_i; mu_{c_i}, sigma^2 I), [S, N]."""
    per_component = tf.reduce_sum(
        tfd.Normal(z["mu"][:, None], SIGMA).log_prob(X_MIX[None, :, None]), -1)
    return tf.gather(per_component, z["c"][..., None], batch_dims=2)[..., 0] - math.log(K)


def mix_log_joint(z):
    return tf.reduce_sum(MEAN_PRIOR.log_prob(z["mu"]), [-2, -1]) + tf.reduce_sum(
        label_blanket(z), -1)


def all_blankets(z):
    """Every factor's blanket, in mean_field_factors order: c_1..c_N, then mu_kd."""
    onehot = tf.one_hot(z["c"], K, dtype=tf.float64)
    per_coordinate = tfd.Normal(z["mu"][:, None], SIGMA).log_prob(X_MIX[None, :, None])
    mu_terms = tf.einsum("snk,snkd->skd", onehot, per_coordinate) + MEAN_PRIOR.log_prob(
        z["mu"])
    return tf.concat([label_blanket(z), tf.reshape(mu_terms, [-1, K * D])], -1)


def mix_q():
    scale = tfp.util.TransformedVariable(np.ones((K, 1)), tfb.Softplus())
    return tfd.JointDistributionNamed(dict(
        c=tfd.Independent(tfd.Categorical(logits=tf.Variable(np.zeros((N, K)))), 1),
        mu=tfd.Independent(tfd.Normal(tf.Variable(INIT), scale), 2),
    ))


def mix_closed_form(loc, scale, logits):
    state = vicourse.GMMState(np.asarray(loc), np.asarray(scale)[:, 0] ** 2)
    phi = tf.nn.softmax(np.asarray(logits)).numpy()
    return float(vicourse.gmm_elbo(X_MIX, state, phi, TAU, SIGMA))


MIX_CONTENDERS = {
    "score function": dict(estimator="score_function"),
    "+ control variate": dict(estimator="score_function", control_variate=True),
    "+ Rao-Blackwellization": dict(estimator="score_function", blanket_log_prob=all_blankets),
    "+ both": dict(estimator="score_function", control_variate=True,
                   blanket_log_prob=all_blankets),
    "mixed (reparam. means) + both": dict(estimator="mixed", control_variate=True,
                                          blanket_log_prob=label_blanket),
}

# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def variances(log_joint, make_q, options, groups):
    """Mean per-parameter variance of one sample's gradient and of the S = 16 estimate,
    per group of variables (``groups`` maps a group name to variable indices)."""
    q = make_q()
    single = vicourse.elbo_gradient(log_joint, q, num_samples=PER_SAMPLE, seed=1, **options)
    estimates = [
        vicourse.elbo_gradient(log_joint, q, num_samples=SAMPLES, seed=100 + r,
                               **options).gradients
        for r in range(REPLICATES)
    ]
    result = {}
    for group, indices in groups.items():
        result[f"single {group}"] = np.concatenate(
            [np.ravel(single.variances[i].numpy()) for i in indices]).mean()
        result[f"S=16 {group}"] = np.concatenate([
            np.ravel(np.var(np.stack([e[i].numpy() for e in estimates]), axis=0, ddof=1))
            for i in indices]).mean()
    return result


def time_to_target(log_joint, make_q, options, target, learning_rate):
    """Steps and seconds until the moving average of the Monte Carlo ELBO reaches
    ``target`` (a warm run: the loop was compiled by a first run)."""
    runs = []
    for seed in (0, 1):
        q = make_q()
        start = time.perf_counter()
        fit = vicourse.fit_vi(log_joint, q, num_steps=STEPS, num_samples=SAMPLES, seed=seed,
                              learning_rate=learning_rate, jit_compile=True, **options)
        runs.append((time.perf_counter() - start, fit.elbo_trace.numpy(), q))
    seconds, trace, q = runs[1]
    smooth = np.convolve(trace, np.ones(WINDOW) / WINDOW, mode="valid")
    reached = np.nonzero(smooth >= target)[0]
    step = int(reached[0]) + WINDOW if reached.size else None
    per_step = seconds / STEPS
    return dict(step=step, seconds=None if step is None else step * per_step,
                per_step=per_step, final=float(smooth[-1]), q=q)


def variable_groups(q, roles):
    """Indices of q.trainable_variables by role (matched by shape)."""
    groups = {}
    for index, v in enumerate(q.trainable_variables):
        groups.setdefault(roles(v), []).append(index)
    return groups


# ---------------------------------------------------------------------------------------
# NumPyro's TraceGraph_ELBO on the same mixture, the same start and the same schedule
# ---------------------------------------------------------------------------------------


def numpyro_model(x):
    with numpyro.plate("components", K):
        mu = numpyro.sample("mu", ndist.Normal(0.0, TAU).expand([D]).to_event(1))
    with numpyro.plate("data", N):
        c = numpyro.sample("c", ndist.Categorical(logits=jnp.zeros(K)))
        numpyro.sample("x", ndist.Normal(mu[c], SIGMA).to_event(1), obs=x)


def numpyro_guide(x):
    logits = numpyro.param("logits", jnp.zeros((N, K)))
    loc = numpyro.param("loc", jnp.asarray(INIT))
    scale = numpyro.param("scale", jnp.ones((K, 1)), constraint=ndist.constraints.positive)
    with numpyro.plate("components", K):
        numpyro.sample("mu", ndist.Normal(loc, scale).to_event(1))
    with numpyro.plate("data", N):
        numpyro.sample("c", ndist.Categorical(logits=logits))


def cosine(initial):
    def schedule(step):
        fraction = jnp.minimum(step / STEPS, 1.0)
        return initial * (0.01 + 0.99 * 0.5 * (1 + jnp.cos(jnp.pi * fraction)))

    return schedule


def numpyro_variances():
    """Per-parameter variance of TraceGraph_ELBO's gradient in the logits and the means'
    locations (the same parameterization as ours) at the start, one particle and 16."""
    params = {"logits": jnp.zeros((N, K)), "loc": jnp.asarray(INIT), "scale": jnp.ones((K, 1))}
    x = jnp.asarray(X_MIX)
    out = {}
    for label, particles, count in (("single", 1, PER_SAMPLE), ("S=16", SAMPLES, REPLICATES)):
        elbo = TraceGraph_ELBO(num_particles=particles)

        def gradient(key, elbo=elbo):
            return jax.grad(lambda p: -elbo.loss(key, p, numpyro_model, numpyro_guide, x))(
                params)

        grads = jax.jit(jax.vmap(gradient))(jax.random.split(jax.random.PRNGKey(0), count))
        out[f"{label} logits"] = float(jnp.var(grads["logits"], axis=0, ddof=1).mean())
        out[f"{label} means"] = float(jnp.var(grads["loc"], axis=0, ddof=1).mean())
    return out


def numpyro_fit():
    svi = SVI(numpyro_model, numpyro_guide, numpyro.optim.Adam(cosine(0.1)),
              TraceGraph_ELBO(num_particles=SAMPLES))
    x = jnp.asarray(X_MIX)

    @jax.jit
    def run(key):
        state = svi.init(key, x)
        state, losses = jax.lax.scan(lambda s, _: svi.update(s, x), state, None, length=STEPS)
        return svi.get_params(state), losses

    run(jax.random.PRNGKey(1))  # compile
    start = time.perf_counter()
    params, losses = run(jax.random.PRNGKey(2))
    jax.block_until_ready(losses)
    seconds = time.perf_counter() - start
    closed = mix_closed_form(params["loc"], params["scale"], params["logits"])
    return dict(final=closed, per_step=seconds / STEPS)


# ---------------------------------------------------------------------------------------


def fmt(value, spec=".3g"):
    return "not reached" if value is None else format(value, spec)


def main():
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}; load average {os.getloadavg()[0]:.1f}")
    print(f"Python {platform.python_version()}, TensorFlow {tf.__version__}, TFP "
          f"{tfp.__version__}, JAX {jax.__version__}, NumPyro {numpyro.__version__}, "
          f"vicourse {vicourse.__version__}; {STEPS} steps of S = {SAMPLES}, float64\n")

    # (a) logistic regression -----------------------------------------------------------
    reference = time_to_target(lr_log_joint, lr_q, dict(estimator="reparameterization"),
                               np.inf, 0.05)
    lr_target = reference["final"] - 0.02 * abs(reference["final"])
    print(f"### (a) Logistic regression (N = {len(Y_LR)}, D = {D_LR})\n")
    print(f"Target ELBO: {lr_target:.1f} (the reparameterization run's final 100-step "
          f"average, {reference['final']:.1f}, minus 2%).\n")
    print("| estimator | variance, one sample | variance, S = 16 estimate | variance "
          "reduction (S = 16) | steps to target | time to target (s) | final ELBO |")
    print("|---|---|---|---|---|---|---|")
    plain = None
    for name, options in LR_CONTENDERS.items():
        v = variances(lr_log_joint, lr_q, options, {"all": range(2)})
        t = time_to_target(lr_log_joint, lr_q, options, lr_target, 0.05)
        plain = plain or v["S=16 all"]
        print(f"| {name} | {v['single all']:.3g} | {v['S=16 all']:.3g} | "
              f"{plain / v['S=16 all']:.3g}x | {fmt(t['step'], 'd')} | "
              f"{fmt(t['seconds'], '.2f')} | {t['final']:.1f} |")

    # (b) mixture -----------------------------------------------------------------------
    cavi = vicourse.fit_gmm(X_MIX, K, prior_scale=TAU, noise_scale=SIGMA, init=INIT, tol=0.0,
                            num_iters=200)
    optimum = float(cavi.elbo_trace[-1])
    mix_target = optimum - 5.0
    print(f"\n### (b) Mixture (N = {N}, K = {K}, D = {D})\n")
    print(f"CAVI's optimum from the same start: {optimum:.2f}; target ELBO {mix_target:.2f} "
          "(5 nats below).\n")
    print("| estimator | variance, one sample (logits / means) | variance, S = 16 estimate "
          "(logits / means) | steps to target | time to target (s) | closed-form ELBO "
          "after 2,000 steps |")
    print("|---|---|---|---|---|---|")

    def roles(v):
        return "logits" if tuple(v.shape) == (N, K) else "means"

    rows = {}
    for name, options in MIX_CONTENDERS.items():
        groups = variable_groups(mix_q(), roles)
        groups["means"] = [i for i in groups["means"]
                           if tuple(mix_q().trainable_variables[i].shape) == (K, D)]
        v = variances(mix_log_joint, mix_q, options, groups)
        t = time_to_target(mix_log_joint, mix_q, options, mix_target, 0.1)
        normal = t["q"].model["mu"].distribution
        closed = mix_closed_form(normal.loc.numpy(), normal.scale.numpy(),
                                 t["q"].model["c"].distribution.logits.numpy())
        rows[name] = v
        print(f"| {name} | {v['single logits']:.3g} / {v['single means']:.3g} | "
              f"{v['S=16 logits']:.3g} / {v['S=16 means']:.3g} | {fmt(t['step'], 'd')} | "
              f"{fmt(t['seconds'], '.2f')} | {closed:.2f} |")
    peer = numpyro_variances()
    fitted = numpyro_fit()
    print(f"| NumPyro TraceGraph_ELBO | {peer['single logits']:.3g} / "
          f"{peer['single means']:.3g} | {peer['S=16 logits']:.3g} / {peer['S=16 means']:.3g}"
          f" | | {fitted['per_step'] * 1e3:.2f} ms/step | {fitted['final']:.2f} |")
    ours = rows["mixed (reparam. means) + both"]
    ratio_logits = peer["S=16 logits"] / ours["S=16 logits"]
    ratio_means = peer["S=16 means"] / ours["S=16 means"]
    print(f"\nTraceGraph_ELBO / ours (mixed + both), variance of the S = 16 estimate: "
          f"logits {ratio_logits:.2f}x, means {ratio_means:.2f}x. Target (ours lower): "
          f"{'met' if ratio_logits > 1 else 'missed'}.")


if __name__ == "__main__":
    main()
