"""The per-example learner math of `udfs.learner_math.OnlineRanker`, compiled with numba.

Same model, same update order, same results (within float summation order in the dot product):

    p(click) = sigmoid(user · item + item_bias + position_term + global_bias
                       + [search request] (query_title_weight * similarity + search_bias))

then one step on the user vector (a Newton step on its Gaussian posterior, whose variance also
moderates the score; or AdaGrad's), one AdaGrad step on the item vector (with L2; or FTRL-Proximal, see
`LearnerConfig.vector_damping`), the item bias, the position
term, the global bias and, for a search request, the query-title weight and the search bias, in that
order. `OnlineRanker` pays Python and numpy call overhead several
times per example; here a whole batch of operations runs in one compiled call.

Layouts. Every entity is one float64 row of a 2-D array, so a batch refers to entities by row index
(plain integers a compiled loop can use) and nothing is allocated per example:

    user row      length 2*dim+1(+dim*dim)   [vector(dim) | accum(dim) | updates | covariance]
                  identical to `UserCodec`'s layout (Flink keyed state stores `UserCodec.stored`
                  rows: the covariance's upper triangle; `UserCodec.from_bytes` reads them); the
                  posterior covariance (row-major) only for Newton users (LearnerConfig.user_update).
    item row      length 2*dim+3   [vector(dim) | accum(dim) | bias | bias_accum | updates]
    bias row      length 3         [value | accum | updates]
                  for position terms (one row each) and the global bias (a single row of its own).
    op row        int64, length 5  [OP, USER_ROW, ITEM_ROW, POSITION_ROW, LABEL]
                  OP_SCORE scores only; OP_LEARN scores, then learns from LABEL (0 or 1);
                  OP_LEARN_FN learns as OP_LEARN with fake-negative weights (Ktena et al. 2019):
                  the gradient is scaled by (1 - p)(1 + p) for a label 0 (an impression learned as a
                  negative when it is shown) and by (1 + p) for a label 1 (its click, learned again
                  as a positive when it arrives), p the pre-update score.
                  OP_QUERY_HINT learns the user side only, from a search: ITEM_ROW is a row of `hints`
                  (the query brought into item space by the title map, udfs.text_features), and the
                  user takes one step as if it had clicked an item with that vector, its gradient
                  scaled by `hint_weight` (a search says what the user wants before any click does).
                  POSITION_ROW and LABEL are not used.
    similarity    float64, one per op: the cosine of the query's and the item title's text
                  embeddings (udfs.text_features) for a search request, NaN for a recommendation
                  request (no query: neither text term applies).
    text rows     (2, 3) bias rows: TEXT_WEIGHT (the query-title weight) and TEXT_SEARCH (the
                  search bias).

Update counts are stored as float64 (exact up to 2**53), as `UserCodec` already does for users.

Operations run strictly in order and each sees the updates of all earlier ones, so a batch gives the
same parameters as the same examples fed one by one to `OnlineRanker`.
"""

from __future__ import annotations

import ctypes
import math
import time

import numba
import numpy as np

from udfs.learner_math import LearnerConfig, UserCodec, ftrl_z
from udfs.native import cached_cfunc, cached_njit

# Op row columns and kinds.
OP_KIND = 0
OP_USER = 1
OP_ITEM = 2
OP_POSITION = 3
OP_LABEL = 4
OP_WIDTH = 5
OP_SCORE = 0
OP_LEARN = 1
OP_LEARN_FN = 2
OP_QUERY_HINT = 3
OP_KINDS = (OP_SCORE, OP_LEARN, OP_LEARN_FN, OP_QUERY_HINT)

# Bias row columns (position terms and the global bias).
BIAS_VALUE = 0
BIAS_ACCUM = 1
BIAS_UPDATES = 2
BIAS_Z = 3  # FTRL-Proximal's z, kept consistent with value and accum under AdaGrad too (see _bias_step)
BIAS_WIDTH = 4

# Rows of the text parameters (bias rows).
TEXT_WEIGHT = 0
TEXT_SEARCH = 1
TEXT_ROWS = 2

# Item row columns after the vector and its accumulator (counted from the end of the row, so they
# do not depend on dim): row[ITEM_BIAS], row[ITEM_BIAS_ACCUM], row[ITEM_BIAS_Z], row[ITEM_UPDATES].
ITEM_BIAS = -4
ITEM_BIAS_ACCUM = -3
ITEM_BIAS_Z = -2
ITEM_UPDATES = -1

