"""What the model reads from text: query-title similarity, and title codes for the learned title map.

`TextFeatures` turns a batch of (query, item) pairs into the similarity the kernel's text terms use
(udfs.learner_kernel): the cosine of the query's and the title's embeddings, NaN for a request without
a query, 0 for an item without a known title. Queries go through a bounded LRU (they repeat heavily),
titles are encoded once per item, each batch's misses in one encoder call.

A title's *code* is its embedding through a fixed random orthonormal projection to `CODE_DIM`
dimensions (cosines are kept up to a small distortion): the learned title map (`TitleMap`) regresses
item parameters on codes, and at 64 dimensions its statistics are small enough to live in Flink state
and to be fitted in milliseconds.

`TitleMap` is the learned map from title codes to item parameters: a ridge regression of the learned
items' [vector | bias] on their title codes, refitted as items learn (older fits decay). A new item
with a title starts from the map's prediction instead of a random vector, so an item never seen in
any impression is scored from what items with similar titles have learned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from udfs.text_encoder import CachedTextEncoder, TextEncoder

CODE_DIM = 64
PROJECTION_SEED = 20261203


def code_projection(text_dim: int, code_dim: int = CODE_DIM) -> np.ndarray:
    """(text_dim, code_dim) with orthonormal columns, the same in every process."""
    gaussian = np.random.default_rng(PROJECTION_SEED).standard_normal((text_dim, code_dim))
    q, _ = np.linalg.qr(gaussian)
    return q[:, :code_dim]


class TextFeatures:
    """Query and title embeddings of one process, and the features the model takes from them."""

    def __init__(self, encoder: TextEncoder, titles: Mapping[str, str] | None = None,
                 max_cached_queries: int = 100_000) -> None:
        self.queries = CachedTextEncoder(encoder, max_cached_queries)
        self.encoder = encoder
        self.titles: dict[str, str] = dict(titles or {})
        self._title_rows: dict[str, np.ndarray] = {}  # item id -> unit embedding (float32)
        self._codes: dict[str, np.ndarray] = {}  # item id -> title code (float64)
        self._projection = code_projection(encoder.dim)
        self._zero = np.zeros(encoder.dim, dtype=np.float32)

    def add_titles(self, titles: Mapping[str, str]) -> None:
        """New or changed catalog titles; a changed title is encoded again on next use."""
        for item_id, title in titles.items():
            if self.titles.get(item_id) != title:
                self.titles[item_id] = title
                self._title_rows.pop(item_id, None)
                self._codes.pop(item_id, None)

    def has_title(self, item_id: str) -> bool:
        return bool(self.titles.get(item_id))

    def _encode_titles(self, item_ids: Iterable[str]) -> None:
        missing = [i for i in dict.fromkeys(item_ids) if i not in self._title_rows]
        if not missing:
            return
        texts = [self.titles.get(i) or "" for i in missing]
        for item_id, row in zip(missing, self.encoder.encode(texts), strict=True):
            self._title_rows[item_id] = np.asarray(row, dtype=np.float32)

    def title_embeddings(self, item_ids: Sequence[str]) -> np.ndarray:
        """(n, text dim) unit rows; a zero row for an item without a title."""
        self._encode_titles(item_ids)
        if not item_ids:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.stack([self._title_rows[i] for i in item_ids])

    def title_code(self, item_id: str) -> np.ndarray:
        """The item's title code (CODE_DIM float64; zeros without a title)."""
        code = self._codes.get(item_id)
        if code is None:
            self._encode_titles([item_id])
            code = self._codes[item_id] = self._title_rows[item_id].astype(np.float64) @ self._projection
        return code

    def title_codes(self, item_ids: Sequence[str]) -> np.ndarray:
        self._encode_titles(item_ids)
        return np.array([self.title_code(i) for i in item_ids]).reshape(len(item_ids), CODE_DIM)

    def query_codes(self, queries: Sequence[str]) -> np.ndarray:
        """(n, CODE_DIM) codes of queries, as `title_codes` of titles (each distinct query encoded once)."""
        distinct = list(dict.fromkeys(queries))
        embeddings = self.queries.encode(distinct).astype(np.float64)
        # Row by row, as `title_code`: a code must not depend on which queries share the call.
        rows = [embedding @ self._projection for embedding in embeddings]
        index = {query: n for n, query in enumerate(distinct)}
        return np.array([rows[index[query]] for query in queries]).reshape(len(queries), CODE_DIM)

    def similarities(self, queries: Sequence[str | None], item_ids: Sequence[str]) -> np.ndarray:
        """Cosine of query and title embeddings per pair; NaN without a query, 0 without a title.

        Each distinct query and title is looked up once per call (a batch repeats them heavily)."""
        out = np.full(len(queries), np.nan)
        query_index: dict[str, int] = {}
        item_index: dict[str, int] = {}
        searches, query_of, item_of = [], [], []
        for n, (query, item_id) in enumerate(zip(queries, item_ids, strict=True)):
            if query:
                searches.append(n)
                query_of.append(query_index.setdefault(query, len(query_index)))
                item_of.append(item_index.setdefault(item_id, len(item_index)))
        if not searches:
            return out
        query_rows = self.queries.encode(list(query_index))
        title_rows = self.title_embeddings(list(item_index))
        out[searches] = np.einsum("ij,ij->i", query_rows[query_of], title_rows[item_of], dtype=np.float64)
        return out


