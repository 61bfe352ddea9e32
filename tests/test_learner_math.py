"""The online ranker against an independent numpy reference of logistic loss + AdaGrad + L2."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from udfs.learner_math import (
    Bias,
    ItemSide,
    LearnerConfig,
    OnlineRanker,
    UserCodec,
    fake_negative_weight,
    moderated,
    predict,
    sigmoid,
    stable_seed,
)

CFG = LearnerConfig(dim=8, learning_rate=0.1, bias_learning_rate=0.07, l2=1e-2, init_accumulator=0.1, init_std=0.1,
                    user_update="gradient")  # the AdaGrad user step; Newton users: test_newton_*

# Every AdaGrad accumulator, the global bias's included, starts at init_accumulator.
GLOBAL_INIT_ACCUM = CFG.init_accumulator


class ReferenceModel:
    """p = sigmoid(u.v + b_item + b_pos + b_global); logloss + l2/2 (|u|^2 + |v|^2); AdaGrad per coordinate."""

    def __init__(self, cfg: LearnerConfig, initial_item_vector) -> None:
        self.cfg = cfg
        self.initial_item_vector = initial_item_vector
        self.users: dict[str, list[np.ndarray]] = {}
        self.items: dict[str, list] = {}
        self.positions: dict[int, list[float]] = {}
        self.global_bias = [math.log(cfg.prior_ctr / (1 - cfg.prior_ctr)), GLOBAL_INIT_ACCUM]

    def step(self, user_id: str, item_id: str, position: int, label: int) -> float:
        cfg = self.cfg
        acc0 = cfg.init_accumulator
        if user_id not in self.users:
            self.users[user_id] = [np.zeros(cfg.dim), np.full(cfg.dim, acc0)]
        if item_id not in self.items:
            self.items[item_id] = [np.array(self.initial_item_vector(item_id)), np.full(cfg.dim, acc0), 0.0, acc0]
        if position not in self.positions:
            self.positions[position] = [0.0, acc0]
        u, u_acc = self.users[user_id]
        v, v_acc, b_item, b_item_acc = self.items[item_id]
        b_pos, b_pos_acc = self.positions[position]
        b_glob, b_glob_acc = self.global_bias

        z = float(np.sum(u * v)) + b_item + b_pos + b_glob
        p = 1.0 / (1.0 + math.exp(-z))
        err = p - label
        g_u = err * v + cfg.l2 * u
        g_v = err * u + cfg.l2 * v

        u_acc = u_acc + g_u**2
        v_acc = v_acc + g_v**2
        self.users[user_id] = [u - cfg.learning_rate * g_u / np.sqrt(u_acc), u_acc]

        def bias_step(value: float, acc: float) -> tuple[float, float]:
            acc = acc + err**2
            return value - cfg.bias_learning_rate * err / math.sqrt(acc), acc

        b_item, b_item_acc = bias_step(b_item, b_item_acc)
        self.items[item_id] = [v - cfg.learning_rate * g_v / np.sqrt(v_acc), v_acc, b_item, b_item_acc]
        self.positions[position] = list(bias_step(b_pos, b_pos_acc))
        self.global_bias = list(bias_step(b_glob, b_glob_acc))
        return p


def random_examples(n: int, seed: int) -> list[tuple[str, str, int, int]]:
    rng = np.random.default_rng(seed)
    return [
        (f"u{rng.integers(5)}", f"sku{rng.integers(8)}", int(rng.integers(1, 5)), int(rng.random() < 0.3))
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_then_learn_matches_reference(seed: int) -> None:
    side = ItemSide(CFG)
    ranker = OnlineRanker(CFG, side)
    ref = ReferenceModel(CFG, ItemSide(CFG).initial_vector)
    users: dict[str, np.ndarray] = {}
    got, want = [], []
    for user_id, item_id, position, label in random_examples(200, seed):
        state = users.setdefault(user_id, ranker.codec.new())
        got.append(ranker.score_then_learn(state, item_id, position, label))
        want.append(ref.step(user_id, item_id, position, label))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.std(got) > 0.01  # the model moved: the comparison is not trivially about constants

    codec = ranker.codec
    for user_id, state in users.items():
        u, u_acc = ref.users[user_id]
        np.testing.assert_allclose(codec.vector(state), u, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(codec.accum(state), u_acc, rtol=1e-10)
    for item_id, (v, v_acc, b, b_acc) in ref.items.items():
        item = side.items[item_id]
        np.testing.assert_allclose(item.vector, v, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(item.accum, v_acc, rtol=1e-10)
        assert item.bias.value == pytest.approx(b, rel=1e-10, abs=1e-12)
        assert item.bias.accum == pytest.approx(b_acc, rel=1e-10)
    for position, (b, b_acc) in ref.positions.items():
        assert side.positions[position].value == pytest.approx(b, rel=1e-10, abs=1e-12)
        assert side.positions[position].accum == pytest.approx(b_acc, rel=1e-10)
    assert side.global_bias.value == pytest.approx(ref.global_bias[0], rel=1e-10, abs=1e-12)
    assert side.global_bias.accum == pytest.approx(ref.global_bias[1], rel=1e-10)

    # Update counters: per user, per item, per position, global.
    examples = random_examples(200, seed)
    for user_id, state in users.items():
        assert codec.updates(state) == sum(1 for e in examples if e[0] == user_id)
    for item_id, item in side.items.items():
        assert item.updates == item.bias.updates == sum(1 for e in examples if e[1] == item_id)
        assert item.dirty
    assert side.global_bias.updates == 200


def trained_ranker(seed: int = 0, n: int = 100) -> tuple[OnlineRanker, dict[str, np.ndarray]]:
    ranker = OnlineRanker(CFG, ItemSide(CFG))
    users: dict[str, np.ndarray] = {}
    for user_id, item_id, position, label in random_examples(n, seed):
        ranker.score_then_learn(users.setdefault(user_id, ranker.codec.new()), item_id, position, label)
    return ranker, users


def test_returned_score_is_the_prediction_before_the_update() -> None:
    ranker, users = trained_ranker()
    side, codec = ranker.item_side, ranker.codec
    state = users["u1"]
    before = predict(codec.vector(state), side.item("sku3"), side.position(2), side.global_bias)
    score = ranker.score_then_learn(state, "sku3", 2, 1)
    after = predict(codec.vector(state), side.item("sku3"), side.position(2), side.global_bias)
    assert score == before
    assert after > before  # a positive moves the prediction up: the update happened after scoring


def test_score_then_learn_updates_user_state_in_place() -> None:
    ranker, users = trained_ranker()
    state = users["u2"]
    copy = state.copy()
    ranker.score_then_learn(state, "sku0", 1, 0)
    assert ranker.codec.updates(state) == ranker.codec.updates(copy) + 1
    assert not np.array_equal(state[: CFG.dim], copy[: CFG.dim])
    assert np.all(ranker.codec.accum(state) > ranker.codec.accum(copy))


def objective(u: np.ndarray, v: np.ndarray, bias: float, label: int, l2: float) -> float:
    p = sigmoid(float(u @ v) + bias)
    return -(label * math.log(p) + (1 - label) * math.log(1 - p)) + 0.5 * l2 * (float(u @ u) + float(v @ v))


def applied_gradient(before: np.ndarray, after: np.ndarray, accum_after: np.ndarray, lr: float) -> np.ndarray:
    """The gradient an AdaGrad step used, recovered from the step: x1 = x0 - lr * g / sqrt(accum1)."""
    return (before - after) * np.sqrt(accum_after) / lr


@pytest.mark.parametrize("label", [0, 1])
def test_gradients_match_finite_differences(label: int) -> None:
    ranker, users = trained_ranker(seed=5)
    side, codec = ranker.item_side, ranker.codec
    state = users["u3"]
    item, term, glob = side.item("sku4"), side.position(3), side.global_bias
    u0, u_acc0 = codec.vector(state).copy(), codec.accum(state).copy()
    v0, v_acc0 = item.vector.copy(), item.accum.copy()
    bias = item.bias.value + term.value + glob.value
    b0, b_acc0 = item.bias.value, item.bias.accum
    assert np.linalg.norm(u0) > 1e-3  # a trained user, so the item gradient has a data term

    ranker.score_then_learn(state, "sku4", 3, label)
    g_u = applied_gradient(u0, codec.vector(state), codec.accum(state), CFG.learning_rate)
    g_v = applied_gradient(v0, item.vector, item.accum, CFG.learning_rate)
    g_b = (b0 - item.bias.value) * math.sqrt(item.bias.accum) / CFG.bias_learning_rate
    # The accumulators grew by exactly the squared gradients.
    np.testing.assert_allclose(codec.accum(state) - u_acc0, g_u**2, rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(item.accum - v_acc0, g_v**2, rtol=1e-6, atol=1e-15)
    assert item.bias.accum - b_acc0 == pytest.approx(g_b**2, rel=1e-6)

    def central(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])

    fd_u = central(lambda u: objective(u, v0, bias, label, CFG.l2), u0)
    fd_v = central(lambda v: objective(u0, v, bias, label, CFG.l2), v0)
    fd_b = central(lambda b: objective(u0, v0, float(b[0]), label, 0.0), np.array([bias]))[0]
    np.testing.assert_allclose(g_u, fd_u, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g_v, fd_v, rtol=1e-5, atol=1e-8)
    assert g_b == pytest.approx(fd_b, rel=1e-5)  # no L2 on biases
    assert np.linalg.norm(fd_u) > 1e-3 and np.linalg.norm(fd_v) > 1e-3


def test_new_user_is_scored_from_biases() -> None:
    ranker, _ = trained_ranker(seed=7)
    side, codec = ranker.item_side, ranker.codec
    new = codec.new()
    assert np.array_equal(codec.vector(new), np.zeros(CFG.dim))
    assert np.array_equal(codec.accum(new), np.full(CFG.dim, CFG.init_accumulator))
    assert codec.updates(new) == 0
    expected = sigmoid(side.item("sku2").bias.value + side.position(1).value + side.global_bias.value)
    assert abs(expected - 0.5) > 1e-3  # the biases have moved
    score = ranker.score_then_learn(new, "sku2", 1, 1)
    assert score == pytest.approx(expected, rel=1e-12)
    assert np.linalg.norm(codec.vector(new)) > 0  # and the new user learns from its first example
    assert codec.updates(new) == 1


def test_user_codec_round_trip() -> None:
    codec = UserCodec(CFG)
    rng = np.random.default_rng(0)
    vector, accum = rng.normal(size=CFG.dim), rng.random(CFG.dim)
    state = codec.pack(vector, accum, 17)
    assert state.shape == (2 * CFG.dim + 1,)
    restored = codec.from_bytes(state.tobytes())
    assert np.array_equal(codec.vector(restored), vector)
    assert np.array_equal(codec.accum(restored), accum)
    assert codec.updates(restored) == 17
    restored[0] += 1.0  # from_bytes gives a writable copy
    assert restored[0] != state[0]


EMBEDDINGS = {
    "sku1": [0.3, -1.2, 0.8, 0.1, 2.0, -0.4],
    "sku2": [-0.7, 0.2, 0.5, 1.1, -0.3, 0.9],
    "zero": [0.0] * 6,
    "empty": [],
}


def test_catalog_init_is_deterministic_scaled_and_differs_from_hash_init() -> None:
    a, b = ItemSide(CFG, EMBEDDINGS), ItemSide(CFG, EMBEDDINGS)
    plain = ItemSide(CFG)
    v1 = a.item("sku1").vector
    assert np.array_equal(v1, b.item("sku1").vector)
    assert not np.allclose(v1, plain.item("sku1").vector)
    assert not np.allclose(v1, a.item("sku2").vector)
    # One scale for the catalog: a typical item gets embedding_init_std per coordinate, and an item's
    # norm relative to the catalog's is kept (scaling the whole catalog changes nothing).
    norms = {k: float(np.linalg.norm(e)) for k, e in EMBEDDINGS.items() if e}
    catalog_norm = math.sqrt(sum(n * n for n in norms.values()) / len(norms))  # "zero" counts, "empty" not
    assert a.catalog_norm() == pytest.approx(catalog_norm, rel=1e-12)
    wide = ItemSide(replace(CFG, dim=4000), EMBEDDINGS)  # many coordinates: their std is close to its expectation
    assert np.std(wide.item("sku1").vector) == pytest.approx(CFG.embedding_init_std * norms["sku1"] / catalog_norm,
                                                             rel=0.05)
    assert np.std(wide.item("sku2").vector) == pytest.approx(CFG.embedding_init_std * norms["sku2"] / catalog_norm,
                                                             rel=0.05)
    scaled = ItemSide(CFG, {k: [3.0 * x for x in e] for k, e in EMBEDDINGS.items()})
    np.testing.assert_allclose(scaled.item("sku1").vector, v1, rtol=1e-12)
    late = ItemSide(CFG, {"sku1": EMBEDDINGS["sku1"]})  # the scale follows the catalog known so far
    late.add_embedding("sku2", EMBEDDINGS["sku2"])
    assert late.catalog_norm() == pytest.approx(math.sqrt((norms["sku1"] ** 2 + norms["sku2"] ** 2) / 2), rel=1e-12)
    nudged = ItemSide(CFG, {"sku1": [x + 0.01 for x in EMBEDDINGS["sku1"]]}).item("sku1").vector
    assert float(nudged @ v1) / (np.linalg.norm(nudged) * np.linalg.norm(v1)) > 0.99
    # Items without a usable embedding fall back to the hash init.
    for item_id in ("zero", "empty", "unknown"):
        np.testing.assert_array_equal(a.item(item_id).vector, plain.item(item_id).vector)
    # The first use creates the optimizer state too; a start from the catalog is trusted more.
    assert np.array_equal(a.item("sku1").accum, np.full(CFG.dim, CFG.catalog_init_accumulator))
    assert np.array_equal(a.item("zero").accum, np.full(CFG.dim, CFG.init_accumulator))
    assert CFG.catalog_init_accumulator > CFG.init_accumulator
    assert a.item("sku1").bias.accum == CFG.init_accumulator and a.item("sku1").bias.value == 0.0


def test_hash_init_is_identical_across_instances_and_processes() -> None:
    a, b = ItemSide(CFG), ItemSide(CFG)
    ids = [f"sku{i:06d}" for i in range(200)]
    va = np.array([a.item(i).vector for i in ids])
    vb = np.array([b.item(i).vector for i in ids])
    assert np.array_equal(va, vb)
    assert len({row.tobytes() for row in va}) == len(ids)  # distinct items, distinct vectors
    assert va.std() == pytest.approx(CFG.init_std, rel=0.1)
    assert abs(va.mean()) < 0.01
    # Another interpreter with a different string-hash seed gives the same vector.
    code = (
        "from udfs.learner_math import ItemSide, LearnerConfig; import sys; "
        f"side = ItemSide(LearnerConfig(dim={CFG.dim}, init_std={CFG.init_std})); "
        "sys.stdout.write(side.item('sku000042').vector.tobytes().hex())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert bytes.fromhex(out) == va[42].tobytes()
    assert stable_seed("sku000042") == stable_seed("sku000042") != stable_seed("sku000043")


def test_bias_step_is_adagrad() -> None:
    bias = Bias(accum=0.1)
    bias.step(0.5, 0.2)
    assert bias.accum == pytest.approx(0.35)
    assert bias.value == pytest.approx(-0.2 * 0.5 / math.sqrt(0.35))
    bias.step(-0.3, 0.2)
    assert bias.accum == pytest.approx(0.44)
    assert bias.value == pytest.approx(-0.2 * 0.5 / math.sqrt(0.35) + 0.2 * 0.3 / math.sqrt(0.44))
    assert bias.updates == 2 and bias.dirty


def test_merge_record_averages_another_replicas_item_side_parameters():
    side = ItemSide(CFG)
    local = side.item("sku1")
    before = local.vector.copy()
    remote_vector = np.full(CFG.dim, 0.5)
    remote = {"entity_type": "ITEM", "entity_id": "sku1", "vector": remote_vector.tolist(), "bias": 1.0,
              "vector_accum": [9.0] * CFG.dim, "bias_accum": 0.01, "updates": 3, "replica": 1}
    assert side.merge_record(remote)
    assert np.allclose(side.item("sku1").vector, (before + remote_vector) / 2)
    assert side.item("sku1").bias.value == pytest.approx(0.5)
    assert np.all(side.item("sku1").accum == 9.0)  # max: merging never enlarges steps
    assert side.item("sku1").bias.accum == pytest.approx(CFG.init_accumulator)
    assert not side.item("sku1").dirty  # merged parameters are not republished
    # an unknown item is adopted as is; user records are not item-side
    assert side.merge_record({**remote, "entity_id": "sku2"})
    assert np.allclose(side.item("sku2").vector, remote_vector)
    assert not side.merge_record({**remote, "entity_type": "USER"})
    glob = side.global_bias.value
    assert side.merge_record({**remote, "entity_type": "GLOBAL", "entity_id": "global", "vector": []})
    assert side.global_bias.value == pytest.approx((glob + 1.0) / 2)


@pytest.mark.parametrize("label", [0, 1])
def test_fake_negative_weights_scale_the_gradient_by_the_importance_weight(label: int) -> None:
    """Fake-negative weighting (Ktena et al. 2019) is the logistic loss weighted by (1 + p) for a
    positive and (1 - p)(1 + p) for a negative, p held fixed: its step equals a plain step whose
    error is scaled by that weight (checked here by finite differences of the weighted loss)."""
    ranker = OnlineRanker(CFG, ItemSide(CFG))
    user = UserCodec(CFG).new()
    user[: CFG.dim] = np.linspace(-0.3, 0.3, CFG.dim)
    item = ranker.item_side.item("i")
    p = ranker.score(user, "i", 1)
    weight = (1 + p) if label else (1 - p) * (1 + p)

    def weighted_loss(vector: np.ndarray) -> float:
        saved = item.vector.copy()
        item.vector[:] = vector
        q = ranker.score(user, "i", 1)
        item.vector[:] = saved
        return -weight * (label * math.log(q) + (1 - label) * math.log(1 - q))

    eps = 1e-6
    numeric = np.array([(weighted_loss(item.vector + eps * e) - weighted_loss(item.vector - eps * e)) / (2 * eps)
                        for e in np.eye(CFG.dim)])
    before = item.vector.copy()
    accum_before = item.accum.copy()
    ranker.score_then_learn(user, "i", 1, label, fake_negative=True)
    grad = numeric + CFG.l2 * before  # L2 is not weighted
    expected = before - CFG.learning_rate * grad / np.sqrt(accum_before + grad * grad)
    np.testing.assert_allclose(item.vector, expected, rtol=1e-6, atol=1e-9)


def test_ftrl_vectors_are_ftrl_proximal_with_z_kept_explicitly() -> None:
    """The vector step under `vector_optimizer="ftrl"` (no z stored) equals FTRL-Proximal run by the
    book (McMahan et al. 2013, per coordinate, z and n kept, L1 0) from a start consistent with the
    initial vector, over a long stream of gradients; and it differs from AdaGrad."""
    cfg = LearnerConfig(dim=8, learning_rate=0.15, bias_learning_rate=0.07, l2=1e-2, init_accumulator=0.1,
                        vector_optimizer="ftrl", ftrl_beta=0.7, ftrl_l2=0.3, user_update="gradient")
    ranker = OnlineRanker(cfg, ItemSide(cfg))
    rng = np.random.default_rng(5)
    state = UserCodec(cfg).new()
    state[: cfg.dim] = rng.normal(0.0, 0.3, cfg.dim)
    alpha, beta, l2 = cfg.learning_rate, cfg.ftrl_beta, cfg.ftrl_l2
    w = state[: cfg.dim].copy()
    n = state[cfg.dim : 2 * cfg.dim].copy()
    z = -w * ((beta + np.sqrt(n)) / alpha + l2)  # the z whose weight is the initial vector
    adagrad_state = state.copy()
    adagrad = OnlineRanker(replace(cfg, vector_optimizer="adagrad"), ItemSide(cfg))
    for _ in range(300):
        hint = rng.normal(0.0, 1.0, cfg.dim)  # a hint step: the user's gradient only
        score = sigmoid(float(w @ hint))
        grad = cfg.query_hint_weight * (score - 1.0) * hint + cfg.l2 * w
        n_new = n + grad * grad
        z += grad - (np.sqrt(n_new) - np.sqrt(n)) / alpha * w
        n = n_new
        w = -z / ((beta + np.sqrt(n)) / alpha + l2)
        assert ranker.learn_query_hint(state, hint) == pytest.approx(score, abs=1e-12)
        adagrad.learn_query_hint(adagrad_state, hint)
    np.testing.assert_allclose(state[: cfg.dim], w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state[cfg.dim : 2 * cfg.dim], n, rtol=1e-12)
    assert not np.allclose(adagrad_state[: cfg.dim], w, atol=1e-3)


# Newton users -------------------------------------------------------------------------------------

NEWTON = LearnerConfig(dim=6, learning_rate=0.0, bias_learning_rate=0.07, init_accumulator=0.1, user_prior_variance=0.4)


def test_newton_user_covariance_is_the_inverse_of_the_accumulated_precision() -> None:
    """With item vectors held fixed (learning_rate 0), a Newton user's covariance after any stream is
    exactly (I / prior_variance + sum of curvature * v v^T)^-1, the curvature of each example being
    weight * p (1 - p) at the score it returned (weight: the fake-negative weight, or the hint's); and
    its mean moved each time by -S' v * error, S' the covariance after the example."""
    ranker = OnlineRanker(NEWTON, ItemSide(NEWTON))
    codec = ranker.codec
    rng = np.random.default_rng(3)
    state = codec.new()
    np.testing.assert_array_equal(codec.covariance(state), NEWTON.user_prior_variance * np.eye(NEWTON.dim))
    precision = np.eye(NEWTON.dim) / NEWTON.user_prior_variance
    for n in range(200):
        before = codec.vector(state).copy()
        if n % 7 == 6:
            hint = rng.normal(0.0, 0.5, NEWTON.dim)
            score = ranker.learn_query_hint(state, hint)
            vector, weight, error = hint, NEWTON.query_hint_weight, NEWTON.query_hint_weight * (score - 1.0)
        else:
            item_id, label, fake_negative = f"i{n % 5}", int(rng.random() < 0.3), bool(n % 2)
            score = ranker.score_then_learn(state, item_id, 1 + n % 3, label, fake_negative=fake_negative)
            vector = ranker.item_side.item(item_id).vector
            weight = fake_negative_weight(label, score) if fake_negative else 1.0
            error = weight * (score - label)
        precision += weight * score * (1.0 - score) * np.outer(vector, vector)
        covariance = np.linalg.inv(precision)
        np.testing.assert_allclose(codec.covariance(state), covariance, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(codec.vector(state), before - error * covariance @ vector, rtol=1e-9, atol=1e-12)
    assert codec.updates(state) == sum(1 for n in range(200) if n % 7 != 6)
    # Confidence grows only along what the user has seen: the covariance shrank, and stays symmetric.
    assert np.all(np.linalg.eigvalsh(codec.covariance(state)) < NEWTON.user_prior_variance)
    np.testing.assert_array_equal(codec.covariance(state), codec.covariance(state).T)


def test_newton_score_integrates_the_logit_over_the_user_posterior() -> None:
    """The score is MacKay's approximation of E[sigmoid(z)] for z ~ N(mean logit, v^T S v): close to the
    expectation computed by quadrature, and further from 0 or 1 than the plain sigmoid of the mean."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    for mean, variance in [(-3.0, 0.0), (-3.0, 0.5), (-3.0, 3.0), (0.5, 1.0), (2.5, 6.0)]:
        expected = float(np.sum(weights * (1 / (1 + np.exp(-(mean + math.sqrt(variance) * nodes))))) / weights.sum())
        assert moderated(mean, variance) == pytest.approx(expected, abs=0.02)
        if variance:
            assert abs(moderated(mean, variance) - 0.5) < abs(sigmoid(mean) - 0.5)
    ranker = OnlineRanker(NEWTON, ItemSide(NEWTON))
    state = ranker.codec.new()
    item = ranker.item_side.item("i1")
    z = float(item.bias.value + ranker.item_side.position(2).value + ranker.item_side.global_bias.value)
    variance = NEWTON.user_prior_variance * float(item.vector @ item.vector)
    assert ranker.score(state, "i1", 2) == pytest.approx(moderated(z, variance), rel=1e-12)


def test_user_rows_convert_between_newton_and_gradient_layouts() -> None:
    """A user stored under one user_update is read under the other: a gradient row gains the prior's
    covariance around the vector it has; a Newton row drops its covariance."""
    gradient = UserCodec(replace(NEWTON, user_update="gradient"))
    newton = UserCodec(NEWTON)
    row = gradient.pack(np.arange(6.0), np.full(6, 2.0), 9)
    upgraded = newton.from_bytes(row.tobytes())
    np.testing.assert_array_equal(newton.vector(upgraded), np.arange(6.0))
    np.testing.assert_array_equal(newton.accum(upgraded), np.full(6, 2.0))
    assert newton.updates(upgraded) == 9
    np.testing.assert_array_equal(newton.covariance(upgraded), NEWTON.user_prior_variance * np.eye(6))
    np.testing.assert_array_equal(gradient.from_bytes(upgraded.tobytes()), row)
    with pytest.raises(ValueError, match="does not fit dimension 6"):
        newton.from_bytes(np.zeros(20).tobytes())
