"""Benchmark: richer variational families (chapter 9) against NumPyro's AutoGuides, and VI
against NUTS in wall time to a given accuracy (chapter 10).

Part 1, per family and target: the time per ``vicourse.fit_vi`` step (the XLA-compiled
loop) and the final ELBO, next to NumPyro's AutoGuides in the same process, on the same
targets, with the same settings:

  targets   the correlated Gaussian (rho = 0.9), the banana, Neal's funnel (2-D), the
            bimodal mixture, and centered eight schools (10-D), from ``vicourse.targets``;
            written once more in JAX for NumPyro (a ``numpyro.factor`` on an improper flat
            site for the 2-D targets; the eight-schools model itself, whose AutoGuide
            works on log tau as ours does);
  families  mean field / AutoDiagonalNormal, full rank / AutoMultivariateNormal, IAF
            (3 layers, hidden [16, 16]) / AutoIAFNormal(num_flows=3, hidden_dims=[16, 16]),
            and the mixture (K = 3, stratified ELBO; NumPyro has no mixture AutoGuide);
  settings  float64 in both (jax_enable_x64), S = 4 draws per step (per component for the
            mixture), 2,000 steps, Adam with a cosine decay from 0.05 (0.01 for flows) to
            1% of it, in both.

Steps per second are medians over repeats after a first call that compiles (vicourse: the
same surrogate fitted again, which reuses the compiled loop, and the trace count is checked
unchanged; NumPyro: ``svi.update`` in ``jax.lax.scan`` jitted once, and ``SVI.run``). The
final ELBO of every fit is re-estimated from 20,000 fresh draws (NumPyro:
``Trace_ELBO(num_particles=20_000).loss``), with its gap to the exact log Z.

Part 2, VI against NUTS: wall time (compilation excluded, reported separately) to reach
and keep a largest posterior-mean error below 0.1 posterior sd, on eight schools (exact
moments by quadrature; NUTS on the non-centered form) and on chapter 6's logistic
regression (breast cancer, N = 569, D = 31; the reference is a long NUTS run with another
seed). VI: one fresh fit per budget of 125 to 8,000 steps (fit_vi's cosine schedule over
the budget), each timed, its mean error measured from 8,000 draws; the time to the
threshold is that of the smallest budget from which on every fit is below it. NUTS: the
error of the running mean of the kept draws, each draw charged its share of the run's time,
warm-up included.

Run: `make bench` (installs the bench extra: jax, numpyro), or
`.venv/bin/python benchmarks/bench_families.py [--repeats 3] [--part 1|2]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as ndist  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import (  # noqa: E402
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoMultivariateNormal,
)
from numpyro.infer.initialization import init_to_value  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

import vicourse  # noqa: E402
from vicourse import gradients  # noqa: E402
from vicourse.targets import SCHOOLS_SIGMA, SCHOOLS_Y  # noqa: E402

tfd = tfp.distributions
STEPS, LONG, SAMPLES, ELBO_DRAWS = 2000, 20_000, 4, 20_000
RATE = {"mean_field": 0.05, "full_rank": 0.05, "flow": 0.01, "mixture": 0.05}
FAMILIES = {
    "mean field": dict(kind="mean_field"),
    "full rank": dict(kind="full_rank"),
    "IAF flow": dict(kind="flow", flow="iaf", num_layers=3, hidden_units=[16, 16]),
    "mixture (K=3)": dict(kind="mixture", num_components=3, scale=2.0),
}
SCHOOL_LOC = np.array([0.0, np.log(5.0)] + [0.0] * 8)  # (mu, log tau, theta)
SCHOOL_SCALE = np.array([5.0, 1.0] + [5.0] * 8)


# ---------------------------------------------------------------------------------------
# The targets, for NumPyro (vicourse's are in vicourse.targets)
# ---------------------------------------------------------------------------------------

_COV = jnp.array([[1.0, 0.9], [0.9, 1.0]])


def _gaussian(z):
    return ndist.MultivariateNormal(jnp.zeros(2), _COV).log_prob(z)


def _banana(z):
    u1, u2 = z[..., 0], z[..., 1]
    return ndist.Normal(0.0, 1.0).log_prob(u1) + ndist.Normal(u1**2 - 1.0, 1.0).log_prob(u2)


def _funnel(z):
    v, x = z[..., 0], z[..., 1]
    return ndist.Normal(0.0, 3.0).log_prob(v) + ndist.Normal(0.0, jnp.exp(v / 2)).log_prob(x)


def _bimodal(z):
    modes = jnp.array([[-2.0, 0.0], [2.0, 0.0]])
    parts = ndist.Normal(modes, 0.6).log_prob(z[..., None, :]).sum(-1)
    return jax.scipy.special.logsumexp(parts, -1) + jnp.log(0.5)


def _flat_model(log_density):
    def model():
        z = numpyro.sample("z", ndist.ImproperUniform(ndist.constraints.real_vector, (), (2,)))
        numpyro.factor("target", log_density(z))

    return model


def _schools_model():
    mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
    with numpyro.plate("schools", 8):
        theta = numpyro.sample("theta", ndist.Normal(mu, tau))
        numpyro.sample("y", ndist.Normal(theta, jnp.asarray(SCHOOLS_SIGMA)),
                       obs=jnp.asarray(SCHOOLS_Y))


TARGETS = {
    "Gaussian": (vicourse.correlated_gaussian(correlation=0.9), _flat_model(_gaussian),
                 dict(z=jnp.zeros(2))),
    "banana": (vicourse.banana(), _flat_model(_banana), dict(z=jnp.zeros(2))),
    "funnel": (vicourse.funnel(), _flat_model(_funnel), dict(z=jnp.zeros(2))),
    "bimodal": (vicourse.bimodal(), _flat_model(_bimodal), dict(z=jnp.zeros(2))),
    "eight schools": (vicourse.eight_schools(), _schools_model,
                      dict(mu=0.0, tau=5.0, theta=jnp.zeros(8))),
}
GUIDES = {"mean field": AutoDiagonalNormal, "full rank": AutoMultivariateNormal,
          "IAF flow": AutoIAFNormal}


# ---------------------------------------------------------------------------------------
# Part 1: steps/s and final ELBO
# ---------------------------------------------------------------------------------------


def _surrogate(family, target, seed):
    options = dict(FAMILIES[family])
    kind = options.pop("kind")
    if target.name == "eight schools":
        options.update(loc=SCHOOL_LOC, scale=SCHOOL_SCALE)
    return kind, vicourse.make_surrogate(kind, target.event_shape, bijector=target.bijector,
                                         seed=seed, **options)


def vicourse_row(family, target, repeats):
    kind, q = _surrogate(family, target, seed=0)
    settings = dict(num_steps=STEPS, num_samples=SAMPLES, learning_rate=RATE[kind],
                    estimator="stratified" if kind == "mixture" else "reparameterization",
                    jit_compile=True)
    start = time.perf_counter()
    vicourse.fit_vi(target.log_prob, q, seed=0, **settings)
    first = time.perf_counter() - start
    z = q.sample(ELBO_DRAWS, seed=(9, 9))
    elbo = float(tf.reduce_mean(target.log_prob(z) - q.log_prob(tf.constant(z.numpy()))))
    traces = gradients._vi_chunk_xla.experimental_get_tracing_count()
    times = []
    for k in range(repeats):  # the same q again: the compiled loop is reused
        start = time.perf_counter()
        vicourse.fit_vi(target.log_prob, q, seed=k + 1, **settings)
        times.append(time.perf_counter() - start)
    long_times = []
    for k in range(repeats):  # per-step throughput, the per-call cost spread thin
        start = time.perf_counter()
        vicourse.fit_vi(target.log_prob, q, seed=k + 1, **{**settings, "num_steps": LONG})
        long_times.append(time.perf_counter() - start)
    retraced = gradients._vi_chunk_xla.experimental_get_tracing_count() - traces
    assert retraced == 0, f"fit_vi retraced on repeated calls ({retraced})"
    return first, STEPS / float(np.median(times)), LONG / float(np.median(long_times)), elbo


def _schedule(rate):
    def step_size(i):
        fraction = jnp.minimum(i / STEPS, 1.0)
        return rate * (0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * fraction)))

    return step_size


def numpyro_rows(family, model, init, repeats):
    kind = FAMILIES[family]["kind"]
    options = dict(init_loc_fn=init_to_value(values=init))
    if kind == "flow":
        guide = AutoIAFNormal(model, num_flows=3, hidden_dims=[16, 16], **options)
    else:
        guide = GUIDES[family](model, init_scale=1.0, **options)
    svi = SVI(model, guide, numpyro.optim.Adam(_schedule(RATE[kind])),
              Trace_ELBO(num_particles=SAMPLES))

    def make_scan(length):
        @jax.jit
        def scan(state):
            return jax.lax.scan(lambda s, _: svi.update(s), state, None, length=length)

        return scan

    scan, long_scan = make_scan(STEPS), make_scan(LONG)

    def run_scan(k, compiled=scan):
        state, losses = compiled(svi.init(jax.random.PRNGKey(k)))
        losses.block_until_ready()
        return state

    start = time.perf_counter()
    state = run_scan(0)
    first = time.perf_counter() - start
    params = svi.get_params(state)
    loss = Trace_ELBO(num_particles=ELBO_DRAWS).loss(jax.random.PRNGKey(99), params, model,
                                                      guide)
    elbo = -float(loss)
    times = []
    for k in range(repeats):
        start = time.perf_counter()
        run_scan(k + 1)
        times.append(time.perf_counter() - start)
    scan_rate = STEPS / float(np.median(times))
    run_scan(0, long_scan)  # compiles
    long_times = []
    for k in range(repeats):
        start = time.perf_counter()
        run_scan(k + 1, long_scan)
        long_times.append(time.perf_counter() - start)
    run_times = []
    svi.run(jax.random.PRNGKey(0), STEPS, progress_bar=False)  # compiles
    for k in range(repeats):
        start = time.perf_counter()
        result = svi.run(jax.random.PRNGKey(k + 1), STEPS, progress_bar=False)
        result.losses.block_until_ready()
        run_times.append(time.perf_counter() - start)
    run_rate = STEPS / float(np.median(run_times))
    return first, scan_rate, run_rate, LONG / float(np.median(long_times)), elbo


def part1(repeats):
    print(f"## Part 1: S = {SAMPLES}, median of {repeats} repeats; steps/s of {STEPS:,}-step "
          f"calls (per-call costs included) and of {LONG:,}-step calls (throughput)\n")
    print(f"| target | family | vicourse steps/s, {STEPS:,} | NumPyro scan | NumPyro SVI.run "
          f"| ratio to best NumPyro | vicourse steps/s, {LONG:,} | NumPyro scan | ratio | "
          "vicourse gap | NumPyro gap | first call (s), vicourse / NumPyro |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios, long_ratios = [], []
    for t_name, (target, model, init) in TARGETS.items():
        for family in FAMILIES:
            first, ours, ours_long, elbo = vicourse_row(family, target, repeats)
            gap = target.log_normalizer - elbo
            if family in GUIDES:
                n_first, scan_rate, run_rate, scan_long, n_elbo = numpyro_rows(
                    family, model, init, repeats)
                best = max(scan_rate, run_rate)
                ratios.append(ours / best)
                long_ratios.append(ours_long / scan_long)
                cells = (f"{scan_rate:,.0f} | {run_rate:,.0f} | {ours / best:.2f}x | "
                         f"{ours_long:,.0f} | {scan_long:,.0f} | {ours_long / scan_long:.2f}x | "
                         f"{gap:.3f} | {target.log_normalizer - n_elbo:.3f} | "
                         f"{first:.1f} / {n_first:.1f}")
            else:
                cells = (f"— | — | — | {ours_long:,.0f} | — | — | {gap:.3f} | — | "
                         f"{first:.1f} / —")
            print(f"| {t_name} | {family} | {ours:,.0f} | {cells} |", flush=True)
    for label, values in ((f"{STEPS:,}-step calls", ratios), (f"{LONG:,}", long_ratios)):
        print(f"\nvicourse / best NumPyro steps/s, {label}: median {np.median(values):.2f}x, "
              f"min {min(values):.2f}x, max {max(values):.2f}x over {len(values)} pairs")
    print()


# ---------------------------------------------------------------------------------------
# Part 2: VI against NUTS, wall time to a largest mean error below 0.1 posterior sd
# ---------------------------------------------------------------------------------------

THRESHOLD = 0.1
BUDGETS = (125, 250, 500, 1000, 2000, 4000, 8000)


def _time_to_threshold(seconds, errors):
    """The first time after which the error stays below THRESHOLD, or None."""
    below = np.asarray(errors) < THRESHOLD
    if not below[-1]:
        return None
    last_above = np.nonzero(~below)[0]
    start = 0 if len(last_above) == 0 else last_above[-1] + 1
    return float(np.asarray(seconds)[start])


def vi_curve(make_q, log_joint, mean, sd, rate, data=None):
    """One fresh fit per step budget (fit_vi's own cosine schedule over the budget, the XLA
    loop), each timed after a 1-step call that compiles; the error of each fit's mean."""
    compile_seconds, seconds, errors = [], [], []
    for budget in BUDGETS:
        q = make_q()
        settings = dict(num_samples=SAMPLES, learning_rate=rate, data=data, seed=budget)
        start = time.perf_counter()
        vicourse.fit_vi(log_joint, q, num_steps=1, **{**settings, "learning_rate": 1e-12})
        compile_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        vicourse.fit_vi(log_joint, q, num_steps=budget, **settings)
        seconds.append(time.perf_counter() - start)
        draws = q.sample(8000, seed=(5, budget)).numpy()
        errors.append(float(np.max(np.abs(draws.mean(0) - mean) / sd)))
    return (max(compile_seconds), _time_to_threshold(seconds, errors), errors[-1],
            seconds[-1])


