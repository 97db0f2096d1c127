"""Benchmark: time for SVI and CAVI to come within 0.1% of CAVI's optimum, K = 8, D = 2.

Contenders, in one process, on the same data and from the same initial means (float64):
  1. vicourse.fit_gmm_svi (minibatches of B = 1000, kappa = 0.7, tau_0 = 1);
  2. vicourse.fit_gmm (CAVI), whose converged full-data ELBO L* sets the target;
  3. scikit-learn's BayesianGaussianMixture(covariance_type="spherical"), started from the
     same means (each point assigned to the nearest one), timed per iteration;
  4. a plain NumPy SVI loop with the same updates, written here.

The target is the band ELBO >= L* - 1e-3 |L*|. Every contender is scored the same way: the
exact full-data ELBO of its global factors q(mu) with the optimal local factors,
L(q(mu)) = max_phi ELBO, computed here in NumPy (and checked against vicourse). The score is
computed at checkpoints (after 1, 2, 3, ... steps or sweeps), outside every timed region:
a run of n SVI steps is the prefix of any longer run with the same seed, so the checkpoints
need no instrumented loop. Time to the band = (steps or sweeps to the band) x (time per
step or sweep). The time per step or sweep is the median over repeats of
[T(long run) - T(short run)] / (difference in length), which cancels the fixed cost of a
call (input checks, the copy into TensorFlow, and fit_gmm_svi's final pass over the data,
which computes the full responsibilities and the full ELBO, i.e. the evaluation); the runs
are long enough (10,000 SVI steps, 5 sweeps) for the difference to stand well above the
noise, and the contenders alternate within each repeat, so that changes in the load of
the (shared) machine affect them alike. The end-to-end time of one public call that stops
at the band, fixed costs included, is measured directly as well.

Two starts, the same for every contender: k-means++ seeding on a subsample (both methods
then reach the same, best optimum, and CAVI needs very few sweeps), and vicourse's default
start, K distinct random data points (gmm_init, seed 0), from which CAVI needs more
sweeps and settles in a local optimum. scikit-learn runs from the default start up to
N = 1e6 only: it settles in another optimum and never enters the band, and walking it to
the iteration limit would take minutes at N = 1e7.

Also: SVI's time per step against N (it should be flat), and the peak memory of the
tf.data path, streamed from a generator in a subprocess, against N (it should be flat).

Run: `make bench` or `.venv/bin/python benchmarks/bench_svi.py` (about ten minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.cluster import kmeans_plusplus  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import BayesianGaussianMixture  # noqa: E402

import vicourse  # noqa: E402
from vicourse import svi  # noqa: E402

K, D, PRIOR_SCALE, NOISE_SCALE = 8, 2, 20.0, 1.0
BATCH, KAPPA, DELAY = 1000, 0.7, 1.0
BAND = 1e-3
CENTRES = 10.0 * np.stack(
    [np.cos(2 * np.pi * np.arange(K) / K), np.sin(2 * np.pi * np.arange(K) / K)], axis=1
)


def make_data(n, seed=0):
    """Eight unit-variance clusters on a circle of radius 10: well separated."""
    rng = np.random.default_rng(seed)
    return CENTRES[rng.integers(0, K, n)] + NOISE_SCALE * rng.normal(size=(n, D))


def start_means(x, seed=0):
    """k-means++ seeding on 10^4 points: the same start for every contender."""
    sample = x[np.random.default_rng(seed).permutation(len(x))[:10_000]]
    return kmeans_plusplus(sample, K, random_state=seed)[0]


# ---------------------------------------------------------------------------------------
# The score: the full-data ELBO of q(mu) with optimal responsibilities, in NumPy
# ---------------------------------------------------------------------------------------


def full_elbo(x, loc, var, chunk=1_000_000):
    """max over phi of the ELBO at q(mu_k) = N(loc_k, var_k I), summed in chunks of rows."""
    prior_var, noise_var = PRIOR_SCALE**2, NOISE_SCALE**2
    n, dim = x.shape
    log_2pi = np.log(2 * np.pi)
    expected_sq = dim * var + np.sum(loc**2, axis=1)  # E||mu_k||^2
    global_terms = np.sum(
        -0.5 * dim * (log_2pi + np.log(prior_var)) - expected_sq / (2 * prior_var)
    ) + np.sum(0.5 * dim * (log_2pi + 1 + np.log(var)))
    local = 0.0
    for start in range(0, n, chunk):
        rows = x[start : start + chunk]
        # E[log N(x_i; mu_k, sigma^2 I)] + log(1/K); the optimal phi makes the local terms
        # the log-sum-exp of these over k.
        expected_loglik = (
            -0.5 * dim * (log_2pi + np.log(noise_var))
            - (np.sum(rows**2, 1)[:, None] - 2 * rows @ loc.T + expected_sq) / (2 * noise_var)
            - np.log(K)
        )
        local += logsumexp(expected_loglik, axis=1).sum()
    return global_terms + local


# ---------------------------------------------------------------------------------------
# The contenders
# ---------------------------------------------------------------------------------------


def run_svi(x, init, steps):
    return vicourse.fit_gmm_svi(
        x,
        K,
        PRIOR_SCALE,
        NOISE_SCALE,
        batch_size=BATCH,
        num_steps=steps,
        tau=DELAY,
        kappa=KAPPA,
        init=init,
        seed=0,
    )


def run_cavi(x, init, sweeps):
    return vicourse.fit_gmm(x, K, PRIOR_SCALE, NOISE_SCALE, init=init, num_iters=sweeps, tol=0.0)


def numpy_svi(x, init, steps, seed=0):
    """SVI with the updates of vicourse.fit_gmm_svi, in NumPy; returns (loc, var).

    The same natural-parameter recursion, minibatches of distinct points drawn with
    NumPy's Generator.choice (O(B) for large N), and no per-step ELBO estimate (which
    vicourse computes for its trace): the loop does strictly less work.
    """
    prior_var, noise_var = PRIOR_SCALE**2, NOISE_SCALE**2
    n, dim = x.shape
    rng = np.random.default_rng(seed)
    center = init.mean(axis=0)
    precision = np.full(K, 1.0 / noise_var)
    shift = (init - center) * precision[:, None]  # natural parameters about the centre
    scale = n / BATCH
    for t in range(1, steps + 1):
        batch = x[rng.choice(n, BATCH, replace=False)] - center
        var = 1.0 / precision
        loc = shift * var[:, None]
        logits = (batch @ loc.T - 0.5 * (dim * var + np.sum(loc**2, axis=1))) / noise_var
        logits -= logits.max(axis=1, keepdims=True)
        phi = np.exp(logits)
        phi /= phi.sum(axis=1, keepdims=True)
        rho = (t + DELAY) ** -KAPPA
        target_precision = 1.0 / prior_var + scale * phi.sum(axis=0) / noise_var
        target_shift = scale * (phi.T @ batch) / noise_var - center / prior_var
        precision = (1 - rho) * precision + rho * target_precision
        shift = (1 - rho) * shift + rho * target_shift
    return center + shift / precision[:, None], 1.0 / precision


class SameStartBayesianGaussianMixture(BayesianGaussianMixture):
    """scikit-learn's variational mixture, started from given means: each point is first
    assigned to its nearest mean (as its k-means initialization does with k-means' means).
    It overrides the documented-in-source initialization hook, not a public API."""

    def __init__(self, start, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def _initialize_parameters(self, X, random_state, xp=None):
        # ||x - m||^2 up to the ||x||^2 term shared by every m: an [N, K] array only.
        nearest = np.argmin(np.sum(self.start**2, axis=1) - 2 * X @ self.start.T, axis=1)
        resp = np.zeros((len(X), self.n_components), dtype=X.dtype)
        resp[np.arange(len(X)), nearest] = 1.0
        self._initialize(X, resp)


def make_sklearn(init, **kwargs):
    return SameStartBayesianGaussianMixture(
        init,
        n_components=K,
        covariance_type="spherical",
        weight_concentration_prior_type="dirichlet_distribution",
        mean_prior=np.zeros(D),
        mean_precision_prior=NOISE_SCALE**2 / PRIOR_SCALE**2,
        tol=0.0,
        n_init=1,
        random_state=0,
        **kwargs,
    )


def run_sklearn(x, init, iters):
    model = make_sklearn(init, max_iter=iters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    return model


def sklearn_state(model):
    """sklearn's q(mu_k): mean means_[k], covariance 1 / (mean_precision_[k] precisions_[k])."""
    return model.means_, 1.0 / (model.mean_precision_ * model.precisions_)


# ---------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------


def median_time(run, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def per_unit(run, short, long, repeats):
    """(time per step or sweep, fixed cost of a call): from runs of two lengths."""
    run(short)  # warm-up: compiles for this shape
    t_short = median_time(lambda: run(short), repeats)
    t_long = median_time(lambda: run(long), repeats)
    unit = (t_long - t_short) / (long - short)
    return unit, t_short - short * unit


def first_in_band(score, target, limit):
    """The smallest count n with score(n) >= target, found by doubling and then bisection
    (exact when the score rises with n; SVI's is noisy but close to monotone); None if
    not reached by ``limit``. Each score is computed once."""
    cache = {}

    def inside(n):
        if n not in cache:
            cache[n] = score(n) >= target
        return cache[n]

    if inside(1):
        return 1
    low, high = 1, 2
    while not inside(high):
        low, high = high, 2 * high
        if high > limit:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if inside(middle) else (middle, high)
    return high


def cavi_sweeps_to_band(x, init, converged, target):
    """CAVI's first sweep j whose global factors score in the band.

    CAVI's own trace brackets the score: trace_j <= L(q_j) <= trace_(j+1), where q_j is
    q(mu) after sweep j (each half-update can only raise the ELBO). So if sweep j is the
    first whose trace is in the band, the answer is j - 1 or j: one run decides.
    """
    trace = converged.elbo_trace.numpy()
    j = int(np.argmax(trace >= target)) + 1
    if j > 1:
        earlier = run_cavi(x, init, j - 1)
        if full_elbo(x, earlier.means_loc.numpy(), earlier.means_var.numpy()) >= target:
            return j - 1
    return j


def sklearn_iterations_to_band(x, init, target, limit):
    """Walk scikit-learn one iteration at a time (warm starts), scoring each state."""
    model = make_sklearn(init, max_iter=1, warm_start=True)
    for iteration in range(1, limit + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x)
        if full_elbo(x, *sklearn_state(model)) >= target:
            return iteration
    return None


# ---------------------------------------------------------------------------------------
# Memory: the dataset path in a fresh process, streaming N points from a generator
# ---------------------------------------------------------------------------------------


def memory_probe(n, mode):
    """Print the peak RSS (MiB) of one fit over N points, in this (fresh) process."""
    init = start_means(make_data(20_000, seed=1))
    if mode == "stream":

        def minibatches():
            rng = np.random.default_rng(0)
            for _ in range(n // BATCH):
                labels = rng.integers(0, K, BATCH)
                yield CENTRES[labels] + NOISE_SCALE * rng.normal(size=(BATCH, D))

        spec = tf.TensorSpec([BATCH, D], tf.float64)
        data = tf.data.Dataset.from_generator(minibatches, output_signature=spec)
        vicourse.fit_gmm_svi(
            data,
            K,
            PRIOR_SCALE,
            NOISE_SCALE,
            batch_size=BATCH,
            num_steps=n // BATCH,
            num_data=n,
            init=init,
            seed=0,
        )
    else:
        run_svi(make_data(n), init, n // BATCH)
    # VmHWM is this address space's peak; ru_maxrss would carry over the parent's peak,
    # which Linux keeps across fork and exec.
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(peak_kib / 1024)


def peak_memory(n, mode):
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", str(n), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def describe_machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"machine: {platform.machine()}, {model}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"{platform.platform()}"
    )
    print(
        f"versions: Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, vicourse "
        f"{vicourse.__version__}"
    )


SCENARIOS = {
    "k-means++ start": "k-means++ seeding on 10^4 points; both methods reach the same optimum",
    "default start": "vicourse's default: K distinct random data points (gmm_init, seed 0)",
}
CONTENDERS = ["fit_gmm_svi", "fit_gmm (CAVI)", "NumPy SVI", "scikit-learn"]
NOT_RUN = "not run"


def initial_means(x, scenario):
    if scenario == "k-means++ start":
        return start_means(x)
    return vicourse.gmm_init(x, K, seed=0).means_loc.numpy()


def counts_to_band(x, init, with_sklearn):
    """Steps or sweeps each contender needs to enter the band, from ``init``."""
    converged = vicourse.fit_gmm(x, K, PRIOR_SCALE, NOISE_SCALE, init=init, num_iters=1000)
    optimum = full_elbo(x, converged.means_loc.numpy(), converged.means_var.numpy())
    target = optimum - BAND * abs(optimum)
    probe = run_svi(x, init, 3)
    check = full_elbo(x, probe.means_loc.numpy(), probe.means_var.numpy())
    assert np.isclose(float(probe.elbo), check, rtol=1e-9), "scores must agree with vicourse"
    counts = {
        # fit_gmm_svi's `elbo` is exactly the score: its final pass computes it.
        "fit_gmm_svi": first_in_band(lambda n: float(run_svi(x, init, n).elbo), target, 2**14),
        "fit_gmm (CAVI)": cavi_sweeps_to_band(x, init, converged, target),
        "NumPy SVI": first_in_band(lambda n: full_elbo(x, *numpy_svi(x, init, n)), target, 2**14),
        "scikit-learn": (
            sklearn_iterations_to_band(x, init, target, 100) if with_sklearn else NOT_RUN
        ),
    }
    return dict(counts=counts, optimum=optimum, converged_sweeps=int(converged.num_iters))


def timings(x, init, repeats, sklearn_repeats, with_sklearn):
    """Time per step or sweep of each contender (fixed costs cancelled), and the time of
    fit_gmm_svi's final pass. The contenders alternate within each repeat, so that a
    change in the machine's load affects them alike; the medians are reported."""
    svi_steps, cavi_sweeps, numpy_steps = 10_000, 5, 2000
    run_svi(x, init, 1), run_cavi(x, init, 1)  # compile for this shape
    samples = {name: [] for name in ("svi", "cavi", "numpy")}
    for _ in range(repeats):
        short = median_time(lambda: run_svi(x, init, 1), 1)
        samples["svi"].append(
            (median_time(lambda: run_svi(x, init, 1 + svi_steps), 1) - short) / svi_steps
        )
        short = median_time(lambda: run_cavi(x, init, 1), 1)
        samples["cavi"].append(
            (median_time(lambda: run_cavi(x, init, 1 + cavi_sweeps), 1) - short) / cavi_sweeps
        )
        samples["numpy"].append(
            median_time(lambda: numpy_svi(x, init, numpy_steps), 1) / numpy_steps
        )
    sklearn_unit = None
    if with_sklearn:
        sklearn_unit, _ = per_unit(lambda s: run_sklearn(x, init, s), 1, 3, sklearn_repeats)
    # fit_gmm_svi's final pass over all points (responsibilities and the full ELBO).
    data = tf.constant(x)
    state = vicourse.GMMState(tf.constant(init), tf.ones([K], tf.float64))
    scales = (tf.constant(PRIOR_SCALE**2, tf.float64), tf.constant(NOISE_SCALE**2, tf.float64))
    final = svi._final_pass_xla
    final(data, state, *scales)
    final_pass = median_time(lambda: final(data, state, *scales)[1].numpy(), repeats)
    units = [float(np.median(samples[name])) for name in ("svi", "cavi", "numpy")]
    units = dict(zip(CONTENDERS, (*units, sklearn_unit), strict=True))
    return dict(units=units, final_pass=final_pass)


def end_to_end(x, init, counts, repeats):
    """Median wall time of one public call that stops at the band (alternating)."""
    svi_times, cavi_times = [], []
    for _ in range(repeats):
        svi_times.append(median_time(lambda: run_svi(x, init, counts["fit_gmm_svi"]), 1))
        cavi_times.append(median_time(lambda: run_cavi(x, init, counts["fit_gmm (CAVI)"]), 1))
    return float(np.median(svi_times)), float(np.median(cavi_times))


def benchmark_size(n, repeats, sklearn_repeats, sklearn_max_n):
    x = make_data(n)
    with_sklearn = n <= sklearn_max_n
    # scikit-learn takes seconds per iteration at N = 1e7: time it once there.
    sklearn_repeats = sklearn_repeats if n < 10**7 else 1
    result = dict(n=n, **timings(x, start_means(x), repeats, sklearn_repeats, with_sklearn))
    # From the default start scikit-learn may never enter the band (it settles in another
    # optimum); walking it up to the iteration limit costs minutes at N = 1e7, so that
    # scenario runs it up to N = 1e6 only.
    result["scenarios"] = {
        name: counts_to_band(
            x,
            initial_means(x, name),
            with_sklearn and (name == "k-means++ start" or n <= 10**6),
        )
        for name in SCENARIOS
    }
    for name, scenario in result["scenarios"].items():
        scenario["svi_call"], scenario["cavi_call"] = end_to_end(
            x, initial_means(x, name), scenario["counts"], repeats
        )
    print(f"(N = {n:,} measured)", flush=True)
    return result


def _ratio(value):
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def print_scenario(results, name):
    print(f"\n### {name}: {SCENARIOS[name]}\n")
    print(
        "| N | contender | steps/sweeps to band | time per step/sweep (ms) "
        "| time to band (ms) | CAVI time / this |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        counts, units = r["scenarios"][name]["counts"], r["units"]
        cavi_time = counts["fit_gmm (CAVI)"] * units["fit_gmm (CAVI)"]
        for contender in CONTENDERS:
            count, unit = counts[contender], units[contender]
            if unit is None or count == NOT_RUN:
                print(f"| {r['n']:,} | {contender} | not run | - | - | - |")
            elif count is None:
                print(f"| {r['n']:,} | {contender} | not reached | {1e3 * unit:.3f} | - | - |")
            else:
                total = count * unit
                print(
                    f"| {r['n']:,} | {contender} | {count} | {1e3 * unit:.3f} "
                    f"| {1e3 * total:.2f} | {_ratio(cavi_time / total)} |"
                )
    print(
        "\nEnd to end: the measured wall time of one public call that stops at the band, "
        "fixed costs included (input checks, the copy into TensorFlow, and fit_gmm_svi's "
        "final pass over all points):\n"
    )
    print("| N | CAVI sweeps to converge | fit_gmm call (ms) | fit_gmm_svi call (ms) | ratio |")
    print("|---|---|---|---|---|")
    for r in results:
        scenario = r["scenarios"][name]
        cavi, svi_call = scenario["cavi_call"], scenario["svi_call"]
        print(
            f"| {r['n']:,} | {scenario['converged_sweeps']} | {1e3 * cavi:.1f} "
            f"| {1e3 * svi_call:.1f} | {cavi / svi_call:.1f} |"
        )


def main(sizes, repeats, sklearn_repeats, sklearn_max_n, memory_sizes):
    describe_machine()
    print(
        f"K = {K}, D = {D}, tau = {PRIOR_SCALE}, sigma = {NOISE_SCALE}; SVI: B = {BATCH}, "
        f"kappa = {KAPPA}, tau_0 = {DELAY}; band: within {BAND:.1%} of CAVI's optimum; "
        f"medians of {repeats} runs ({sklearn_repeats} for scikit-learn)\n",
        flush=True,
    )
    results = [benchmark_size(n, repeats, sklearn_repeats, sklearn_max_n) for n in sizes]
    print("\n## Time to the 0.1% band: steps or sweeps to the band x time per step or sweep")
    for name in SCENARIOS:
        print_scenario(results, name)

    print("\n## SVI time per step against N, and fit_gmm_svi's final pass\n")
    print(
        "| N | fit_gmm_svi (us/step) | NumPy SVI (us/step) | vicourse/NumPy "
        "| CAVI sweep (ms) | final pass of fit_gmm_svi (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        svi_step, numpy_step = r["units"]["fit_gmm_svi"], r["units"]["NumPy SVI"]
        print(
            f"| {r['n']:,} | {1e6 * svi_step:.1f} | {1e6 * numpy_step:.1f} "
            f"| {svi_step / numpy_step:.2f} | {1e3 * r['units']['fit_gmm (CAVI)']:.1f} "
            f"| {1e3 * r['final_pass']:.1f} |"
        )

    if memory_sizes:
        print("\n## Peak resident memory of a fresh process (MiB), one pass over N points\n")
        print("| N | fit_gmm_svi, tf.data stream | fit_gmm_svi, array in memory |")
        print("|---|---|---|")
        for n in memory_sizes:
            stream, array = peak_memory(n, "stream"), peak_memory(n, "array")
            print(f"| {n:,} | {stream:.0f} | {array:.0f} |", flush=True)
        step_bytes = 8 * (BATCH * (D + K) + K * D)
        print(
            f"\nThe compiled step's arrays: minibatch [B, D], responsibilities [B, K], global "
            f"parameters [K, D]: {step_bytes / 1024:.0f} KiB for B = {BATCH}."
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-probe":
        memory_probe(int(sys.argv[2]), sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sklearn-repeats", type=int, default=3)
    parser.add_argument("--sklearn-max-n", type=int, default=10**7)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[10**5, 10**6, 10**7])
    args = parser.parse_args()
    main(args.sizes, args.repeats, args.sklearn_repeats, args.sklearn_max_n, args.memory_sizes)
