"""The input contract, tested in one place (in the style of scikit-learn's common checks).

Every public function of ``vicourse`` is listed in ``CONTRACT`` with a factory of valid
arguments and, for each argument, its *kind*. Each kind brings a battery of bad values
(NaN, infinities, empty arrays, wrong ranks and shapes, strings, None, complex and boolean
dtypes, zero/negative/non-integer/bool/int32-overflowing counts, bad seeds, user callables
that return the wrong shape or dtype, invalid or mismatched distributions, ...). Every bad
value must raise ``ValueError`` or ``TypeError`` (the one the case names) with a message
that names the argument in backticks. Listing a function here is all it takes to cover it;
``test_every_public_function_is_in_the_contract`` fails when one is missing.

The positive side of the contract is checked here too: the valid call works, integer data
are accepted and give the float32 result, and every documented seed (an int, a shape-[2]
tensor) works and gives the same result twice.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import vicourse

tfd = tfp.distributions
F64 = np.float64


class Case(NamedTuple):
    label: str
    make: Callable[[dict], object]  # valid keyword arguments -> the bad value
    error: type


def _const(value):
    return lambda valid: value


def _with_value(name, value):
    """A copy of the valid array ``name`` with its first entry replaced by ``value``."""

    def make(valid):
        array = np.array(valid[name], dtype=F64, copy=True)
        array.flat[0] = value
        return array

    return make


# ---------------------------------------------------------------------------------------
# Argument kinds: each returns the battery of bad values for one argument
# ---------------------------------------------------------------------------------------

NON_NUMERIC = [
    Case("string", _const("abc"), TypeError),
    Case("none", _const(None), TypeError),
]


def data(name, *, wrong_rank, empty):
    """Observed data: finite real numbers of a documented rank, not empty."""
    return [
        Case("nan", _with_value(name, np.nan), ValueError),
        Case("+inf", _with_value(name, np.inf), ValueError),
        Case("-inf", _with_value(name, -np.inf), ValueError),
        Case("empty", _const(empty), ValueError),
        Case("wrong rank", _const(wrong_rank), ValueError),
        Case("complex", lambda v: np.asarray(v[name]).astype(complex), TypeError),
        Case("bool", lambda v: np.asarray(v[name]) > 0, TypeError),
        *NON_NUMERIC,
    ]


def scale(wrong_shape):
    """A standard deviation: a positive finite number of a documented shape."""
    return [
        Case("nan", _const(np.nan), ValueError),
        Case("inf", _const(np.inf), ValueError),
        Case("zero", _const(0.0), ValueError),
        Case("negative", _const(-1.0), ValueError),
        Case("wrong shape", _const(wrong_shape), ValueError),
        Case("complex", _const(1.0 + 1.0j), TypeError),
        Case("bool", _const(True), TypeError),
        *NON_NUMERIC,
    ]


def location(shape, wrong_shape, *, optional=False):
    """A location (a mean, an initial value, a log-evidence): finite, of a documented shape."""
    cases = [
        Case("nan", _const(np.full(shape, np.nan)), ValueError),
        Case("inf", _const(np.full(shape, np.inf)), ValueError),
        Case("wrong shape", _const(wrong_shape), ValueError),
        Case("complex", _const(1.0 + 1.0j), TypeError),
        Case("string", _const("abc"), TypeError),
    ]
    return cases if optional else [*cases, Case("none", _const(None), TypeError)]


def count(*, minimum=1, optional=False, maximum=None):
    """A count: an int (not a bool or a float) in range, small enough for int32."""
    too_big = 2**31 if maximum is None else maximum + 1
    cases = [
        Case("zero", _const(minimum - 1), ValueError),
        Case("negative", _const(-5), ValueError),
        Case("float", _const(2.5), TypeError),
        Case("integral float", _const(10.0), TypeError),
        Case("bool", _const(True), TypeError),
        Case("string", _const("10"), TypeError),
        Case("wraps int32", _const(too_big), ValueError),
        Case("10**10", _const(10**10 if maximum is None else 2**64), ValueError),
    ]
    return cases if optional else [*cases, Case("none", _const(None), TypeError)]


def real(*, allow_zero, optional=False):
    """A tolerance or a learning rate: a finite real number, non-negative or positive."""
    cases = [
        Case("negative", _const(-0.1), ValueError),
        Case("nan", _const(np.nan), ValueError),
        Case("inf", _const(np.inf), ValueError),
        Case("string", _const("0.1"), TypeError),
        Case("bool", _const(True), TypeError),
        Case("vector", _const(np.array([0.1, 0.2])), TypeError),
    ]
    if not allow_zero:
        cases.append(Case("zero", _const(0.0), ValueError))
    return cases if optional else [*cases, Case("none", _const(None), TypeError)]


SEED = [
    Case("float", _const(1.5), TypeError),
    Case("string", _const("seed"), TypeError),
    Case("bool", _const(True), TypeError),
    Case("shape [3]", _const(tf.constant([1, 2, 3])), ValueError),
    Case("float tensor", _const(tf.constant([1.0, 2.0])), TypeError),
]

FLAG = [
    Case("string", _const("yes"), TypeError),
    Case("int", _const(1), TypeError),
    Case("none", _const(None), TypeError),
]


def choice():
    return [
        Case("unknown", _const("unknown"), ValueError),
        Case("none", _const(None), ValueError),
        Case("int", _const(3), ValueError),
    ]


def log_density(name):
    """A user's log-density: callable, returning exactly [S, *batch] in q's dtype."""

    def wrap(transform):
        def make(valid):
            original = valid[name]
            return lambda z, *batch: transform(original(z, *batch))

        return make

    return [
        Case("not callable", _const(3.0), TypeError),
        Case("none", _const(None), TypeError),
        Case("returns [S, 1]", wrap(lambda out: out[:, tf.newaxis]), ValueError),
        Case("returns [S - 1]", wrap(lambda out: out[:-1]), ValueError),
        Case("returns a scalar", wrap(tf.reduce_sum), ValueError),
        Case("returns float32", wrap(lambda out: tf.cast(out, tf.float32)), TypeError),
        Case("returns a string", wrap(lambda out: "abc"), TypeError),
        Case("raises inside", _const(lambda z: z + tf.constant(1.0, tf.float32)), TypeError),
    ]


NOT_A_DISTRIBUTION = [
    Case("string", _const("normal"), TypeError),
    Case("float", _const(1.0), TypeError),
    Case("none", _const(None), TypeError),
]


def distribution(*, event=True, batch=True, dtype=True):
    """A TFP distribution over the same space as its partner (float64, event [], batch [])."""
    cases = [
        *NOT_A_DISTRIBUTION,
        Case("negative scale", lambda v: tfd.Normal(F64(0.0), F64(-1.0)), ValueError),
        Case("nan loc", lambda v: tfd.Normal(F64(np.nan), F64(1.0)), ValueError),
    ]
    if event:
        cases.append(
            Case("event shape [2]", lambda v: tfd.MultivariateNormalDiag(np.zeros(2)), ValueError)
        )
    if batch:
        cases.append(Case("batch shape [3]", lambda v: tfd.Normal(np.zeros(3), 1.0), ValueError))
    if dtype:
        cases.append(Case("float32", lambda v: tfd.Normal(0.0, 1.0), TypeError))
    return cases


def encoder_callable(data_arg):
    """A user's encoder: callable, x [B, D] -> a distribution with batch [B], event [L] (the
    prior's) and the prior's dtype."""

    def wrong_batch(valid):
        original = valid["encoder"]
        return lambda x: original(x[:1])

    def rows(valid):
        return len(np.asarray(valid[data_arg]))

    return [
        Case("not callable", _const(3.0), TypeError),
        Case("none", _const(None), TypeError),
        Case("returns a tensor", _const(lambda x: x), TypeError),
        Case("wrong batch shape", wrong_batch, ValueError),
        Case(
            "wrong event shape",
            lambda v: lambda x: tfd.MultivariateNormalDiag(tf.zeros([rows(v), 3])),
            ValueError,
        ),
        Case(
            "no event (batch [B, L])",
            lambda v: lambda x: tfd.Normal(tf.zeros([rows(v), 2]), 1.0),
            ValueError,
        ),
        Case(
            "float64",
            lambda v: lambda x: tfd.MultivariateNormalDiag(np.zeros([rows(v), 2])),
            TypeError,
        ),
        Case("raises inside", _const(lambda x: tf.matmul(x, tf.ones([5, 5]))), TypeError),
    ]


def decoder_callable(data_arg):
    """A user's decoder: z [..., B, L] -> a distribution with batch [..., B] and event [D]
    whose support holds the data."""

    def likelihood(make):
        def build(valid):
            dim = np.asarray(valid[data_arg]).shape[1]
            return lambda z: make(tf.zeros([*z.shape[:-1], dim]) + tf.reduce_sum(z) * 0.0)

        return build

    return [
        Case("not callable", _const("decoder"), TypeError),
        Case("none", _const(None), TypeError),
        Case("returns a tensor", _const(lambda z: z), TypeError),
        Case(
            "no Independent (batch [..., B, D])",
            likelihood(lambda logits: tfd.Binomial(16.0, logits=logits)),
            ValueError,
        ),
        Case(
            "wrong event size",
            likelihood(
                lambda logits: tfd.Independent(
                    tfd.Binomial(16.0, logits=tf.concat([logits, logits], -1)), 1
                )
            ),
            ValueError,
        ),
        Case(
            "support mismatch (counts to a Bernoulli)",
            likelihood(
                lambda logits: tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 1)
            ),
            ValueError,
        ),
        Case(
            "float64",
            likelihood(
                lambda logits: tfd.Independent(
                    tfd.Binomial(F64(16.0), logits=tf.cast(logits, tf.float64)), 1
                )
            ),
            TypeError,
        ),
    ]


LATENT_PRIOR = [
    *NOT_A_DISTRIBUTION,
    Case("nan loc", lambda v: tfd.MultivariateNormalDiag([np.nan, 0.0]), ValueError),
    Case("zero scale", lambda v: tfd.MultivariateNormalDiag([0.0, 0.0], [0.0, 1.0]), ValueError),
    Case("scalar event", lambda v: tfd.Normal(0.0, 1.0), ValueError),
    Case("batch shape [3]", lambda v: tfd.MultivariateNormalDiag(tf.zeros([3, 2])), ValueError),
]

HIDDEN_UNITS = [
    Case("string", _const("256"), TypeError),
    Case("none", _const(None), TypeError),
    Case("zero width", _const((0,)), ValueError),
    Case("float width", _const((2.5,)), TypeError),
]


# ---------------------------------------------------------------------------------------
# The public functions and their valid arguments
# ---------------------------------------------------------------------------------------


@dataclass
class Spec:
    fn: Callable
    valid: Callable[[], dict]
    args: dict[str, list[Case]] = field(default_factory=dict)
    seed: str | None = None  # the name of the seed argument, if the function is stochastic
    integer_data: str | None = None  # an argument that accepts integers (read as float32)


X_1D = np.array([0.4, -1.2, 2.3, 0.8, 1.9, -0.3])
X_2D = np.array([[0.0, 1.0], [5.0, 4.0], [0.5, 1.5], [4.5, 5.0], [1.0, 0.0], [5.5, 4.5]])
NORMAL_LIKELIHOOD = tfd.Normal(F64(0.0), F64(2.0))


def _log_likelihood(z):
    return tf.reduce_sum(tfd.Normal(z[:, tf.newaxis], F64(1.0)).log_prob(X_1D), axis=-1)


def _log_joint(z):
    return _log_likelihood(z) + NORMAL_LIKELIHOOD.log_prob(z)


def _log_joint_batch(z, batch):
    like = tfd.Normal(z[:, tf.newaxis], F64(1.0)).log_prob(batch)
    return tf.reduce_sum(like, axis=-1) + NORMAL_LIKELIHOOD.log_prob(z)


def _bimodal():
    return tfd.MixtureSameFamily(
        tfd.Categorical(probs=np.array([0.5, 0.5])),
        tfd.Normal(np.array([-2.0, 2.0]), np.array([0.6, 0.6])),
    )


def _trainable_normal():
    return tfd.Normal(
        tf.Variable(F64(0.5)), tfp.util.TransformedVariable(F64(1.0), tfp.bijectors.Softplus())
    )


REFERENCE_MODEL = tfd.JointDistributionNamed(
    dict(
        z=tfd.Normal(F64(0.0), F64(2.0)),
        x=lambda z: tfd.Independent(tfd.Normal(z[..., None] * np.ones(6), 1.0), 1),
    )
)


# A tiny image model for chapter 8: six 4-pixel "images" of counts 0..16, L = 2.
X_IMAGES = np.array(
    [[0, 3, 16, 5], [2, 0, 7, 16], [16, 4, 1, 0], [5, 5, 5, 5], [0, 0, 1, 2], [9, 12, 3, 8]],
    dtype=F64,
)
IMAGE_PRIOR = tfd.MultivariateNormalDiag(tf.zeros(2))
IMAGE_WEIGHTS = tf.constant([[0.1, -0.2, 0.3, 0.0], [0.05, 0.1, -0.1, 0.2]])


def _image_encoder(x):
    return tfd.MultivariateNormalDiag(x[:, :2] * 0.05, tf.ones_like(x[:, :2]))


def _image_decoder(z):
    logits = tf.einsum("...l,ld->...d", z, IMAGE_WEIGHTS)
    return tfd.Independent(tfd.Binomial(16.0, logits=logits), 1)


def _image_networks(seed=0):
    encoder = vicourse.make_encoder(4, 2, hidden_units=(3,), seed=seed)
    decoder = vicourse.make_decoder(2, 4, hidden_units=(3,), seed=seed + 1)
    return encoder, decoder


def _fit_vae_arguments():
    encoder, decoder = _image_networks()
    return dict(
        train=X_IMAGES,
        encoder=encoder,
        decoder=decoder,
        prior=IMAGE_PRIOR,
        epochs=1,
        batch_size=3,
        learning_rate=0.01,
        decay=False,
        seed=0,
        validation=None,  # the bad cases still set it; test_vae checks a valid one
        num_samples=1,
        kl_weight=1.0,
        kl_warmup_epochs=0,
        progress=False,
        strategy=None,
        jit_compile=False,  # a graph: the battery makes about 50 calls with new networks
    )


IMAGES = data("x", wrong_rank=np.zeros(4), empty=np.zeros((0, 4)))


PINNED_MODEL = REFERENCE_MODEL.experimental_pin(x=X_1D)  # one object: one compiled loop


def _blanket(z):
    """The Markov blanket of the single factor of a one-variable q: all of log p, [S, 1]."""
    return _log_joint(z)[:, tf.newaxis]


def _dependent_joint():
    """A joint q whose second part depends on the first: not mean-field."""
    return tfd.JointDistributionNamed(
        dict(
            a=tfd.Normal(tf.Variable(F64(0.0)), F64(1.0)),
            b=lambda a: tfd.Normal(a, F64(1.0)),
        )
    )


def _mixture_surrogate():
    return tfd.JointDistributionNamed(
        dict(
            c=tfd.Independent(tfd.Categorical(logits=tf.Variable(np.zeros((6, 2)))), 1),
            mu=tfd.Independent(tfd.Normal(tf.Variable(np.zeros((2, 1))), F64(1.0)), 2),
        )
    )


def _discrete_pinned():
    model = tfd.JointDistributionNamed(
        dict(
            c=tfd.Bernoulli(probs=F64(0.5)),
            x=lambda c: tfd.Normal(tf.cast(c, tf.float64), F64(1.0)),
        )
    )
    return model.experimental_pin(x=F64(0.3))


def _gmm_state():
    return vicourse.GMMState(tf.constant([[0.0, 1.0], [5.0, 4.0]]), tf.ones(2))


def _gmm_phi():
    return np.tile([[0.5, 0.5]], (6, 1))


def _minibatches(x, size=3, drop=True):
    return tf.data.Dataset.from_tensor_slices(x).batch(size, drop_remainder=drop).repeat()


def _pair(batch):
    return batch, batch


def _inf_in_second_batch():
    x = X_2D.copy()
    x[4, 0] = np.inf
    return x


ROBBINS_MONRO_KAPPA = [
    Case("0.5", _const(0.5), ValueError),
    Case("above 1", _const(1.01), ValueError),
]

POINTS = data("x", wrong_rank=np.zeros((2, 2, 2)), empty=np.zeros((0, 2)))
EVENT_SHAPE = [
    Case("rank 2", _const([2, 2]), ValueError),
    Case("empty", _const([]), ValueError),
    Case("zero", _const([0]), ValueError),
    Case("float", _const([2.5]), TypeError),
    Case("string", _const("2"), TypeError),
    Case("none", _const(None), TypeError),
]
SUPPORT_BIJECTOR = [
    Case("string", _const("exp"), TypeError),
    Case("another size", lambda v: tfp.bijectors.Reshape([3]), ValueError),
    Case("to a matrix", lambda v: tfp.bijectors.Reshape([1, 2]), ValueError),
]
MIXTURE_SCALE = scale(wrong_shape=[1.0, 2.0])
NORMAL_GAMMA_PRIOR = [
    Case("tuple", _const((0.0, 1.0, 1.0, 1.0)), TypeError),
    Case("none", _const(None), TypeError),
    Case("nan loc", _const(vicourse.NormalGammaPrior(loc=np.nan)), ValueError),
    Case("zero rate", _const(vicourse.NormalGammaPrior(rate=0.0)), ValueError),
    Case("negative count", _const(vicourse.NormalGammaPrior(precision_scale=-1.0)), ValueError),
    Case("vector field", _const(vicourse.NormalGammaPrior(concentration=[1.0, 2.0])), ValueError),
    Case("string field", _const(vicourse.NormalGammaPrior(loc="abc")), TypeError),
]
GMM_STATE = [
    Case("tuple", _const((np.zeros((2, 2)), np.ones(2))), TypeError),
    Case("wrong D", _const(vicourse.GMMState(np.zeros((2, 3)), np.ones(2))), ValueError),
    Case("wrong K", _const(vicourse.GMMState(np.zeros((2, 2)), np.ones(3))), ValueError),
    Case("negative var", _const(vicourse.GMMState(np.zeros((2, 2)), -np.ones(2))), ValueError),
    Case("nan loc", _const(vicourse.GMMState(np.full((2, 2), np.nan), np.ones(2))), ValueError),
]

CONTRACT: dict[str, Spec] = {
    "normal_normal_log_evidence": Spec(
        vicourse.normal_normal_log_evidence,
        lambda: dict(x=X_1D, prior_loc=0.0, prior_scale=2.0, noise_scale=1.0),
        {
            "x": data("x", wrong_rank=np.float64(1.0), empty=np.zeros(0)),
            "prior_loc": location((), wrong_shape=np.zeros((6,))),
            "prior_scale": scale(wrong_shape=np.ones(6)),
            "noise_scale": scale(wrong_shape=np.ones(6)),
        },
        integer_data="x",
    ),
    "normal_normal_posterior": Spec(
        vicourse.normal_normal_posterior,
        lambda: dict(x=X_1D, prior_loc=0.0, prior_scale=2.0, noise_scale=1.0),
        {
            "x": data("x", wrong_rank=np.float64(1.0), empty=np.zeros((3, 0))),
            "prior_loc": location((), wrong_shape=np.zeros((2,))),
            "prior_scale": scale(wrong_shape=np.ones(6)),
            "noise_scale": scale(wrong_shape=np.ones((1, 1))),
        },
        integer_data="x",
    ),
    "gmm_log_evidence_exact": Spec(
        vicourse.gmm_log_evidence_exact,
        lambda: dict(x=X_2D, num_components=2, prior_scale=3.0, noise_scale=1.0, max_work=10**6),
        {
            "x": POINTS,
            "num_components": count(),
            "prior_scale": MIXTURE_SCALE,
            "noise_scale": MIXTURE_SCALE,
            "max_work": count(maximum=2**62),
        },
        integer_data="x",
    ),
    "importance_log_evidence": Spec(
        vicourse.importance_log_evidence,
        lambda: dict(
            log_joint=_log_joint, proposal=tfd.Normal(F64(0.5), F64(2.0)), num_samples=50, seed=0
        ),
        {
            "log_joint": log_density("log_joint"),
            "proposal": distribution(event=False, batch=False, dtype=False),
            "num_samples": count(minimum=2),
            "seed": SEED,
        },
        seed="seed",
    ),
    "kl_divergence": Spec(
        vicourse.kl_divergence,
        lambda: dict(
            q=tfd.Normal(F64(0.0), F64(1.0)),
            p=_bimodal(),
            method="auto",
            num_samples=100,
            seed=0,
        ),
        {
            "q": distribution(),
            "p": distribution(),
            "method": choice(),
            "num_samples": count(minimum=2, optional=True),
            "seed": SEED,
        },
        seed="seed",
    ),
    "standardizing_bijector": Spec(
        vicourse.standardizing_bijector,
        lambda: dict(target=tfd.StudentT(F64(1.0), F64(3.0), F64(2.0)), num_samples=100, seed=0),
        {
            "target": [
                *NOT_A_DISTRIBUTION,
                Case("negative scale", lambda v: tfd.Normal(F64(0.0), F64(-1.0)), ValueError),
                Case("batch shape [3]", lambda v: tfd.Normal(np.zeros(3), 1.0), ValueError),
                Case(
                    "event shape [2, 2]",
                    lambda v: tfd.Independent(tfd.Normal(np.zeros((2, 2)), 1.0), 2),
                    ValueError,
                ),
                Case("discrete", lambda v: tfd.Categorical(probs=[0.5, 0.5]), TypeError),
            ],
            "num_samples": count(minimum=2),
            "seed": SEED,
        },
        seed="seed",
    ),
    "fit_gaussian": Spec(
        vicourse.fit_gaussian,
        lambda: dict(
            target=_bimodal(),
            divergence="reverse",
            init_loc=1.0,
            init_scale=0.25,
            num_steps=3,
            learning_rate=0.05,
            num_samples=4,
            num_moment_samples=100,
            seed=0,
        ),
        {
            "target": [
                *NOT_A_DISTRIBUTION,
                Case("negative scale", lambda v: tfd.Normal(F64(0.0), F64(-1.0)), ValueError),
                Case("batch shape [3]", lambda v: tfd.Normal(np.zeros(3), 1.0), ValueError),
                Case(
                    "event shape [2, 2]",
                    lambda v: tfd.Independent(tfd.Normal(np.zeros((2, 2)), 1.0), 2),
                    ValueError,
                ),
                Case("discrete", lambda v: tfd.Categorical(probs=[0.5, 0.5]), TypeError),
            ],
            "divergence": choice(),
            "init_loc": location((), wrong_shape=[1.0, 2.0], optional=True),
            "init_scale": real(allow_zero=False),
            "num_steps": count(),
            "learning_rate": real(allow_zero=False),
            "num_samples": count(),
            "num_moment_samples": count(minimum=2),
            "seed": SEED,
        },
        seed="seed",
    ),
    "fit_reverse_kl": Spec(
        vicourse.fit_reverse_kl,
        lambda: dict(
            target=_bimodal(),
            surrogate=_trainable_normal(),
            num_steps=3,
            learning_rate=0.05,
            num_samples=4,
            seed=0,
            jit_compile=True,
        ),
        {
            "target": distribution(),
            "surrogate": [
                *distribution(),
                Case("no variables", lambda v: tfd.Normal(F64(0.0), F64(1.0)), ValueError),
            ],
            "num_steps": count(),
            "learning_rate": real(allow_zero=False),
            "num_samples": count(),
            "seed": SEED,
            "jit_compile": FLAG,
        },
        seed="seed",
    ),
    "elbo": Spec(
        vicourse.elbo,
        lambda: dict(
            log_joint=_log_joint, q=tfd.Normal(F64(1.0), F64(0.5)), num_samples=50, seed=0
        ),
        {
            "log_joint": log_density("log_joint"),
            "q": distribution(event=False, batch=False, dtype=False),
            "num_samples": count(minimum=2),
            "seed": SEED,
        },
        seed="seed",
    ),
    "elbo_terms": Spec(
        vicourse.elbo_terms,
        lambda: dict(
            log_likelihood=_log_likelihood,
            prior=NORMAL_LIKELIHOOD,
            q=tfd.Normal(F64(1.0), F64(0.5)),
            num_samples=50,
            seed=0,
            log_evidence=-10.0,
        ),
        {
            "log_likelihood": log_density("log_likelihood"),
            "prior": distribution(),
            "q": distribution(),
            "num_samples": count(minimum=2),
            "seed": SEED,
            "log_evidence": location((), wrong_shape=[1.0, 2.0], optional=True),
        },
        seed="seed",
    ),
    "fit_gmm": Spec(
        vicourse.fit_gmm,
        lambda: dict(
            x=X_2D,
            num_components=2,
            prior_scale=3.0,
            noise_scale=1.0,
            num_iters=5,
            tol=1e-6,
            seed=0,
            init=None,
            num_restarts=1,
            jit_compile=True,
        ),
        {
            "x": POINTS,
            "num_components": [*count(), Case("more than N", _const(7), ValueError)],
            "prior_scale": MIXTURE_SCALE,
            "noise_scale": MIXTURE_SCALE,
            "num_iters": count(),
            "tol": real(allow_zero=True, optional=True),
            "seed": SEED,
            "init": location((2, 2), wrong_shape=np.zeros((3, 2)), optional=True),
            "num_restarts": count(),
            "jit_compile": FLAG,
        },
        seed="seed",
        integer_data="x",
    ),
    "gmm_init": Spec(
        vicourse.gmm_init,
        lambda: dict(x=X_2D, num_components=2, seed=0, init=None),
        {
            "x": POINTS,
            "num_components": [*count(), Case("more than N", _const(7), ValueError)],
            "seed": SEED,
            "init": location((2, 2), wrong_shape=np.zeros((2, 3)), optional=True),
        },
        seed="seed",
        integer_data="x",
    ),
    "gmm_step": Spec(
        vicourse.gmm_step,
        lambda: dict(state=_gmm_state(), x=X_2D, prior_scale=3.0, noise_scale=1.0),
        {
            "state": GMM_STATE,
            "x": POINTS,
            "prior_scale": MIXTURE_SCALE,
            "noise_scale": MIXTURE_SCALE,
        },
        integer_data="x",
    ),
    "gmm_elbo": Spec(
        vicourse.gmm_elbo,
        lambda: dict(x=X_2D, state=_gmm_state(), responsibilities=_gmm_phi(), prior_scale=3.0),
        {
            "x": POINTS,
            "state": GMM_STATE,
            "responsibilities": [
                Case("wrong shape", _const(np.full((6, 3), 1 / 3)), ValueError),
                Case("rows off the simplex", _const(np.full((6, 2), 0.4)), ValueError),
                Case("negative", _const(np.tile([[1.5, -0.5]], (6, 1))), ValueError),
                Case("nan", _const(np.full((6, 2), np.nan)), ValueError),
                *NON_NUMERIC,
            ],
            "prior_scale": MIXTURE_SCALE,
            "noise_scale": MIXTURE_SCALE,
        },
        integer_data="x",
    ),
    "fit_normal_gamma": Spec(
        vicourse.fit_normal_gamma,
        lambda: dict(x=X_1D, prior=vicourse.NormalGammaPrior(), num_iters=20, tol=1e-8),
        {
            "x": data("x", wrong_rank=np.zeros((3, 2)), empty=np.zeros(0)),
            "prior": NORMAL_GAMMA_PRIOR,
            "num_iters": count(),
            "tol": real(allow_zero=True, optional=True),
        },
        integer_data="x",
    ),
    "normal_gamma_posterior": Spec(
        vicourse.normal_gamma_posterior,
        lambda: dict(x=X_1D, prior=vicourse.NormalGammaPrior()),
        {
            "x": data("x", wrong_rank=np.zeros((3, 2)), empty=np.zeros(0)),
            "prior": NORMAL_GAMMA_PRIOR,
        },
        integer_data="x",
    ),
    "mean_field_gaussian": Spec(
        vicourse.mean_field_gaussian,
        lambda: dict(loc=np.array([0.0, 1.0]), covariance=np.array([[1.0, 0.5], [0.5, 2.0]])),
        {
            "loc": data("loc", wrong_rank=np.zeros((2, 1)), empty=np.zeros(0)),
            "covariance": [
                Case("nan", _const(np.array([[np.nan, 0.0], [0.0, 1.0]])), ValueError),
                Case("wrong shape", _const(np.eye(3)), ValueError),
                Case("not symmetric", _const(np.array([[1.0, 0.5], [0.4, 1.0]])), ValueError),
                Case("indefinite", _const(np.array([[1.0, 2.0], [2.0, 1.0]])), ValueError),
                Case("complex", _const(np.eye(2).astype(complex)), TypeError),
                *NON_NUMERIC,
            ],
        },
        integer_data="loc",
    ),
    "elbo_gradient": Spec(
        vicourse.elbo_gradient,
        # The score function with both of chapter 7's options: every check applies.
        lambda: dict(
            log_joint=_log_joint,
            surrogate=_trainable_normal(),
            estimator="score_function",
            num_samples=4,
            seed=0,
            jit_compile=False,
            control_variate=True,
            blanket_log_prob=_blanket,
        ),
        {
            "log_joint": log_density("log_joint"),
            "surrogate": [
                *distribution(event=False, dtype=False),
                Case("no variables", lambda v: tfd.Normal(F64(0.0), F64(1.0)), ValueError),
                Case("not mean-field", lambda v: _dependent_joint(), ValueError),
            ],
            "estimator": [
                *choice(),
                Case("reparameterization, with options", _const("path_derivative"), ValueError),
            ],
            "num_samples": [*count(), Case("2, with a control variate", _const(2), ValueError)],
            "seed": SEED,
            "jit_compile": FLAG,
            "control_variate": FLAG,
            "blanket_log_prob": [  # None is valid: no Rao-Blackwellization
                *(c for c in log_density("blanket_log_prob") if c.label != "none"),
                Case("returns [S]", lambda v: _log_joint, ValueError),
            ],
        },
        seed="seed",
    ),
    "fit_vi": Spec(
        vicourse.fit_vi,
        lambda: dict(
            log_joint=_log_joint_batch,
            surrogate=_trainable_normal(),
            num_steps=3,
            estimator="reparameterization",
            num_samples=2,
            learning_rate=0.05,
            seed=0,
            data=X_1D,
            batch_size=3,
            progress=False,
            jit_compile=True,
        ),
        {
            "log_joint": log_density("log_joint"),
            "surrogate": [
                *distribution(event=False, dtype=False),
                Case("no variables", lambda v: tfd.Normal(F64(0.0), F64(1.0)), ValueError),
            ],
            "num_steps": count(),
            "estimator": choice(),
            "num_samples": count(),
            "learning_rate": real(allow_zero=False, optional=True),
            "optimizer": [
                Case("string", _const("adam"), TypeError),
                Case("with learning_rate", lambda v: tf_keras.optimizers.Adam(), ValueError),
            ],
            "seed": SEED,
            "data": [
                Case("nan", _with_value("data", np.nan), ValueError),
                Case("inf", _with_value("data", np.inf), ValueError),
                Case("empty", _const(np.zeros(0)), ValueError),
                Case("scalar", _const(np.float64(1.0)), ValueError),
                Case("complex", lambda v: np.asarray(v["data"]).astype(complex), TypeError),
                Case("string", _const("abc"), TypeError),
                Case("ragged tuple", _const((np.zeros(6), np.zeros(5))), ValueError),
            ],
            "batch_size": [*count(optional=True), Case("above N", _const(7), ValueError)],
            "num_data": [*count(optional=True), Case("not N", _const(7), ValueError)],
            "progress": FLAG,
            "jit_compile": FLAG,
            "control_variate": [
                *FLAG,
                Case("with reparameterization", _const(True), ValueError),
            ],
            "blanket_log_prob": [
                Case("not callable", _const(3.0), TypeError),
                Case("with reparameterization", lambda v: _blanket, ValueError),
            ],
        },
        seed="seed",
    ),
    "mean_field_factors": Spec(
        vicourse.mean_field_factors,
        lambda: dict(surrogate=_mixture_surrogate(), estimator="mixed"),
        {
            "surrogate": [
                *NOT_A_DISTRIBUTION,
                Case("batch shape [3]", lambda v: tfd.Normal(np.zeros(3), 1.0), ValueError),
                Case("not mean-field", lambda v: _dependent_joint(), ValueError),
            ],
            "estimator": [*choice(), Case("reparameterization", _const("reparameterization"),
                                          ValueError)],
        },
    ),
    "fit_pinned": Spec(
        vicourse.fit_pinned,
        lambda: dict(
            pinned=PINNED_MODEL,
            num_steps=3,
            estimator="reparameterization",
            num_samples=2,
            learning_rate=0.05,
            control_variate=False,
            seed=0,
            jit_compile=False,
        ),
        {
            "pinned": [
                *NOT_A_DISTRIBUTION,
                Case("not pinned", _const(REFERENCE_MODEL), TypeError),
                Case("discrete latent", lambda v: _discrete_pinned(), ValueError),
            ],
            "num_steps": count(),
            "estimator": [*choice(), Case("mixed", _const("mixed"), ValueError)],
            "num_samples": count(),
            "learning_rate": real(allow_zero=False, optional=True),
            "control_variate": [
                *FLAG,
                Case("with reparameterization", _const(True), ValueError),
            ],
            "seed": SEED,
            "jit_compile": FLAG,
        },
        seed="seed",
    ),
    "reference_posterior": Spec(
        vicourse.reference_posterior,
        lambda: dict(
            model=REFERENCE_MODEL,
            observed={"x": X_1D},
            num_draws=10,
            num_chains=2,
            num_adaptation_steps=10,
            seed=0,
            jit_compile=False,
        ),
        {
            "model": [*NOT_A_DISTRIBUTION, Case("not joint", _const(NORMAL_LIKELIHOOD), TypeError)],
            "observed": [
                Case("list", _const([X_1D]), TypeError),
                Case("unknown name", _const({"y": X_1D}), ValueError),
                Case("nan", _const({"x": np.full(6, np.nan)}), ValueError),
                Case("string", _const({"x": "abc"}), TypeError),
                Case("everything", _const({"x": X_1D, "z": 1.0}), ValueError),
            ],
            "num_draws": count(minimum=10),
            "num_chains": count(minimum=2),
            "num_adaptation_steps": count(minimum=10, optional=True),
            "seed": SEED,
            "jit_compile": FLAG,
        },
        seed="seed",
    ),
    "vae_elbo": Spec(
        vicourse.vae_elbo,
        lambda: dict(
            x=X_IMAGES,
            encoder=_image_encoder,
            decoder=_image_decoder,
            prior=IMAGE_PRIOR,
            num_samples=3,
            seed=0,
            analytic_kl=True,
        ),
        {
            "x": IMAGES,
            "encoder": encoder_callable("x"),
            "decoder": decoder_callable("x"),
            "prior": LATENT_PRIOR,
            "num_samples": count(),
            "seed": SEED,
            "analytic_kl": FLAG,
        },
        seed="seed",
        integer_data="x",
    ),
    "iwae_bound": Spec(
        vicourse.iwae_bound,
        lambda: dict(
            x=X_IMAGES,
            encoder=_image_encoder,
            decoder=_image_decoder,
            prior=IMAGE_PRIOR,
            num_samples=5,
            seed=0,
        ),
        {
            "x": IMAGES,
            "encoder": encoder_callable("x"),
            "decoder": decoder_callable("x"),
            "prior": LATENT_PRIOR,
            "num_samples": count(),
            "seed": SEED,
        },
        seed="seed",
        integer_data="x",
    ),
    "make_encoder": Spec(
        vicourse.make_encoder,
        lambda: dict(data_dim=4, latent_dim=2, hidden_units=(3,), data=X_IMAGES, seed=0),
        {
            "data_dim": [*count(), Case("not the data's", _const(5), ValueError)],
            "latent_dim": count(),
            "hidden_units": HIDDEN_UNITS,
            "data": [
                Case("nan", _with_value("data", np.nan), ValueError),
                Case("wrong columns", _const(np.zeros((3, 5))), ValueError),
                Case("constant", _const(np.ones((3, 4))), ValueError),
                Case("string", _const("abc"), TypeError),
            ],
            "seed": SEED,
        },
        seed="seed",
        integer_data="data",
    ),
    "make_decoder": Spec(
        vicourse.make_decoder,
        lambda: dict(
            latent_dim=2,
            data_dim=4,
            likelihood="binomial",
            total_count=16,
            hidden_units=(3,),
            data=X_IMAGES,
            seed=0,
        ),
        {
            "latent_dim": count(),
            "data_dim": [*count(), Case("not the data's", _const(3), ValueError)],
            "likelihood": choice(),
            "total_count": [*count(), Case("below the data", _const(8), ValueError)],
            "hidden_units": HIDDEN_UNITS,
            "data": [
                Case("nan", _with_value("data", np.nan), ValueError),
                Case("negative count", _with_value("data", -1.0), ValueError),
                Case("fractional count", _with_value("data", 0.5), ValueError),
                Case("wrong rank", _const(np.zeros(4)), ValueError),
                Case("string", _const("abc"), TypeError),
            ],
            "seed": SEED,
        },
        seed="seed",
        integer_data="data",
    ),
    "fit_vae": Spec(
        vicourse.fit_vae,
        _fit_vae_arguments,
        {
            "train": [
                *data("train", wrong_rank=np.zeros(4), empty=np.zeros((0, 4))),
                Case("outside the support", _with_value("train", 17.0), ValueError),
                Case(
                    "dataset of batches",
                    _const(tf.data.Dataset.from_tensor_slices(X_IMAGES).batch(3)),
                    ValueError,
                ),
            ],
            "encoder": [
                *encoder_callable("train"),
                Case(
                    "not reparameterized",
                    _const(lambda x: tfd.OneHotCategorical(tf.zeros([3, 2]), dtype=tf.float32)),
                    ValueError,
                ),
            ],
            "decoder": decoder_callable("train"),
            "prior": LATENT_PRIOR,
            "epochs": count(),
            "batch_size": [*count(), Case("above N", _const(7), ValueError)],
            "learning_rate": real(allow_zero=False),
            "decay": FLAG,
            "seed": SEED,
            "validation": [
                Case("nan", _const(np.full((2, 4), np.nan)), ValueError),
                Case("wrong columns", _const(np.zeros((2, 3))), ValueError),
                Case("outside the support", _const(np.full((2, 4), 20.0)), ValueError),
                Case("string", _const("abc"), TypeError),
            ],
            "num_samples": count(),
            "kl_weight": real(allow_zero=False),
            "kl_warmup_epochs": count(minimum=0),
            "progress": FLAG,
            "strategy": [
                Case("string", _const("mirrored"), TypeError),
                Case(
                    "variables outside its scope",
                    _const(tf.distribute.OneDeviceStrategy("/cpu:0")),
                    ValueError,
                ),
            ],
            "jit_compile": FLAG,
        },
        seed="seed",
        integer_data="train",
    ),
    "amortization_gap": Spec(
        vicourse.amortization_gap,
        lambda: dict(
            x=X_IMAGES,
            encoder=_image_encoder,
            decoder=_image_decoder,
            prior=IMAGE_PRIOR,
            num_steps=3,
            learning_rate=0.05,
            num_samples=10,
            seed=0,
            jit_compile=False,  # a graph: no XLA compilation for a 3-step fit
        ),
        {
            "x": IMAGES,
            "encoder": encoder_callable("x"),
            "decoder": decoder_callable("x"),
            "prior": LATENT_PRIOR,
            "num_steps": count(),
            "learning_rate": real(allow_zero=False),
            "num_samples": count(minimum=2),
            "seed": SEED,
            "jit_compile": FLAG,
        },
        seed="seed",
        integer_data="x",
    ),
    "active_units": Spec(
        vicourse.active_units,
        lambda: dict(x=X_IMAGES, encoder=_image_encoder, prior=IMAGE_PRIOR, threshold=0.01),
        {
            "x": [*IMAGES, Case("one row", _const(X_IMAGES[:1]), ValueError)],
            "encoder": encoder_callable("x"),
            "prior": LATENT_PRIOR,
            "threshold": real(allow_zero=False),
        },
        integer_data="x",
    ),
    "load_digits_images": Spec(vicourse.load_digits_images, dict, {"binarize": FLAG}),
    "load_mnist": Spec(
        vicourse.load_mnist,
        lambda: dict(binarize=True, timeout=1.0),
        {"binarize": FLAG, "timeout": real(allow_zero=False)},
    ),
    "make_surrogate": Spec(
        vicourse.make_surrogate,
        lambda: dict(
            kind="mixture",
            event_shape=[2],
            seed=0,
            loc=np.array([0.0, 1.0]),
            scale=2.0,
            num_components=2,
            covariance="full",
            bijector=tfp.bijectors.Softplus(),
        ),
        {
            "kind": choice(),
            "event_shape": EVENT_SHAPE,
            "seed": SEED,
            "loc": location((2,), wrong_shape=np.zeros(3)),
            "scale": scale(wrong_shape=np.ones(3)),
            "num_components": count(maximum=10_000),
            "covariance": choice(),
            "bijector": SUPPORT_BIJECTOR,
            "num_layers": [Case("not an option of a mixture", _const(2), TypeError)],
        },
        seed="seed",
    ),
    # The flow's own options: the same function, another kind.
    "make_surrogate (flow)": Spec(
        vicourse.make_surrogate,
        lambda: dict(
            kind="flow", event_shape=[2], seed=0, flow="iaf", num_layers=1, hidden_units=[4]
        ),
        {
            "flow": choice(),
            "num_layers": count(maximum=64),
            "hidden_units": [
                Case("int", _const(4), TypeError),
                Case("string", _const("32"), TypeError),
                Case("zero width", _const([0]), ValueError),
                Case("float width", _const([2.5]), TypeError),
            ],
            "dtype": [
                Case("int32", _const(tf.int32), TypeError),
                Case("string", _const("abc"), TypeError),
            ],
        },
        seed="seed",
    ),
    "psis_khat": Spec(
        vicourse.psis_khat,
        lambda: dict(
            log_joint=_log_joint, surrogate=tfd.Normal(F64(0.5), F64(1.0)), num_samples=100, seed=0
        ),
        {
            "log_joint": log_density("log_joint"),
            "surrogate": distribution(event=False),
            "num_samples": count(minimum=100),
            "seed": SEED,
        },
        seed="seed",
    ),
    "compare_posteriors": Spec(
        vicourse.compare_posteriors,
        lambda: dict(
            reference=(np.zeros(2), np.ones(2)),
            approximations={"q": (np.ones(2), np.full(2, 0.5))},
            coordinates=["a", "b"],
            num_samples=100,
            seed=0,
        ),
        {
            "reference": [
                *NON_NUMERIC,
                Case("nan mean", _const((np.array([np.nan, 0.0]), np.ones(2))), ValueError),
                Case("zero sd", _const((np.zeros(2), np.zeros(2))), ValueError),
                Case("other length", _const((np.zeros(3), np.ones(3))), ValueError),
                Case("ragged pair", _const((np.zeros(2), np.ones(3))), ValueError),
                Case("bad distribution", lambda v: tfd.Normal(F64(0.0), F64(-1.0)), ValueError),
            ],
            "approximations": [
                Case("list", _const([(np.zeros(2), np.ones(2))]), TypeError),
                Case("empty", _const({}), TypeError),
                Case("string value", _const({"q": "abc"}), TypeError),
                Case("int key", _const({1: (np.zeros(2), np.ones(2))}), TypeError),
                Case("other length", _const({"q": (np.zeros(3), np.ones(3))}), ValueError),
                Case("negative sd", _const({"q": (np.zeros(2), -np.ones(2))}), ValueError),
            ],
            "coordinates": [
                Case("one name", _const(["a"]), ValueError),
                Case("string", _const("ab"), TypeError),
            ],
            "num_samples": count(minimum=2),
            "seed": SEED,
        },
        seed="seed",
    ),
    "fit_gmm_svi": Spec(
        vicourse.fit_gmm_svi,
        lambda: dict(
            data=X_2D,
            num_components=2,
            prior_scale=3.0,
            noise_scale=1.0,
            batch_size=3,
            num_steps=4,
            tau=1.0,
            kappa=0.7,
            seed=0,
            init=None,
            num_data=None,
            progress=False,
            jit_compile=True,
        ),
        {
            "data": data("data", wrong_rank=np.zeros((2, 2, 2)), empty=np.zeros((0, 2))),
            "num_components": [*count(), Case("more than N", _const(7), ValueError)],
            "prior_scale": MIXTURE_SCALE,
            "noise_scale": MIXTURE_SCALE,
            "batch_size": count(maximum=6),
            "num_steps": count(),
            "tau": real(allow_zero=True),
            "kappa": [*ROBBINS_MONRO_KAPPA, *real(allow_zero=False)],
            "seed": SEED,
            "init": location((2, 2), wrong_shape=np.zeros((3, 2)), optional=True),
            "num_data": [*count(optional=True), Case("not N", _const(5), ValueError)],
            "progress": FLAG,
            "jit_compile": FLAG,
        },
        seed="seed",
        integer_data="data",
    ),
    # The same function fed a tf.data.Dataset of [B, D] minibatches (data beyond memory).
    "fit_gmm_svi[dataset]": Spec(
        vicourse.fit_gmm_svi,
        lambda: dict(
            data=_minibatches(X_2D),
            num_components=2,
            prior_scale=3.0,
            batch_size=3,
            num_steps=4,
            seed=0,
            num_data=6,
        ),
        {
            "data": [
                Case("unbatched", lambda v: tf.data.Dataset.from_tensor_slices(X_2D), ValueError),
                Case("partial batches", lambda v: _minibatches(X_2D, drop=False), ValueError),
                Case("other batch size", lambda v: _minibatches(X_2D, size=2), ValueError),
                Case("integers", lambda v: _minibatches(X_2D.astype(np.int64)), TypeError),
                Case("pairs", lambda v: _minibatches(X_2D).map(_pair), TypeError),
                Case("nan", lambda v: _minibatches(np.full((6, 2), np.nan)), ValueError),
                Case("inf later", lambda v: _minibatches(_inf_in_second_batch()), ValueError),
                Case("empty", lambda v: _minibatches(np.zeros((2, 2))), ValueError),
            ],
            "num_components": [
                *count(),
                Case("more than num_data", _const(7), ValueError),
                Case("more than B without init", _const(4), ValueError),
            ],
            "prior_scale": MIXTURE_SCALE,
            "batch_size": [*count(), Case("more than num_data", _const(7), ValueError)],
            "num_data": [
                *count(optional=True),
                Case("none", _const(None), ValueError),  # required with a dataset
                Case("below batch_size", _const(2), ValueError),
            ],
            "seed": SEED,
        },
        seed="seed",
    ),
    "correlated_gaussian": Spec(
        vicourse.targets.correlated_gaussian,
        lambda: dict(dim=2, correlation=0.5, scale=1.0),
        {
            "dim": count(minimum=2, maximum=10_000),
            "correlation": [
                Case("one", _const(1.0), ValueError),
                Case("minus one", _const(-1.0), ValueError),
                Case("nan", _const(np.nan), ValueError),
                Case("string", _const("0.5"), TypeError),
                Case("bool", _const(True), TypeError),
                Case("none", _const(None), TypeError),
            ],
            "scale": real(allow_zero=False),
        },
    ),
    "banana": Spec(
        vicourse.targets.banana,
        lambda: dict(curvature=1.0, scale=1.0),
        {"curvature": real(allow_zero=True), "scale": real(allow_zero=False)},
    ),
    "funnel": Spec(
        vicourse.targets.funnel,
        lambda: dict(dim=3, scale=3.0),
        {"dim": count(minimum=2, maximum=10_000), "scale": real(allow_zero=False)},
    ),
    "bimodal": Spec(
        vicourse.targets.bimodal,
        lambda: dict(dim=2, distance=2.0, sd=0.6),
        {
            "dim": count(maximum=10_000),
            "distance": real(allow_zero=False),
            "sd": real(allow_zero=False),
        },
    ),
    # No arguments: the contract is that they run.
    "eight_schools": Spec(vicourse.targets.eight_schools, dict),
    "check_environment": Spec(vicourse.check_environment, dict),
    "describe": Spec(vicourse.describe, dict),
}


BAD_CASES = [
    pytest.param(name, arg, case, id=f"{name}-{arg}-{case.label}")
    for name, spec in CONTRACT.items()
    for arg, cases in spec.args.items()
    for case in cases
]


@pytest.mark.parametrize("name, arg, case", BAD_CASES)
def test_bad_input_raises_and_names_the_argument(name, arg, case):
    spec = CONTRACT[name]
    kwargs = spec.valid()
    kwargs[arg] = case.make(kwargs)
    with pytest.raises((ValueError, TypeError)) as info:
        spec.fn(**kwargs)
    assert info.type is case.error or issubclass(info.type, case.error), (
        f"{name}({arg}={case.label}) raised {info.type.__name__}, expected "
        f"{case.error.__name__}: {info.value}"
    )
    assert f"`{arg}" in str(info.value), f"the message does not name `{arg}`: {info.value}"


def _numbers(result) -> list[np.ndarray]:
    """Every number in a result (tensors, NamedTuples, distributions, networks), for
    comparisons."""
    if isinstance(result, tf.Module) and not isinstance(result, tfd.Distribution):
        return [np.asarray(v) for v in result.trainable_variables]
    if isinstance(result, tfd.Distribution):
        result = {k: v for k, v in result.parameters.items() if not isinstance(v, (str, bool))}
    if isinstance(result, tfd.TransformedDistribution):  # a flow: its weights and base
        return [np.asarray(v) for v in result.trainable_variables] + _numbers(result.distribution)
    if isinstance(result, tfp.bijectors.Bijector):
        if tf.nest.is_nested(result.forward_min_event_ndims):  # a joint (structured) one
            return []
        try:
            return [np.asarray(result.forward(np.array([0.0, 1.0, -2.0])))]
        except (ValueError, tf.errors.InvalidArgumentError):  # a bijector of another size
            return []
    if callable(result):  # a log-density of a vicourse.targets.Target
        return []
    if isinstance(result, dict):
        return [n for key in sorted(result) for n in _numbers(result[key])]
    if isinstance(result, (tuple, list)):
        return [n for item in result for n in _numbers(item)]
    if isinstance(result, (str, type(None), tf.DType)) or callable(result):  # no numbers
        return []
    return [np.asarray(tf.convert_to_tensor(result))]


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_valid_call_works(name):
    spec = CONTRACT[name]
    result = spec.fn(**spec.valid())
    assert all(np.all(np.isfinite(n)) for n in _numbers(result) if n.dtype.kind == "f")


@pytest.mark.parametrize("name", sorted(n for n, s in CONTRACT.items() if s.seed))
def test_documented_seeds_work_and_reproduce(name):
    spec = CONTRACT[name]
    for seed in (7, np.int64(7), tf.constant([3, 4]), np.array([3, 4], dtype=np.int64)):
        first = _numbers(spec.fn(**{**spec.valid(), spec.seed: seed}))
        second = _numbers(spec.fn(**{**spec.valid(), spec.seed: seed}))
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(n for n, s in CONTRACT.items() if s.integer_data))
def test_integer_data_are_accepted_as_float32(name):
    spec = CONTRACT[name]
    arg = spec.integer_data
    # Two fresh sets of valid arguments: a fit trains its networks in place.
    valid, again = spec.valid(), spec.valid()
    as_int = {**valid, arg: np.round(np.asarray(valid[arg])).astype(np.int64)}
    as_float32 = {**again, arg: np.round(np.asarray(again[arg])).astype(np.float32)}
    for got, want in zip(_numbers(spec.fn(**as_int)), _numbers(spec.fn(**as_float32)), strict=True):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------
# The API surface: no public name shadows a module, every public function is covered
# ---------------------------------------------------------------------------------------

SUBMODULES = sorted(
    m.name for m in pkgutil.iter_modules(vicourse.__path__) if not m.name.startswith("_")
)


@pytest.mark.parametrize("module", SUBMODULES)
def test_no_public_name_shadows_a_submodule(module):
    assert importlib.import_module(f"vicourse.{module}") is getattr(vicourse, module)
    assert module in vicourse.__all__


def _public_objects():
    modules = [vicourse] + [importlib.import_module(f"vicourse.{m}") for m in SUBMODULES]
    for module in modules:
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name)


def test_every_public_function_is_in_the_contract():
    covered = {spec.fn for spec in CONTRACT.values()}
    missing = [
        label for label, obj in _public_objects() if inspect.isfunction(obj) and obj not in covered
    ]
    assert missing == [], f"add these to CONTRACT in tests/test_contract.py: {missing}"


def test_public_classes_are_results_state_or_errors():
    """Anything else in __all__ that is callable must be a NamedTuple or an exception."""
    for label, obj in _public_objects():
        if inspect.isclass(obj):
            assert (
                issubclass(obj, tuple) and hasattr(obj, "_fields") or issubclass(obj, Exception)
            ), label


def test_top_level_exports_every_public_function():
    functions = {obj for _, obj in _public_objects() if inspect.isfunction(obj)}
    exported = {getattr(vicourse, name) for name in vicourse.__all__}
    assert functions <= exported