# Bias optimizers (LearnerConfig.bias_optimizer).
ADAGRAD = 0
FTRL = 1


def user_row_width(dim: int, newton: bool = False) -> int:
    """Length of a user row: vector, accumulator, update count, covariance if `newton` (as `UserCodec`)."""
    return 2 * dim + 1 + (dim * dim if newton else 0)


def item_row_width(dim: int) -> int:
    """Length of an item row: vector, accumulator, bias, bias accumulator, update count."""
    return 2 * dim + 4




@cached_njit
def _sigmoid(z: float) -> float:
    # As learner_math.sigmoid: exp of a non-positive number only, so it never overflows.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


_ftrl_z = cached_njit(ftrl_z)


@cached_njit
def _bias_step(row, at, z_at, grad, optimizer, rate, beta, l1, l2):
    # One step of a scalar at row[at] (value), row[at + 1] (accum), row[z_at] (z): AdaGrad, or
    # FTRL-Proximal per coordinate (McMahan et al. 2013) with alpha = rate. Under AdaGrad, z follows the
    # value, so a model can switch to FTRL at any time (and z can be derived for old records: ftrl_z).
    accum = row[at + 1] + grad * grad
    if optimizer == FTRL:
        sigma = (math.sqrt(accum) - math.sqrt(row[at + 1])) / rate
        z = row[z_at] + grad - sigma * row[at]
        row[z_at] = z
        row[at + 1] = accum
        if abs(z) <= l1:
            row[at] = 0.0
        else:
            row[at] = -(z - (l1 if z > 0 else -l1)) / ((beta + math.sqrt(accum)) / rate + l2)
    else:
        row[at + 1] = accum
        row[at] -= rate * grad / math.sqrt(accum)
        row[z_at] = _ftrl_z(row[at], accum, rate, beta, l1, l2)


@cached_njit
def _covariance_times(user, vector, dim, sv):
    # sv = S v for the user's covariance S (row-major after the update count); returns v^T S v.
    base = 2 * dim + 1
    vsv = 0.0
    for a in range(dim):
        row = 0.0
        for b in range(dim):
            row += user[base + a * dim + b] * vector[b]
        sv[a] = row
        vsv += vector[a] * row
    return vsv


@cached_njit
def _newton_step(user, dim, error, curvature, sv, vsv):
    # learner_math.newton_user_step on a user row, from sv = S v and vsv = v^T S v before the step:
    # Sherman-Morrison on the covariance, then the mean moves by -S' v * error (S' v = sv / (1 +
    # curvature vsv)).
    base = 2 * dim + 1
    denominator = 1.0 + curvature * vsv
    shrink = curvature / denominator
    for a in range(dim):  # the same value into both triangles: the covariance stays exactly symmetric
        for b in range(a, dim):
            step = shrink * (sv[a] * sv[b])
            user[base + a * dim + b] -= step
            if b != a:
                user[base + b * dim + a] -= step
    move = error / denominator
    for a in range(dim):
        user[a] -= move * sv[a]


@cached_njit
def _hint_step(user, hint, dim, learning_rate, l2, damping, hint_weight, newton, sv, scores, i):
    # The user half of OP_LEARN for label 1 against `hint` as the item vector (no biases: they are the
    # same for every candidate of the request, so they say nothing about what this user wants).
    dot = 0.0
    for k in range(dim):
        dot += user[k] * hint[k]
    score = _sigmoid(dot)
    scores[i] = score
    error = hint_weight * (score - 1.0)
    if newton:
        vsv = _covariance_times(user, hint, dim, sv)
        _newton_step(user, dim, error, hint_weight * score * (1.0 - score), sv, vsv)
        return
    for k in range(dim):
        u = user[k]
        grad = error * hint[k] + l2 * u
        accum = user[dim + k] + grad * grad
        user[dim + k] = accum
        user[k] = u - learning_rate * grad / (damping + math.sqrt(accum))


