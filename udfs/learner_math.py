"""The online ranking model: logistic loss on a dot product; users learn by Bayesian online logistic
regression (a Newton step on a Gaussian posterior), items and scalars by AdaGrad (or FTRL) per coordinate.

    p(click) = sigmoid(user · item + item_bias + position_term + global_bias
                       + [search request] (query_title_weight * similarity(query, title) + search_bias))

With `user_update="newton"` (the default) every user carries a Gaussian posterior over its vector: the
vector is the mean, S (dim x dim) the covariance, starting at `user_prior_variance` * I. An example with
item vector v and predicted p adds p(1-p) v v^T to the precision (S by Sherman-Morrison) and moves the
mean by -S (p - y) v: the Laplace approximation learned online (Spiegelhalter & Lauritzen 1990, as in
Chapelle & Li 2011's Bayesian logistic regression, with the full covariance instead of its diagonal).
A user with little history thus takes large steps along what it has seen and none along what it has
not, instead of AdaGrad's per-coordinate steps (whose first step is sign(gradient) times the rate, whatever
the item vector's shape). The predicted probability integrates over the posterior (MacKay 1992's probit
approximation): p = sigmoid(z / sqrt(1 + pi v^T S v / 8)), so an uncertain user's logit is pulled
towards 0, as the expectation of sigmoid over an uncertain logit is; scores of users with much and
little history become comparable (measured with `freshrank evaluate`, see the README). The residual of
every step (p - y, and the fake-negative weights) is taken at that moderated score, the one the example
was scored with.

`similarity` is the cosine of the query's and the item title's embeddings by a pretrained text
encoder (udfs.text_features); a recommendation request has no query and neither text term.
Users live in Flink keyed state as one float64 array `[vector | accum | updates | covariance]` (see
`UserCodec`; no covariance with `user_update="gradient"`); item-side parameters (item vectors and
biases, position terms, global bias) live in an `ItemSide` object owned by each learner subtask.
Every step scores first, then learns (progressive validation), and returns the score it computed before the update.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

DECIDED_MODE, IMPRESSION_MODE = "decided", "impression"
LEARNING_MODES = (DECIDED_MODE, IMPRESSION_MODE)
OPTIMIZERS = ("adagrad", "ftrl")
NEWTON_UPDATE, GRADIENT_UPDATE = "newton", "gradient"
USER_UPDATES = (NEWTON_UPDATE, GRADIENT_UPDATE)


@dataclass(frozen=True)
class LearnerConfig:
    """Model hyper-parameters; names carry their meaning, not their units (all unitless)."""

    dim: int = 32
    # Step of item vectors (and of user vectors with user_update "gradient").
    learning_rate: float = 0.2
    bias_learning_rate: float = 0.2
    l2: float = 1e-4
    init_accumulator: float = 0.3
    # The vector accumulator of an item that starts from its catalog embedding: a start that carries
    # information should move less than a random one (AdaGrad's steps shrink as it grows). Measured with
    # `freshrank evaluate`, as init_accumulator (0.1 before users learned by Newton steps).
    catalog_init_accumulator: float = 4.0
    init_std: float = 0.1
    # Items with a catalog embedding start larger than random ones: their start carries information, so
    # users' vectors should learn along it from the first click (measured with `freshrank evaluate`).
    embedding_init_std: float = 0.5
    projection_seed: int = 20261128
    # The global bias starts at logit(prior_ctr): before anything is learned, predict a typical
    # e-commerce click rate rather than 0.5.
    prior_ctr: float = 0.05
    # When an example is learned: DECIDED_MODE, once its label is decided (a positive at its click, a
    # negative when its window closes); IMPRESSION_MODE, as a negative the moment it is shown and again
    # as a positive when its click arrives, with fake-negative weights (udfs.learner_kernel).
    learning_mode: str = "impression"
    # The optimizer of the scalar parameters (item biases, position terms, global bias, text weights):
    # "adagrad", or "ftrl" (FTRL-Proximal, McMahan et al. 2013, per coordinate, alpha =
    # bias_learning_rate, with L1 and L2).
    bias_optimizer: str = "adagrad"
    # The optimizer of user and item vectors: "adagrad", or "ftrl" (FTRL-Proximal with alpha =
    # learning_rate, beta = ftrl_beta and L2 = ftrl_l2; no L1, see vector_damping).
    vector_optimizer: str = "adagrad"
    ftrl_beta: float = 1.0
    ftrl_l1: float = 0.0
    ftrl_l2: float = 0.0
    # A search tells what its user wants before any click does: the query, brought into item space by
    # the title map, is learned as one weak positive for the user's vector (0: off; udfs.learner_kernel
    # OP_QUERY_HINT). Needs the text encoder.
    query_hint_weight: float = 2.0
    # How a user's vector learns: NEWTON_UPDATE (a Gaussian posterior per user, see the module doc; its
    # prior covariance is user_prior_variance * I, and scores integrate over it), or GRADIENT_UPDATE
    # (vector_optimizer's per-coordinate step, as item vectors learn; no covariance in state).
    user_update: str = "newton"
    user_prior_variance: float = 0.3

    def __post_init__(self) -> None:
        if self.learning_mode not in LEARNING_MODES:
            raise ValueError(f"learning_mode must be one of {', '.join(LEARNING_MODES)}, got {self.learning_mode!r}")
        if self.bias_optimizer not in OPTIMIZERS:
            raise ValueError(f"bias_optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.bias_optimizer!r}")
        if self.vector_optimizer not in OPTIMIZERS:
            raise ValueError(f"vector_optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.vector_optimizer!r}")
        if self.user_update not in USER_UPDATES:
            raise ValueError(f"user_update must be one of {', '.join(USER_UPDATES)}, got {self.user_update!r}")
        if not self.user_prior_variance > 0.0:
            raise ValueError(f"user_prior_variance must be positive, got {self.user_prior_variance!r}")
        if not self.query_hint_weight >= 0.0:
            raise ValueError(f"query_hint_weight must be at least 0, got {self.query_hint_weight!r}")

    @property
    def newton_users(self) -> bool:
        return self.user_update == NEWTON_UPDATE

    @property
    def vector_damping(self) -> float:
        """What a vector step's denominator adds to sqrt(accum): step = learning_rate * g / (damping + sqrt(n)).

        0 is AdaGrad. FTRL-Proximal without L1 has z = -w ((beta + sqrt(n)) / alpha + l2) after every
        step (by induction, from a start consistent with its vector), so its update
        w' = -z' / ((beta + sqrt(n')) / alpha + l2) is w - alpha g / (beta + sqrt(n') + alpha l2): FTRL
        exactly, from the vector and n alone, with no z to store or publish. L1 is left out for vectors:
        its dead zone would need z per coordinate, and a latent coordinate has no meaning of its own to
        make sparse.
        """
        if self.vector_optimizer == "ftrl":
            return self.ftrl_beta + self.learning_rate * self.ftrl_l2
        return 0.0

    def ftrl_z(self, value: float, accum: float) -> float:
        """FTRL's z for a scalar at `value` with accumulator `accum` under this configuration."""
        return ftrl_z(value, accum, self.bias_learning_rate, self.ftrl_beta, self.ftrl_l1, self.ftrl_l2)


def ftrl_z(value: float, accum: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    """The FTRL-Proximal z whose weight is `value` at accumulator `accum` (0 for a weight of 0, the
    middle of the L1 dead zone). Compiled as is for the kernel (udfs.learner_kernel)."""
    if value == 0.0:
        return 0.0
    scale = (beta + math.sqrt(accum)) / alpha + l2
    return -value * scale - (l1 if value > 0 else -l1)


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Bias:
    """A scalar parameter with its accumulator (AdaGrad's, or FTRL's n) and FTRL's z."""

    __slots__ = ("value", "accum", "updates", "dirty", "z")

    def __init__(self, value: float = 0.0, accum: float = 0.0, updates: int = 0, z: float = 0.0) -> None:
        self.value = value
        self.accum = accum
        self.updates = updates
        self.dirty = False
        self.z = z

    def step(self, grad: float, learning_rate: float, ftrl: tuple[float, float, float] = (1.0, 0.0, 0.0),
             optimizer: str = "adagrad") -> None:
        """AdaGrad, or FTRL-Proximal with alpha = learning_rate and `ftrl` = (beta, l1, l2); z follows
        the value under AdaGrad too (as the kernel keeps it)."""
        accum = self.accum + grad * grad
        beta, l1, l2 = ftrl
        if optimizer == "ftrl":
            sigma = (math.sqrt(accum) - math.sqrt(self.accum)) / learning_rate
            self.z += grad - sigma * self.value
            self.accum = accum
            if abs(self.z) <= l1:
                self.value = 0.0
            else:
                self.value = -(self.z - (l1 if self.z > 0 else -l1)) / ((beta + math.sqrt(accum)) / learning_rate + l2)
        else:
            self.accum = accum
            self.value -= learning_rate * grad / math.sqrt(accum)
            self.z = ftrl_z(self.value, accum, learning_rate, beta, l1, l2)
        self.updates += 1
        self.dirty = True


class ItemParams:
    """Vector, bias and their optimizer state for one item."""

    __slots__ = ("vector", "accum", "bias", "updates", "dirty")

    def __init__(self, vector: np.ndarray, accum: np.ndarray, bias: Bias, updates: int = 0) -> None:
        self.vector = vector
        self.accum = accum
        self.bias = bias
        self.updates = updates
        self.dirty = False


def stable_seed(text: str) -> int:
    """A seed from a string that is the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class ItemSide:
    """Item-side parameters of one learner replica, created on first use.

    Item vectors start from the catalog embedding projected to `dim` (a fixed Gaussian random
    projection) or, without one, from a hash-seeded Gaussian. Projections are scaled by one factor for
    the catalog known so far (`add_embedding`), so that a typical item has `embedding_init_std` per
    coordinate: an item's own norm is kept, as a longer embedding says a stronger taste (scaling every
    item to the same length cost 0.002-0.003 AUC in `freshrank evaluate`).
    """

    def __init__(self, config: LearnerConfig, embeddings: dict[str, list[float]] | None = None) -> None:
        self.config = config
        self.embeddings: dict[str, list[float]] = {}
        self._squared_norms = 0.0  # of the embeddings, for catalog_norm
        for item_id, embedding in (embeddings or {}).items():
            self.add_embedding(item_id, embedding)
        self.items: dict[str, ItemParams] = {}
        self.positions: dict[int, Bias] = {}
        prior = math.log(config.prior_ctr / (1 - config.prior_ctr))
        self.global_bias = Bias(prior, config.init_accumulator, 0, config.ftrl_z(prior, config.init_accumulator))
        self.text_weight = Bias(accum=config.init_accumulator)  # of the query-title similarity
        self.search_bias = Bias(accum=config.init_accumulator)
        self._projections: dict[int, np.ndarray] = {}

    def _projection(self, width: int) -> np.ndarray:
        matrix = self._projections.get(width)
        if matrix is None:
            rng = np.random.default_rng(self.config.projection_seed + width)
            matrix = rng.standard_normal((width, self.config.dim))
            self._projections[width] = matrix
        return matrix

    def add_embedding(self, item_id: str, embedding: list[float]) -> None:
        """Add (or replace) an item's catalog embedding; empty ones are ignored."""
        if not len(embedding):
            return
        old = self.embeddings.get(item_id)
        if old is not None:
            self._squared_norms -= math.fsum(x * x for x in old)
        self.embeddings[item_id] = embedding
        self._squared_norms += math.fsum(x * x for x in embedding)

    def catalog_norm(self) -> float:
        """Root mean square norm of the catalog's embeddings so far."""
        return math.sqrt(max(self._squared_norms, 0.0) / len(self.embeddings)) if self.embeddings else 0.0

    def initial_state(self, item_id: str) -> tuple[np.ndarray, float]:
        """A new item's vector and the accumulator its coordinates start with (catalog_init_accumulator
        for a start from the catalog, init_accumulator for the hash start)."""
        cfg = self.config
        embedding = self.embeddings.get(item_id)
        if embedding:
            # Each coordinate of the Gaussian projection has the embedding's norm as its std.
            projected = np.asarray(embedding, dtype=np.float64) @ self._projection(len(embedding))
            norm = self.catalog_norm()
            if norm > 0 and projected.any():  # a zero embedding says nothing: the hash start below
                return projected * (cfg.embedding_init_std / norm), cfg.catalog_init_accumulator
        return np.random.default_rng(stable_seed(item_id)).normal(0.0, cfg.init_std, cfg.dim), cfg.init_accumulator

    def initial_vector(self, item_id: str) -> np.ndarray:
        return self.initial_state(item_id)[0]

    def item(self, item_id: str) -> ItemParams:
        params = self.items.get(item_id)
        if params is None:
            vector, accumulator = self.initial_state(item_id)
            accum = np.full(self.config.dim, accumulator)
            params = ItemParams(vector, accum, Bias(accum=self.config.init_accumulator))
            self.items[item_id] = params
        return params

    def merge_record(self, record: dict) -> bool:
        """Average another replica's item-side snapshot record into this replica's parameters.

        Replicas learn the same item-side parameters from disjoint user shards; averaging what they
        publish keeps them close (gossip averaging). Accumulators take the maximum, so merging never
        makes steps larger. Merged parameters are not marked dirty: only learning republishes them.
        Returns whether the record was used (USER records are not item-side).
        """
        kind = record["entity_type"]
        if kind == "ITEM":
            item = self.items.get(record["entity_id"])
            remote = np.asarray(record["vector"], dtype=np.float64)
            if item is None:
                self.items[record["entity_id"]] = ItemParams(
                    remote, np.asarray(record["vector_accum"], dtype=np.float64),
                    self.bias_of(record), record["updates"])
                return True
            item.vector = (item.vector + remote) / 2
            item.accum = np.maximum(item.accum, np.asarray(record["vector_accum"], dtype=np.float64))
            bias = item.bias
        elif kind == "POSITION":
            bias = self.position(int(record["entity_id"]))
        elif kind == "GLOBAL":
            bias = self.global_bias
        else:
            return False
        bias.value = (bias.value + record["bias"]) / 2
        bias.accum = max(bias.accum, record["bias_accum"])
        bias.z = self.config.ftrl_z(bias.value, bias.accum)
        return True

    def bias_of(self, record: dict) -> Bias:
        """The scalar of a snapshot record, with its FTRL z (derived from value and accumulator when the
        record has none: written before records carried it)."""
        z = record.get("bias_z")
        return Bias(record["bias"], record["bias_accum"], record["updates"],
                    self.config.ftrl_z(record["bias"], record["bias_accum"]) if z is None else z)

    def position(self, position: int) -> Bias:
        term = self.positions.get(position)
        if term is None:
            term = Bias(accum=self.config.init_accumulator)
            self.positions[position] = term
        return term


class UserCodec:
    """Packs a user's vector, AdaGrad accumulator, update count and (Newton users) posterior covariance
    into one float64 array: `[vector | accum | updates | covariance (dim x dim, row-major)]`.

    The covariance is symmetric (the learner's updates keep it so exactly), so Flink state stores only
    its upper triangle (`stored`, read back by `from_bytes`): a Newton user's row is 4.7 KB there
    instead of 8.7 KB at dimension 32, and the learner writes a user's row back after every call in
    which the user learned."""

    def __init__(self, config: LearnerConfig) -> None:
        self.dim = config.dim
        self.init_accumulator = config.init_accumulator
        self.newton = config.newton_users
        self.prior_variance = config.user_prior_variance
        base, dim = 2 * self.dim + 1, self.dim
        upper = [(a, b) for a in range(dim) for b in range(a, dim)] if self.newton else []
        # the row's values state keeps, and where each lower-triangle value's mirror is
        self._stored = np.array([*range(base), *(base + a * dim + b for a, b in upper)], dtype=np.int64)
        self._lower = np.array([base + b * dim + a for a, b in upper if a != b], dtype=np.int64)
        self._mirror = np.array([base + a * dim + b for a, b in upper if a != b], dtype=np.int64)

    @property
    def stored_width(self) -> int:
        """Length of a row as Flink state holds it (`stored`)."""
        return len(self._stored)

    def stored(self, rows: np.ndarray) -> np.ndarray:
        """Rows (one per line) as Flink state keeps them: a Newton user's covariance as its upper triangle."""
        return rows[:, self._stored] if self.newton else rows

    @property
    def width(self) -> int:
        return 2 * self.dim + 1 + (self.dim * self.dim if self.newton else 0)

    def new(self) -> np.ndarray:
        """The prior for an unseen user: zero vector, so only biases score it."""
        state = np.zeros(self.width)
        state[self.dim : 2 * self.dim] = self.init_accumulator
        if self.newton:
            self.covariance(state)[:] = self.prior_variance * np.eye(self.dim)
        return state

    def from_bytes(self, data: bytes) -> np.ndarray:
        """A stored row, in this configuration's layout (`fitted`)."""
        return self.fitted(np.frombuffer(data, dtype=np.float64).copy())

    def fitted(self, state: np.ndarray) -> np.ndarray:
        """A row of either layout in this configuration's: a row without covariance gets the prior's (a
        user stored before `user_update` was newton starts its posterior afresh around the vector it
        has); a row with one, under "gradient", drops it."""
        short = 2 * self.dim + 1
        if state.shape[0] == self.width:
            if self.newton:  # (a row written whole, before state kept the upper triangle: its lower one
                state[self._lower] = state[self._mirror]  # may differ in the last bits, from older kernels)
            return state
        if self.newton and state.shape[0] == self.stored_width:
            row = np.empty(self.width)
            row[self._stored] = state
            row[self._lower] = row[self._mirror]
            return row
        if state.shape[0] not in (short, short + self.dim * self.dim):
            raise ValueError(f"a user row of {state.shape[0]} values does not fit dimension {self.dim}")
        if not self.newton:
            return state[:short].copy()
        return self.pack(state[: self.dim], state[self.dim : 2 * self.dim], int(state[2 * self.dim]))

    def pack(self, vector: np.ndarray, accum: np.ndarray, updates: int,
             covariance: np.ndarray | None = None) -> np.ndarray:
        """A row from its parts; a Newton user without `covariance` gets the prior's."""
        if not self.newton:
            return np.concatenate([vector, accum, [float(updates)]])
        if covariance is None:
            covariance = self.prior_variance * np.eye(self.dim)
        return np.concatenate([vector, accum, [float(updates)], np.ravel(covariance)])

    def optimizer_state(self, state: np.ndarray) -> np.ndarray:
        """What a USER snapshot record's vector_accum carries: the accumulator, then a Newton user's
        covariance (schemas/ModelSnapshot.avsc)."""
        return np.concatenate([state[self.dim : 2 * self.dim], state[2 * self.dim + 1 :]])

    def from_snapshot(self, vector: np.ndarray, optimizer_state: np.ndarray, updates: int) -> np.ndarray:
        """The row of a USER snapshot record's parts (the inverse of `optimizer_state`), in this layout."""
        dim = len(vector)
        return self.fitted(np.concatenate([vector, optimizer_state[:dim], [float(updates)], optimizer_state[dim:]]))

    def vector(self, state: np.ndarray) -> np.ndarray:
        return state[: self.dim]

    def accum(self, state: np.ndarray) -> np.ndarray:
        return state[self.dim : 2 * self.dim]

    def updates(self, state: np.ndarray) -> int:
        return int(state[2 * self.dim])

    def covariance(self, state: np.ndarray) -> np.ndarray:
        """A view of a Newton user's posterior covariance (dim x dim)."""
        return state[2 * self.dim + 1 :].reshape(self.dim, self.dim)


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """a . b of two vectors (BLAS: its summation order depends on the CPU's vector width)."""
    return float(a @ b)


def logit(user_vector: np.ndarray, item: ItemParams, position: Bias, global_bias: Bias) -> float:
    """The logit of a recommendation request: every term but the text terms."""
    return dot(user_vector, item.vector) + item.bias.value + position.value + global_bias.value


def predict(user_vector: np.ndarray, item: ItemParams, position: Bias, global_bias: Bias) -> float:
    """Click probability of a recommendation request (serving drops the position term; see
    `udfs.model_store`)."""
    return sigmoid(logit(user_vector, item, position, global_bias))


def text_logit(similarity: float | None, text_weight: Bias, search_bias: Bias) -> float:
    """The text terms of the logit: none without a query (`similarity` None or NaN)."""
    if similarity is None or similarity != similarity:
        return 0.0
    return text_weight.value * similarity + search_bias.value


def newton_user_step(vector: np.ndarray, covariance: np.ndarray, item_vector: np.ndarray, error: float,
                     curvature: float) -> None:
    """One step of a user's Gaussian posterior (in place): the precision gains `curvature` * v v^T
    (Sherman-Morrison on the covariance S), then the mean moves by -S' v * error with the new S'."""
    sv = covariance @ item_vector
    denominator = 1.0 + curvature * float(item_vector @ sv)
    covariance -= (curvature / denominator) * np.outer(sv, sv)
    vector -= error / denominator * sv


def moderated(z: float, variance: float) -> float:
    """sigmoid of a logit z whose user part has posterior `variance`, integrated over it (MacKay's probit
    approximation)."""
    return sigmoid(z / math.sqrt(1.0 + math.pi * max(variance, 0.0) / 8.0))


def fake_negative_weight(label: int, score: float) -> float:
    """The gradient weight of fake-negative weighting (Ktena et al. 2019): (1 - p)(1 + p) for a label 0
    learned at impression time, (1 + p) for its click learned later as a 1."""
    return (1.0 + score) if label == 1 else (1.0 - score) * (1.0 + score)


class OnlineRanker:
    """Progressive validation learner: `score_then_learn` returns the pre-update prediction."""

    def __init__(self, config: LearnerConfig, item_side: ItemSide) -> None:
        self.config = config
        self.item_side = item_side
        self.codec = UserCodec(config)

    def _predict(self, user_state: np.ndarray, item: ItemParams, term: Bias, similarity: float | None) -> float:
        side = self.item_side
        user = user_state[: self.config.dim]
        z = logit(user, item, term, side.global_bias)
        if similarity is not None and similarity == similarity:
            z += text_logit(similarity, side.text_weight, side.search_bias)
        if self.config.newton_users:
            covariance = self.codec.covariance(user_state)
            return moderated(z, float(item.vector @ (covariance @ item.vector)))
        return sigmoid(z)

    def score(self, user_state: np.ndarray, item_id: str, position: int, similarity: float | None = None) -> float:
        """The model's click probability for showing `item_id` at `position`, without learning;
        `similarity`: the query-title similarity of a search request (None: a recommendation)."""
        side = self.item_side
        return self._predict(user_state, side.item(item_id), side.position(position), similarity)

    def score_then_learn(self, user_state: np.ndarray, item_id: str, position: int, label: int,
                         similarity: float | None = None, fake_negative: bool = False) -> float:
        """Score one example, then take one step on user and item side (and on the text terms of a
        search request); mutates `user_state`. The user's step is a Newton step on its posterior or
        AdaGrad's (`user_update`). `fake_negative`: weight the gradient as fake-negative weighting does
        (Ktena et al. 2019): (1 - p)(1 + p) for label 0, (1 + p) for label 1."""
        cfg = self.config
        dim = cfg.dim
        item = self.item_side.item(item_id)
        term = self.item_side.position(position)
        glob = self.item_side.global_bias
        user = user_state[:dim]
        user_accum = user_state[dim : 2 * dim]
        score = self._predict(user_state, item, term, similarity)
        error = score - label
        weight = fake_negative_weight(label, score) if fake_negative else 1.0
        error *= weight

        old_user = user.copy()
        item_grad = error * old_user + cfg.l2 * item.vector
        damping = cfg.vector_damping
        if cfg.newton_users:
            newton_user_step(user, self.codec.covariance(user_state), item.vector, error,
                             weight * score * (1.0 - score))
        else:
            user_grad = error * item.vector + cfg.l2 * user
            user_accum += user_grad * user_grad
            user -= cfg.learning_rate * user_grad / (damping + np.sqrt(user_accum))
        user_state[2 * dim] += 1.0
        item.accum += item_grad * item_grad
        item.vector -= cfg.learning_rate * item_grad / (damping + np.sqrt(item.accum))
        item.updates += 1
        item.dirty = True
        ftrl, rate, optimizer = (cfg.ftrl_beta, cfg.ftrl_l1, cfg.ftrl_l2), cfg.bias_learning_rate, cfg.bias_optimizer
        item.bias.step(error, rate, ftrl, optimizer)
        term.step(error, rate, ftrl, optimizer)
        glob.step(error, rate, ftrl, optimizer)
        if similarity is not None and similarity == similarity:
            text_weight = self.item_side.text_weight
            if error * similarity != 0.0:
                text_weight.step(error * similarity, rate, ftrl, optimizer)
            else:
                text_weight.updates += 1
            self.item_side.search_bias.step(error, rate, ftrl, optimizer)
        return score

    def learn_query_hint(self, user_state: np.ndarray, hint: np.ndarray) -> float:
        """One step of the user's vector towards `hint` (a query in item space), as for a click on an
        item with that vector, scaled by `query_hint_weight`; biases and items do not move. Returns the
        pre-update sigmoid(user . hint); mutates `user_state` (not its update count)."""
        cfg = self.config
        dim = cfg.dim
        user = user_state[:dim]
        user_accum = user_state[dim : 2 * dim]
        score = sigmoid(dot(user, hint))
        weight = cfg.query_hint_weight
        if cfg.newton_users:
            newton_user_step(user, self.codec.covariance(user_state), hint, weight * (score - 1.0),
                             weight * score * (1.0 - score))
            return score
        user_grad = weight * (score - 1.0) * hint + cfg.l2 * user
        user_accum += user_grad * user_grad
        user -= cfg.learning_rate * user_grad / (cfg.vector_damping + np.sqrt(user_accum))
        return score