class TitleMap:
    """Ridge regression of item parameters [vector | bias] on title codes, refitted as items learn.

    Sufficient statistics decay by `decay` per fit, so the map follows the items as they keep
    learning; `l2` regularises towards 0 (a map fitted on few items predicts small vectors).
    All of it is one float64 array (`to_array`/`from_array`), for Flink state and snapshots.
    """

    def __init__(self, dim: int, code_dim: int = CODE_DIM, l2: float = 1.0, decay: float = 0.9,
                 min_items: int = 20) -> None:
        self.dim = dim
        self.code_dim = code_dim
        self.l2 = l2
        self.decay = decay
        self.min_items = min_items
        self.gram = np.zeros((code_dim, code_dim))  # sum of code code^T
        self.cross = np.zeros((dim + 1, code_dim))  # sum of [vector | bias] code^T
        self.weights = np.zeros((dim + 1, code_dim))
        self.items_fitted = 0

    @property
    def ready(self) -> bool:
        """Fitted on enough items to be trusted over a random start."""
        return self.items_fitted >= self.min_items

    def fit(self, codes: np.ndarray, targets: np.ndarray) -> None:
        """One refit with these items' codes (n, code_dim) and current [vector | bias] rows (n, dim+1)."""
        codes = np.asarray(codes, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        if codes.shape[0] != targets.shape[0] or codes.shape[1:] != (self.code_dim,) \
                or targets.shape[1:] != (self.dim + 1,):
            raise ValueError(f"codes must be (n, {self.code_dim}) and targets (n, {self.dim + 1}), "
                             f"got {codes.shape} and {targets.shape}")
        if not len(codes):
            return
        self.gram = self.decay * self.gram + codes.T @ codes
        self.cross = self.decay * self.cross + targets.T @ codes
        regularised = self.gram + self.l2 * np.eye(self.code_dim)
        # C order, as `load_array` gives: the same layout makes `predict` sum in the same order, so a
        # learner restored from state starts new items bit for bit as the one before it would have.
        self.weights = np.ascontiguousarray(np.linalg.solve(regularised, self.cross.T).T)
        self.items_fitted += len(codes)

    def predict(self, code: np.ndarray) -> tuple[np.ndarray, float]:
        """(vector, bias) for an item with this title code."""
        out = self.weights @ np.asarray(code, dtype=np.float64)
        return out[: self.dim], float(out[self.dim])

    def predict_vectors(self, codes: np.ndarray) -> np.ndarray:
        """(n, dim) vectors for texts with these codes (n, code_dim): their place in item space."""
        return np.asarray(codes, dtype=np.float64) @ self.weights[: self.dim].T

    def to_array(self) -> np.ndarray:
        return np.concatenate([self.gram.ravel(), self.cross.ravel(), self.weights.ravel(),
                               [float(self.items_fitted)]])

    def load_array(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        c, t = self.code_dim, self.dim + 1
        if values.shape != (c * c + 2 * t * c + 1,):
            raise ValueError(f"a title map of dim {self.dim} has {c * c + 2 * t * c + 1} values, got {values.shape}")
        self.gram = values[: c * c].reshape(c, c).copy()
        self.cross = values[c * c : c * c + t * c].reshape(t, c).copy()
        self.weights = values[c * c + t * c : c * c + 2 * t * c].reshape(t, c).copy()
        self.items_fitted = int(values[-1])