def nuts_curve(model, observed, flatten, mean, sd, num_draws, warmup, seed=0):
    args = dict(num_draws=num_draws, num_adaptation_steps=warmup, num_chains=4, seed=seed)
    start = time.perf_counter()
    vicourse.reference_posterior(model, observed, **args)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = vicourse.reference_posterior(model, observed, **args)
    run_seconds = time.perf_counter() - start
    draws = flatten(result.draws)  # [num_draws, chains, D]
    counts = np.unique(np.geomspace(5, num_draws, 60).astype(int))
    errors = [np.max(np.abs(draws[:n].mean((0, 1)) - mean) / sd) for n in counts]
    # reference_posterior runs two phases of warmup + num_draws iterations and keeps the
    # second phase's draws: the n-th kept draw arrives after 2 warmup + num_draws + n.
    seconds = run_seconds * (2 * warmup + num_draws + counts) / (2 * (warmup + num_draws))
    return (compile_seconds - run_seconds, _time_to_threshold(seconds, errors),
            float(errors[-1]), run_seconds)


def _fmt(value):
    return "not reached" if value is None else f"{value:.2f}"


def part2():
    print("## Part 2: wall time to a largest mean error < 0.1 posterior sd\n")
    print("| model | method | compile (s) | time to < 0.1 sd (s) | error at the end | "
          "run length (s) |")
    print("|---|---|---|---|---|---|")
    schools = vicourse.eight_schools()
    for family in ("mean field", "full rank", "IAF flow"):
        kind = FAMILIES[family]["kind"]
        row = vi_curve(lambda family=family: _surrogate(family, schools, seed=2)[1],
                       schools.log_prob, schools.mean, schools.sd, RATE[kind])
        print(f"| eight schools | VI, {family} (up to {BUDGETS[-1]:,} steps) | {row[0]:.1f} | "
              f"{_fmt(row[1])} | {row[2]:.2f} | {row[3]:.2f} |", flush=True)
    noncentered = tfd.JointDistributionNamed(dict(
        mu=tfd.Normal(np.float64(0.0), np.float64(5.0)),
        tau=tfd.HalfCauchy(np.float64(0.0), np.float64(5.0)),
        theta_tilde=tfd.Sample(tfd.Normal(np.float64(0.0), np.float64(1.0)), 8),
        y=lambda mu, tau, theta_tilde: tfd.Independent(
            tfd.Normal(mu[..., None] + tau[..., None] * theta_tilde, SCHOOLS_SIGMA), 1),
    ))

    def schools_flat(d):
        theta = d["mu"][..., None] + d["tau"][..., None] * d["theta_tilde"]
        return np.concatenate([d["mu"][..., None], d["tau"][..., None], theta], -1)

    row = nuts_curve(noncentered, {"y": SCHOOLS_Y}, schools_flat, schools.mean, schools.sd,
                     2000, 1000)
    print(f"| eight schools | NUTS, non-centered (4 chains, 1,000 + 2,000) | {row[0]:.1f} | "
          f"{_fmt(row[1])} | {row[2]:.3f} | {row[3]:.2f} |", flush=True)

    x_raw, y_raw = load_breast_cancer(return_X_y=True)
    x = np.hstack([np.ones((len(x_raw), 1)), (x_raw - x_raw.mean(0)) / x_raw.std(0)])
    y = y_raw.astype(np.float64)
    dim = x.shape[1]
    model = tfd.JointDistributionNamed(dict(
        w=tfd.Independent(tfd.Normal(np.zeros(dim), np.float64(1.0)), 1),
        y=lambda w: tfd.Independent(
            tfd.Bernoulli(logits=tf.einsum("nd,...d->...n", x, w), dtype=tf.float64), 1),
    ))
    start = time.perf_counter()
    truth = vicourse.reference_posterior(model, {"y": y}, num_draws=5000,
                                         num_adaptation_steps=1000, seed=123)
    print(f"\n(logistic reference: 4 x 5,000 NUTS draws in {time.perf_counter() - start:.0f} "
          f"s, max R-hat {truth.rhat['w'].max():.3f}, min ESS {truth.ess['w'].min():.0f})\n")
    mean, sd = truth.mean["w"], truth.sd["w"]
    prior = tfd.Normal(np.float64(0.0), np.float64(1.0))

    def log_joint(w, batch):
        features, labels = batch
        logits = tf.einsum("nd,sd->sn", features, w)
        like = tfd.Bernoulli(logits=logits, dtype=tf.float64).log_prob(labels)
        return tf.reduce_sum(prior.log_prob(w), -1) + tf.reduce_sum(like, -1)

    for family in ("mean field", "full rank"):
        kind = FAMILIES[family]["kind"]
        row = vi_curve(lambda kind=kind: vicourse.make_surrogate(kind, [dim], seed=2),
                       log_joint, mean, sd, 0.05, data=(x, y))
        print(f"| logistic regression | VI, {family} (up to {BUDGETS[-1]:,} steps) | "
              f"{row[0]:.1f} | {_fmt(row[1])} | {row[2]:.2f} | {row[3]:.2f} |", flush=True)
    row = nuts_curve(model, {"y": y}, lambda d: d["w"], mean, sd, 1000, 500)
    print(f"| logistic regression | NUTS (4 chains, 500 + 1,000) | {row[0]:.1f} | "
          f"{_fmt(row[1])} | {row[2]:.3f} | {row[3]:.2f} |\n", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=["1", "2", "all"], default="all")
    args = parser.parse_args()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}")
    print(f"Python {platform.python_version()}, TensorFlow {tf.__version__}, TFP "
          f"{tfp.__version__}, JAX {jax.__version__}, NumPyro {numpyro.__version__}, "
          f"vicourse {vicourse.__version__}\n")
    if args.part in ("1", "all"):
        part1(args.repeats)
    if args.part in ("2", "all"):
        part2()


if __name__ == "__main__":
    main()
