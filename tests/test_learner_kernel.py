"""The compiled learner kernel against the Python learner it replaces (`OnlineRanker`), op for op."""

from __future__ import annotations

import numpy as np
import pytest

from udfs import learner_math
from udfs.learner_kernel import (
    BIAS_ACCUM,
    BIAS_UPDATES,
    BIAS_VALUE,
    BIAS_WIDTH,
    BIAS_Z,
    ITEM_BIAS,
    ITEM_BIAS_ACCUM,
    ITEM_BIAS_Z,
    ITEM_UPDATES,
    OP_LEARN,
    OP_LEARN_FN,
    OP_QUERY_HINT,
    OP_SCORE,
    TEXT_SEARCH,
    TEXT_WEIGHT,
    ModelArrays,
    compile_kernel,
    item_row_width,
    user_row_width,
)
from udfs.learner_math import ItemSide, LearnerConfig, OnlineRanker, UserCodec

TOLERANCE = 1e-12


def config(dim: int, bias_optimizer: str = "adagrad", vector_optimizer: str = "adagrad",
           user_update: str = "newton") -> LearnerConfig:
    # Large enough rates and l2 that every term of the update matters over the stream (FTRL's L1 too:
    # some biases sit in its dead zone, exactly 0, for a while).
    return LearnerConfig(dim=dim, learning_rate=0.15, bias_learning_rate=0.07, l2=1e-2, init_accumulator=0.1,
                         bias_optimizer=bias_optimizer, vector_optimizer=vector_optimizer, ftrl_l1=0.5, ftrl_l2=0.1,
                         query_hint_weight=0.7, user_update=user_update)


def random_stream(rng: np.random.Generator, n_ops: int, n_users: int, n_items: int, n_positions: int) -> list:
    """(kind, user_id, item_id, position, label, similarity) tuples; a few users and items dominate, like
    real traffic; 60% recommendation requests (similarity NaN), the rest searches (a few with no title: 0);
    one op in ten is a query hint (its item, position and label are not used)."""
    user_weights = rng.zipf(1.5, n_users).astype(float)
    item_weights = rng.zipf(1.5, n_items).astype(float)
    users = rng.choice(n_users, n_ops, p=user_weights / user_weights.sum())
    items = rng.choice(n_items, n_ops, p=item_weights / item_weights.sum())
    positions = rng.integers(0, n_positions, n_ops)
    draw = rng.random(n_ops)
    kinds = np.where(draw < 0.45, OP_LEARN, np.where(draw < 0.7, OP_LEARN_FN, np.where(draw < 0.9, OP_SCORE,
                                                                                     OP_QUERY_HINT)))
    labels = (rng.random(n_ops) < 0.3).astype(int)
    similarity = np.where(rng.random(n_ops) < 0.6, np.nan, rng.uniform(-0.2, 1.0, n_ops))
    similarity[rng.random(n_ops) < 0.05] = 0.0
    return [(int(k), f"u{u}", f"i{i}", int(p), int(y), float(s))
            for k, u, i, p, y, s in zip(kinds, users, items, positions, labels, similarity, strict=True)]