@cached_njit
def _apply_ops(ops, users, items, positions, global_bias, text, similarity, hints, learning_rate, bias_learning_rate,
               l2, damping, optimizer, beta, l1, bias_l2, hint_weight, newton, scores):
    # The update itself, without checks (callers check the batch first).
    dim = hints.shape[1]
    item_bias = 2 * dim
    item_updates = 2 * dim + 3
    old_user = np.empty(dim)
    sv = np.empty(dim)
    for i in range(ops.shape[0]):
        user = users[ops[i, OP_USER]]
        if ops[i, OP_KIND] == OP_QUERY_HINT:
            _hint_step(user, hints[ops[i, OP_ITEM]], dim, learning_rate, l2, damping, hint_weight, newton, sv,
                       scores, i)
            continue
        item = items[ops[i, OP_ITEM]]
        term = positions[ops[i, OP_POSITION]]

        dot = 0.0
        for k in range(dim):
            dot += user[k] * item[k]
        z = dot + item[item_bias] + term[BIAS_VALUE] + global_bias[BIAS_VALUE]
        sim = similarity[i]
        search = sim == sim  # NaN: not a search request
        if search:
            z += text[TEXT_WEIGHT, BIAS_VALUE] * sim + text[TEXT_SEARCH, BIAS_VALUE]
        vsv = 0.0
        if newton:  # learner_math.moderated; sv is S v for the step below
            vsv = _covariance_times(user, item, dim, sv)
            z /= math.sqrt(1.0 + math.pi * max(vsv, 0.0) / 8.0)
        score = _sigmoid(z)
        scores[i] = score
        kind = ops[i, OP_KIND]
        if kind == OP_SCORE:
            continue

        error = score - float(ops[i, OP_LABEL])
        weight = 1.0
        if kind == OP_LEARN_FN:  # learner_math.fake_negative_weight
            weight = (1.0 + score) if ops[i, OP_LABEL] == 1 else (1.0 - score) * (1.0 + score)
        error *= weight
        for k in range(dim):
            old_user[k] = user[k]
        if newton:
            _newton_step(user, dim, error, weight * score * (1.0 - score), sv, vsv)
        for k in range(dim):
            u = old_user[k]
            v = item[k]
            item_grad = error * u + l2 * v
            if not newton:
                user_grad = error * v + l2 * u
                user_accum = user[dim + k] + user_grad * user_grad
                user[dim + k] = user_accum
                user[k] = u - learning_rate * user_grad / (damping + math.sqrt(user_accum))
            item_accum = item[dim + k] + item_grad * item_grad
            item[dim + k] = item_accum
            item[k] = v - learning_rate * item_grad / (damping + math.sqrt(item_accum))
        user[2 * dim] += 1.0
        item[item_updates] += 1.0

        # Bias.step, for the item bias, the position term and the global bias in that order.
        _bias_step(item, item_bias, item_bias + 2, error, optimizer, bias_learning_rate, beta, l1, bias_l2)
        _bias_step(term, BIAS_VALUE, BIAS_Z, error, optimizer, bias_learning_rate, beta, l1, bias_l2)
        term[BIAS_UPDATES] += 1.0
        _bias_step(global_bias, BIAS_VALUE, BIAS_Z, error, optimizer, bias_learning_rate, beta, l1, bias_l2)
        global_bias[BIAS_UPDATES] += 1.0
        if search:
            weight = text[TEXT_WEIGHT]
            grad = error * sim
            if grad != 0.0:  # a zero gradient would leave the value as it is anyway
                _bias_step(weight, BIAS_VALUE, BIAS_Z, grad, optimizer, bias_learning_rate, beta, l1, bias_l2)
            weight[BIAS_UPDATES] += 1.0
            bias = text[TEXT_SEARCH]
            _bias_step(bias, BIAS_VALUE, BIAS_Z, error, optimizer, bias_learning_rate, beta, l1, bias_l2)
            bias[BIAS_UPDATES] += 1.0


_F64P = numba.types.CPointer(numba.types.float64)
_I64P = numba.types.CPointer(numba.types.int64)
_NATIVE_SIGNATURE = numba.types.void(
    _I64P, numba.types.int64, _F64P, numba.types.int64, numba.types.int64, _F64P, numba.types.int64,
    numba.types.int64, _F64P, numba.types.int64, _F64P, _F64P, _F64P, _F64P, numba.types.int64, numba.types.float64,
    numba.types.float64, numba.types.float64, numba.types.float64, numba.types.int64, numba.types.float64,
    numba.types.float64, numba.types.float64, numba.types.float64, numba.types.int64, _F64P,
)