def initial_user_states(codec: UserCodec, n_users: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Even users start from the prior, odd ones from a learned-looking state (non-zero vector, grown accum,
    a Newton user's covariance shrunk and correlated)."""
    states = {}
    dim = codec.dim
    for n in range(n_users):
        state = codec.new()
        if n % 2:
            state[:dim] = rng.normal(0.0, 0.2, dim)
            state[dim : 2 * dim] += rng.random(dim)
            state[2 * dim] = float(rng.integers(1, 50))
            if codec.newton:
                mix = rng.normal(0.0, 0.1, (dim, dim))
                codec.covariance(state)[:] = 0.3 * codec.prior_variance * np.eye(dim) + mix @ mix.T
        states[f"u{n}"] = state
    return states


@pytest.mark.parametrize("dim", [8, 32])
@pytest.mark.parametrize(("bias_optimizer", "vector_optimizer"), [("adagrad", "adagrad"), ("ftrl", "adagrad"),
                                                                  ("ftrl", "ftrl")])
@pytest.mark.parametrize("user_update", ["newton", "gradient"])
def test_batched_kernel_matches_online_ranker(dim: int, bias_optimizer: str, vector_optimizer: str,
                                              user_update: str) -> None:
    compare_with_ranker(dim, TOLERANCE, bias_optimizer, vector_optimizer, user_update)


def test_bit_exact_with_the_same_dot_product_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The only arithmetic difference from OnlineRanker is numpy's `@` summation order.

    With the reference's dot products summed left to right as the kernel does, every score and
    parameter is bit-for-bit equal: the update formulas are evaluated in the same order. (Without it,
    differences are a few ulps that grow with the magnitude of accumulators, ~2e-13 on this stream;
    how BLAS sums even 8 terms depends on the CPU: AVX-512 machines differ from AVX2 ones.)
    """

    def sequential_dot(a: np.ndarray, b: np.ndarray) -> float:
        total = 0.0
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            total += x * y
        return total

    monkeypatch.setattr(learner_math, "dot", sequential_dot)
    compare_with_ranker(8, 0.0, user_update="gradient")  # a Newton step's products are numpy's in the reference


def compare_with_ranker(dim: int, tolerance: float, bias_optimizer: str = "adagrad",
                        vector_optimizer: str = "adagrad", user_update: str = "newton") -> None:
    """One random stream through OnlineRanker op by op and through ModelArrays in batches; all must agree."""
    cfg = config(dim, bias_optimizer, vector_optimizer, user_update)
    rng = np.random.default_rng(dim)
    stream = random_stream(rng, n_ops=4000, n_users=50, n_items=40, n_positions=10)
    hints = rng.normal(0.0, 0.5, (len(stream), dim))  # the query vector of op n, if it is a hint

    # Reference: the Python learner, one op at a time.
    side = ItemSide(cfg)
    ranker = OnlineRanker(cfg, side)
    initial_users = initial_user_states(UserCodec(cfg), 50, rng)
    user_states: dict[str, np.ndarray] = {}
    expected_scores = []
    for n, (kind, user_id, item_id, position, label, similarity) in enumerate(stream):
        if user_id not in user_states:
            user_states[user_id] = initial_users[user_id].copy()
        state = user_states[user_id]
        if kind == OP_QUERY_HINT:
            expected_scores.append(ranker.learn_query_hint(state, hints[n]))
        elif kind != OP_SCORE:
            expected_scores.append(ranker.score_then_learn(state, item_id, position, label, similarity,
                                                           fake_negative=kind == OP_LEARN_FN))
        else:
            expected_scores.append(ranker.score(state, item_id, position, similarity))

    # Kernel: the same stream in batches of varying size; entities are added as they first appear,
    # between batches, from the same initial states (users) and initial vectors (items).
    model = ModelArrays(cfg, capacity=4)  # small, so the arrays grow while the stream runs
    fresh_side = ItemSide(cfg)
    scores = []
    start = 0
    batch_sizes = iter(rng.integers(1, 400, 1000))
    while start < len(stream):
        batch = stream[start : start + int(next(batch_sizes))]
        ops = np.zeros((len(batch), 5), dtype=np.int64)
        for n, (kind, user_id, item_id, position, label, _) in enumerate(batch):
            if user_id not in model.user_rows:
                model.add_user(user_id, initial_users[user_id])
            if kind == OP_QUERY_HINT:  # a hint refers to a row of this batch's hints
                ops[n] = (kind, model.user_rows[user_id], n, 0, 0)
                continue
            if item_id not in model.item_rows:
                model.add_item(item_id, model.new_item_row(*fresh_side.initial_state(item_id)))
            if position not in model.position_rows:
                model.add_position(position, model.new_bias_row())
            ops[n] = (kind, model.user_rows[user_id], model.item_rows[item_id], model.position_rows[position], label)
        scores.extend(model.run(ops, np.array([op[5] for op in batch]), hints[start : start + len(batch)]))
        start += len(batch)

    assert sum(op[0] == OP_QUERY_HINT for op in stream) > 300
    assert model.n_users == len(user_states) and model.n_items == len(side.items)
    assert model.n_positions == len(side.positions)
    np.testing.assert_allclose(scores, expected_scores, rtol=tolerance, atol=tolerance)
    for user_id, state in user_states.items():
        np.testing.assert_allclose(model.users[model.user_rows[user_id]], state, rtol=tolerance, atol=tolerance)
    for item_id, item in side.items.items():
        row = model.items[model.item_rows[item_id]]
        np.testing.assert_allclose(row[:dim], item.vector, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(row[dim : 2 * dim], item.accum, rtol=tolerance, atol=tolerance)
        assert row[ITEM_BIAS] == pytest.approx(item.bias.value, rel=0, abs=tolerance)
        assert row[ITEM_BIAS_ACCUM] == pytest.approx(item.bias.accum, rel=0, abs=tolerance)
        assert row[ITEM_UPDATES] == item.updates == item.bias.updates
        assert row[ITEM_BIAS_Z] == pytest.approx(item.bias.z, rel=1e-12, abs=tolerance)
    for position, term in side.positions.items():
        row = model.positions[model.position_rows[position]]
        assert row[BIAS_VALUE] == pytest.approx(term.value, rel=0, abs=tolerance)
        assert row[BIAS_ACCUM] == pytest.approx(term.accum, rel=0, abs=tolerance)
        assert row[BIAS_UPDATES] == term.updates
    glob = side.global_bias
    assert model.global_bias[BIAS_VALUE] == pytest.approx(glob.value, rel=0, abs=tolerance)
    assert model.global_bias[BIAS_ACCUM] == pytest.approx(glob.accum, rel=0, abs=tolerance)
    learned = [op for op in stream if op[0] in (OP_LEARN, OP_LEARN_FN)]  # hints move users only
    assert model.global_bias[BIAS_UPDATES] == glob.updates == len(learned)
    searches_learned = sum(op[5] == op[5] for op in learned)
    for row, term in ((TEXT_WEIGHT, side.text_weight), (TEXT_SEARCH, side.search_bias)):
        assert model.text[row, BIAS_VALUE] == pytest.approx(term.value, rel=0, abs=tolerance)
        assert model.text[row, BIAS_ACCUM] == pytest.approx(term.accum, rel=0, abs=tolerance)
        assert model.text[row, BIAS_UPDATES] == term.updates == searches_learned
    assert side.text_weight.value != 0.0 and side.search_bias.value != 0.0  # the stream moved them


def test_new_rows_match_python_priors() -> None:
    cfg = config(8)
    model = ModelArrays(cfg)
    side = ItemSide(cfg)
    np.testing.assert_array_equal(model.new_user_row(), UserCodec(cfg).new())
    item = side.item("x")
    row = model.new_item_row(*side.initial_state("x"))
    np.testing.assert_array_equal(row[:8], item.vector)
    np.testing.assert_array_equal(row[8:16], item.accum)
    assert (row[ITEM_BIAS], row[ITEM_BIAS_ACCUM], row[ITEM_UPDATES]) == (item.bias.value, item.bias.accum, 0)
    term = side.position(3)
    np.testing.assert_array_equal(model.new_bias_row(), [term.value, term.accum, term.updates, term.z])
    glob = side.global_bias
    np.testing.assert_array_equal(model.initial_global_bias(), [glob.value, glob.accum, glob.updates, glob.z])
    np.testing.assert_array_equal(model.global_bias, model.initial_global_bias())


def test_growth_keeps_earlier_rows() -> None:
    dim = 4
    model = ModelArrays(config(dim), capacity=2)
    rng = np.random.default_rng(7)
    users = {f"u{n}": rng.normal(size=user_row_width(dim, newton=True)) for n in range(37)}
    items = {f"i{n}": rng.normal(size=item_row_width(dim)) for n in range(29)}
    positions = {n * 3: rng.normal(size=BIAS_WIDTH) for n in range(11)}
    for n, (user_id, row) in enumerate(users.items()):
        assert model.add_user(user_id, row) == n
    for n, (item_id, row) in enumerate(items.items()):
        assert model.add_item(item_id, row) == n
    for n, (position, row) in enumerate(positions.items()):
        assert model.add_position(position, row) == n

    assert (model.n_users, model.n_items, model.n_positions) == (37, 29, 11)
    assert model.users.shape[0] >= 37 and model.items.shape[0] >= 29 and model.positions.shape[0] >= 11
    for user_id, row in users.items():
        np.testing.assert_array_equal(model.users[model.user_rows[user_id]], row)
    for item_id, row in items.items():
        np.testing.assert_array_equal(model.items[model.item_rows[item_id]], row)
    for position, row in positions.items():
        np.testing.assert_array_equal(model.positions[model.position_rows[position]], row)
    with pytest.raises(KeyError):
        model.add_user("u3", model.new_user_row())
    with pytest.raises(KeyError):
        model.add_item("i0", users["u0"][: item_row_width(dim)])
    with pytest.raises(KeyError):
        model.add_position(30, model.new_bias_row())


def test_score_only_changes_nothing() -> None:
    cfg = config(8)
    side = ItemSide(cfg)
    ranker = OnlineRanker(cfg, side)
    model = ModelArrays(cfg)
    rng = np.random.default_rng(3)
    for n in range(5):
        state = model.new_user_row()
        state[:8] = rng.normal(0.0, 0.3, 8)
        model.add_user(f"u{n}", state)
        model.add_item(f"i{n}", model.new_item_row(side.item(f"i{n}").vector))
        model.add_position(n, model.new_bias_row())
    # Learn a little first so biases and accumulators are not at their priors.
    model.run(np.array([[OP_LEARN, n % 5, (n * 2) % 5, n % 5, n % 2] for n in range(20)], dtype=np.int64))
    before = [model.users.copy(), model.items.copy(), model.positions.copy(), model.global_bias.copy()]

    ops = np.array([[OP_SCORE, n % 5, (n * 3) % 5, (n * 7) % 5, 1] for n in range(40)], dtype=np.int64)
    scores = model.run(ops)

    after = [model.users, model.items, model.positions, model.global_bias]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new, old)
    assert np.all((scores > 0) & (scores < 1))
    # Each score is the model's current prediction: the Python learner, given the same parameters, agrees.
    for n, item_id in enumerate(side.items):
        side.items[item_id].vector = model.items[n, :8].copy()
        side.items[item_id].bias.value = model.items[n, ITEM_BIAS]
        side.position(n).value = model.positions[n, BIAS_VALUE]
    side.global_bias.value = model.global_bias[BIAS_VALUE]
    expected = [ranker.score(model.users[op[1]], f"i{op[2]}", int(op[3])) for op in ops]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)


def one_of_each(cfg: LearnerConfig) -> ModelArrays:
    """A dim-4 model with one user, one item and one position term (all row 0)."""
    model = ModelArrays(cfg)
    model.add_user("u", model.new_user_row())
    model.add_item("i", model.new_item_row(np.full(4, 0.1)))
    model.add_position(0, model.new_bias_row())
    return model


def test_bad_batch_is_rejected_whole() -> None:
    model = one_of_each(config(4))
    before = [model.users.copy(), model.items.copy(), model.positions.copy(), model.global_bias.copy()]
    bad_batches = [
        [[OP_LEARN, 0, 0, 0, 1], [OP_LEARN, 1, 0, 0, 1]],  # user row not added
        [[OP_LEARN, 0, 0, 0, 1], [OP_LEARN, 0, -1, 0, 1]],  # negative row
        [[OP_LEARN, 0, 0, 0, 1], [OP_LEARN, 0, 0, 1, 0]],  # position row not added
        [[OP_LEARN, 0, 0, 0, 1], [OP_LEARN, 0, 0, 0, 2]],  # label not 0/1
        [[OP_LEARN, 0, 0, 0, 1], [OP_LEARN_FN, 0, 0, 0, -1]],  # label not 0/1
        [[OP_LEARN, 0, 0, 0, 1], [7, 0, 0, 0, 0]],  # unknown op
        [[OP_LEARN, 0, 0, 0, 1], [OP_QUERY_HINT, 0, 0, 0, 0]],  # no hint rows given
    ]
    bad_hints = [
        ([[OP_LEARN, 0, 0, 0, 1], [OP_QUERY_HINT, 0, 1, 0, 0]], np.zeros((1, 4))),  # beyond the hints given
        ([[OP_QUERY_HINT, 0, 0, 0, 0]], np.zeros((1, 3))),  # hints of the wrong width
    ]
    for batch, hints in [(batch, None) for batch in bad_batches] + bad_hints:
        with pytest.raises(ValueError):
            model.run(np.array(batch, dtype=np.int64), hints=hints)
    for old, new in zip(before, [model.users, model.items, model.positions, model.global_bias], strict=True):
        np.testing.assert_array_equal(new, old)
    assert model.run(np.zeros((0, 5), dtype=np.int64)).shape == (0,)


def test_query_hint_moves_only_the_user_towards_the_query() -> None:
    model = one_of_each(config(4))
    hint = np.array([[1.0, -0.5, 0.0, 0.25]])
    before = [model.items.copy(), model.positions.copy(), model.global_bias.copy(), model.text.copy()]
    first, second = (model.run(np.array([[OP_QUERY_HINT, 0, 0, 0, 0]], dtype=np.int64), hints=hint)[0]
                     for _ in range(2))
    assert first == 0.5 and second > first  # the user now likes what the query asks for
    user = model.users[0]
    assert user[:4] @ hint[0] > 0 and user[2] == 0.0 and user[2 * 4] == 0.0  # no update counted
    for old, new in zip(before, [model.items, model.positions, model.global_bias, model.text], strict=True):
        np.testing.assert_array_equal(new, old)


def test_compile_kernel() -> None:
    assert compile_kernel() >= 0.0


def test_ftrl_keeps_weak_biases_at_exactly_zero_and_rows_of_before_z_are_upgraded() -> None:
    cfg = LearnerConfig(dim=4, bias_optimizer="ftrl", ftrl_l1=5.0)
    model = ModelArrays(cfg)
    model.add_user("u", model.new_user_row())
    model.add_item("i", model.new_item_row(np.full(4, 0.1)))
    model.add_position(1, model.new_bias_row())
    model.run(np.array([[OP_LEARN, 0, 0, 0, n % 2] for n in range(6)], dtype=np.int64))
    row = model.items[0]
    assert row[ITEM_BIAS] == 0.0 and row[ITEM_BIAS_Z] != 0.0  # |z| <= l1: the weight stays 0
    assert row[ITEM_BIAS_ACCUM] > cfg.init_accumulator
    # A row written before rows had z (one column shorter) gets z derived from value and accumulator.
    old_bias = np.array([0.7, 2.0, 3.0])
    upgraded = model.upgraded(old_bias, BIAS_WIDTH)
    assert list(upgraded[:3]) == [0.7, 2.0, 3.0] and upgraded[BIAS_Z] == cfg.ftrl_z(0.7, 2.0)
    item = model.items[0].copy()
    old_item = np.concatenate([item[:ITEM_BIAS_Z], item[ITEM_UPDATES:]])
    np.testing.assert_array_equal(model.upgraded(old_item, len(item))[:ITEM_BIAS_Z], item[:ITEM_BIAS_Z])
    assert model.upgraded(item, len(item)) is item  # current rows are left as they are


@pytest.mark.parametrize("user_update", ["newton", "gradient"])
def test_user_rows_keep_a_symmetric_covariance_and_state_keeps_its_upper_triangle(user_update: str) -> None:
    """The learner writes a user's row back to Flink state after every call the user learned in: a Newton
    user's covariance goes there as its upper triangle (UserCodec.stored), which is lossless only if every
    update keeps the matrix exactly symmetric."""
    cfg = config(8, user_update=user_update)
    codec = UserCodec(cfg)
    rng = np.random.default_rng(11)
    model = ModelArrays(cfg, capacity=4)
    stream = random_stream(rng, n_ops=3000, n_users=30, n_items=20, n_positions=5)
    ops = np.zeros((len(stream), 5), dtype=np.int64)
    for n, (kind, user_id, item_id, position, label, _) in enumerate(stream):
        if user_id not in model.user_rows:
            model.add_user(user_id, codec.new())
        if item_id not in model.item_rows:
            model.add_item(item_id, model.new_item_row(*ItemSide(cfg).initial_state(item_id)))
        if position not in model.position_rows:
            model.add_position(position, model.new_bias_row())
        ops[n] = (kind if kind != OP_QUERY_HINT else OP_LEARN, model.user_rows[user_id], model.item_rows[item_id],
                  model.position_rows[position], label)
    model.run(ops, np.array([op[5] for op in stream]), rng.normal(0.0, 0.5, (len(stream), 8)))
    rows = model.users[: model.n_users]
    stored = codec.stored(rows)
    if user_update == "newton":
        covariances = rows[:, 2 * 8 + 1 :].reshape(-1, 8, 8)
        assert (covariances != np.eye(8) * cfg.user_prior_variance).any()  # the stream moved them
        assert np.array_equal(covariances, covariances.transpose(0, 2, 1))  # bit for bit
        assert stored.shape == (model.n_users, 2 * 8 + 1 + 8 * 9 // 2)
    else:
        assert stored.shape == rows.shape
    for row, kept in zip(rows, stored, strict=True):
        assert np.array_equal(codec.from_bytes(kept.tobytes()), row)
        assert np.array_equal(codec.from_bytes(row.tobytes()), row)  # rows stored whole before still load