@cached_cfunc(_NATIVE_SIGNATURE)
def _run_ops_native(ops_p, n_ops, users_p, n_users, user_width, items_p, n_items, item_width, positions_p,
                    n_positions, global_p, text_p, similarity_p, hints_p, n_hints, learning_rate, bias_learning_rate,
                    l2, damping, optimizer, beta, l1, bias_l2, hint_weight, newton, scores_p):
    # The kernel over raw pointers, called through ctypes. Why not the njit function: numba hands
    # numpy arguments to compiled code wrapped in reference-counted holders whose release takes the
    # interpreter lock with PyGILState_Ensure, and under PyFlink's thread mode (PemJa) that call
    # waits forever for the lock its own thread holds (seen: the job hung on the first call).
    # Arrays made from pointers have no such holder.
    ops = numba.carray(ops_p, (n_ops, OP_WIDTH))
    users = numba.carray(users_p, (n_users, user_width))
    items = numba.carray(items_p, (n_items, item_width))
    positions = numba.carray(positions_p, (n_positions, BIAS_WIDTH))
    global_bias = numba.carray(global_p, (BIAS_WIDTH,))
    text = numba.carray(text_p, (TEXT_ROWS, BIAS_WIDTH))
    similarity = numba.carray(similarity_p, (n_ops,))
    hints = numba.carray(hints_p, (n_hints, (item_width - 4) // 2))
    scores = numba.carray(scores_p, (n_ops,))
    _apply_ops(ops, users, items, positions, global_bias, text, similarity, hints, learning_rate, bias_learning_rate,
               l2, damping, optimizer, beta, l1, bias_l2, hint_weight, newton, scores)



def compile_kernel() -> float:
    """Load (or compile) the native kernel and run it once; returns the seconds it took.

    Call it from an operator's open() so the first batch does not pay for it. `cfunc` compiles when
    this module is imported, from numba's disk cache when it can.
    """
    started = time.perf_counter()
    model = ModelArrays(LearnerConfig(dim=1), capacity=1)
    model.add_user("u", model.new_user_row())
    model.add_item("i", model.new_item_row(np.zeros(1)))
    model.add_position(1, model.new_bias_row())
    model.run(np.array([[OP_LEARN, 0, 0, 0, 1]], dtype=np.int64))
    return time.perf_counter() - started


def grown_rows(array: np.ndarray, needed: int) -> np.ndarray:
    """`array` with at least `needed` rows (same dtype and row shape): capacity doubles, rows are copied."""
    if needed <= array.shape[0]:
        return array
    capacity = max(1, array.shape[0])
    while capacity < needed:
        capacity *= 2
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


class ModelArrays:
    """All parameters of one learner replica as row arrays, with id -> row maps.

    `users`, `items` and `positions` are the full backing arrays (capacity rows, of which the first
    `n_users`, `n_items`, `n_positions` are in use); they are replaced by larger copies when they
    grow, so hold row indices, not views, across `add_*` calls.
    """

    def __init__(self, config: LearnerConfig, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.config = config
        self.codec = UserCodec(config)
        self.users = np.zeros((capacity, user_row_width(config.dim, config.newton_users)))
        self.items = np.zeros((capacity, item_row_width(config.dim)))
        self.positions = np.zeros((capacity, BIAS_WIDTH))
        self.n_users = 0
        self.n_items = 0
        self.n_positions = 0
        self.global_bias = self.initial_global_bias()
        self.text = np.array([self.new_bias_row(), self.new_bias_row()])
        self.user_rows: dict[str, int] = {}
        self.item_rows: dict[str, int] = {}
        self.position_rows: dict[int, int] = {}

    # Rows for new entities: the same priors as UserCodec.new and ItemSide.

    def new_user_row(self) -> np.ndarray:
        """An unseen user: zero vector (only biases score it), accumulator at init_accumulator, a Newton
        user's covariance at the prior's."""
        return self.codec.new()

    def new_item_row(self, vector: np.ndarray, vector_accumulator: float | None = None) -> np.ndarray:
        """A new item starting from `vector` (e.g. `ItemSide.initial_state`), bias 0, fresh accumulators
        (the vector's at `vector_accumulator`, by default init_accumulator)."""
        dim = self.config.dim
        vector = np.asarray(vector, dtype=np.float64)
        if vector.shape != (dim,):
            raise ValueError(f"item vector must have shape ({dim},), got {vector.shape}")
        row = np.zeros(item_row_width(dim))
        row[:dim] = vector
        row[dim : 2 * dim] = self.config.init_accumulator if vector_accumulator is None else vector_accumulator
        row[ITEM_BIAS_ACCUM] = self.config.init_accumulator
        return row

    def new_bias_row(self) -> np.ndarray:
        """A new position term: 0, accumulator at init_accumulator, no updates."""
        return self.bias_row(0.0, self.config.init_accumulator, 0)

    def initial_global_bias(self) -> np.ndarray:
        """The global bias before learning: logit(prior_ctr), as `ItemSide` starts it."""
        prior = self.config.prior_ctr
        return self.bias_row(math.log(prior / (1 - prior)), self.config.init_accumulator, 0)

    def bias_row(self, value: float, accum: float, updates: float) -> np.ndarray:
        """A bias row, its FTRL z derived from value and accumulator."""
        return np.array([value, accum, float(updates), self.config.ftrl_z(value, accum)])

    def upgraded(self, values: np.ndarray, width: int) -> np.ndarray:
        """A row stored before rows had FTRL's z (one column shorter), with z derived; others as they are."""
        if values.shape[0] != width - 1:
            return values
        if width == BIAS_WIDTH:
            return self.bias_row(*values)
        z = self.config.ftrl_z(values[ITEM_BIAS + 1], values[ITEM_BIAS_ACCUM + 1])
        return np.concatenate([values[:-1], [z], values[-1:]])

    # Appending entities.

    @staticmethod
    def _checked_row(row: np.ndarray, width: int, kind: str) -> np.ndarray:
        row = np.asarray(row, dtype=np.float64)
        if row.shape != (width,):
            raise ValueError(f"{kind} row must have shape ({width},), got {row.shape}")
        return row

    def add_user(self, user_id: str, row: np.ndarray) -> int:
        """Append a user row (e.g. from `UserCodec.from_bytes` or `new_user_row`); returns its row index."""
        if user_id in self.user_rows:
            raise KeyError(f"user {user_id!r} already has row {self.user_rows[user_id]}")
        row = self._checked_row(row, self.users.shape[1], "user")
        index = self.n_users
        self.users = grown_rows(self.users, index + 1)
        self.users[index] = row
        self.n_users = index + 1
        self.user_rows[user_id] = index
        return index

    def add_item(self, item_id: str, row: np.ndarray) -> int:
        """Append an item row (e.g. `new_item_row(...)`); returns its row index."""
        if item_id in self.item_rows:
            raise KeyError(f"item {item_id!r} already has row {self.item_rows[item_id]}")
        row = self._checked_row(row, self.items.shape[1], "item")
        index = self.n_items
        self.items = grown_rows(self.items, index + 1)
        self.items[index] = row
        self.n_items = index + 1
        self.item_rows[item_id] = index
        return index

    def add_position(self, position: int, row: np.ndarray) -> int:
        """Append a position-term row (e.g. `new_bias_row()`); returns its row index."""
        if position in self.position_rows:
            raise KeyError(f"position {position!r} already has row {self.position_rows[position]}")
        row = self._checked_row(row, BIAS_WIDTH, "position")
        index = self.n_positions
        self.positions = grown_rows(self.positions, index + 1)
        self.positions[index] = row
        self.n_positions = index + 1
        self.position_rows[position] = index
        return index

    def forget_users(self) -> None:
        """Drop every cached user row (their values live on in Flink state, which refills the cache)."""
        self.n_users = 0
        self.user_rows = {}

    def forget_items(self) -> None:
        """Drop every cached item row (as `forget_users`)."""
        self.n_items = 0
        self.item_rows = {}

    def run(self, ops: np.ndarray, similarity: np.ndarray | None = None, hints: np.ndarray | None = None
            ) -> np.ndarray:
        """Run a batch of op rows (shape (n, 5)) in one compiled call; returns the n pre-update scores.

        `similarity[i]` is op i's query-title similarity, NaN for a recommendation request (the
        default: every op). `hints` (shape (h, dim)) are the vectors OP_QUERY_HINT ops refer to. Only
        rows in use are visible to the kernel, so an op naming a row not yet added raises ValueError
        (and the batch changes nothing).
        """
        ops = np.ascontiguousarray(ops, dtype=np.int64)
        if ops.ndim != 2 or ops.shape[1] != OP_WIDTH:
            raise ValueError(f"ops must have shape (n, {OP_WIDTH}), got {ops.shape}")
        if similarity is None:
            similarity = np.full(ops.shape[0], np.nan)
        similarity = np.ascontiguousarray(similarity, dtype=np.float64)
        if similarity.shape != (ops.shape[0],):
            raise ValueError(f"similarity must have shape ({ops.shape[0]},), got {similarity.shape}")
        cfg = self.config
        hints = np.ascontiguousarray(np.zeros((0, cfg.dim)) if hints is None else hints, dtype=np.float64)
        if hints.ndim != 2 or hints.shape[1] != cfg.dim:
            raise ValueError(f"hints must have shape (h, {cfg.dim}), got {hints.shape}")
        _check_rows(ops, self.n_users, self.n_items, self.n_positions, hints.shape[0])
        scores = np.empty(ops.shape[0])
        users, items, positions = self.users, self.items, self.positions
        hint_rows = hints if hints.shape[0] else np.zeros((1, cfg.dim))  # a valid address even when empty
        _NATIVE_CALL(
            ops.ctypes.data, ops.shape[0], users.ctypes.data, self.n_users, users.shape[1], items.ctypes.data,
            self.n_items, items.shape[1], positions.ctypes.data, self.n_positions, self.global_bias.ctypes.data,
            self.text.ctypes.data, similarity.ctypes.data, hint_rows.ctypes.data, hints.shape[0],
            float(cfg.learning_rate), float(cfg.bias_learning_rate), float(cfg.l2), float(cfg.vector_damping),
            FTRL if cfg.bias_optimizer == "ftrl" else ADAGRAD, float(cfg.ftrl_beta), float(cfg.ftrl_l1),
            float(cfg.ftrl_l2), float(cfg.query_hint_weight), int(cfg.newton_users), scores.ctypes.data,
        )
        return scores


# The native kernel through ctypes with plain addresses (see _run_ops_native for why). PYFUNCTYPE keeps the
# interpreter lock for the call. In thread mode one interpreter serves every Python operator of the
# TaskManager, and the learner is the job's bottleneck: a lock released for its kernels went to the parse,
# and the learner then waited to get it back (`bench --kafka`, one run each: 16.3k against 20.1k impressions/s
# once running, the learner's stages 41.7 against 34.0 µs per impression).
# The parse's kernels release it instead (udfs.event_lines.kernel_entry).
_P, _N, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_NATIVE_CALL = ctypes.PYFUNCTYPE(None, _P, _N, _P, _N, _N, _P, _N, _N, _P, _N, _P, _P, _P, _P, _N, _F, _F, _F, _F, _N,
                                 _F, _F, _F, _F, _N, _P)(
    _run_ops_native.address)


def _check_rows(ops: np.ndarray, n_users: int, n_items: int, n_positions: int, n_hints: int = 0) -> None:
    """Validate a batch before the native kernel touches anything: it cannot raise, must never index
    outside the arrays, and a rejected batch should leave the model unchanged rather than half-applied."""
    if not len(ops):
        return
    kinds, labels = ops[:, OP_KIND], ops[:, OP_LABEL]
    if not np.isin(kinds, OP_KINDS).all():
        raise ValueError("op kind must be OP_SCORE (0), OP_LEARN (1), OP_LEARN_FN (2) or OP_QUERY_HINT (3)")
    hint = kinds == OP_QUERY_HINT
    for column, limit, name, which in ((OP_USER, n_users, "user", slice(None)), (OP_ITEM, n_items, "item", ~hint),
                                       (OP_ITEM, n_hints, "hint", hint), (OP_POSITION, n_positions, "position", ~hint)):
        rows = ops[which, column]
        if len(rows) and (rows.min() < 0 or rows.max() >= limit):
            raise ValueError(f"{name} row out of range")
    if not np.isin(labels[(kinds != OP_SCORE) & ~hint], (0, 1)).all():
        raise ValueError("label must be 0 or 1")
