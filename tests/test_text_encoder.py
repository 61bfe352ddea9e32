"""The text encoder: the pretrained multilingual default, and the LRU cache in front of any encoder."""

from __future__ import annotations

import numpy as np
import pytest

from udfs.text_encoder import CachedTextEncoder, UniversalSentenceEncoder


class CountingEncoder:
    """A deterministic stand-in that records every batch it is asked for."""

    dim = 4

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts):
        self.batches.append(list(texts))
        rows = np.array([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_cache_encodes_each_text_once_in_one_batch_per_call() -> None:
    inner = CountingEncoder()
    cached = CachedTextEncoder(inner, max_entries=10)
    first = cached.encode(["red shoes", "tea", "red shoes"])
    assert inner.batches == [["red shoes", "tea"]]
    np.testing.assert_array_equal(first, inner.encode(["red shoes", "tea", "red shoes"]))
    cached.encode(["tea", "apple", "red shoes"])
    assert inner.batches[2] == ["apple"]  # [1] was the direct call above
    assert (cached.hits, cached.misses) == (2, 3)  # encoded: 3 texts; served from the cache: 2


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    inner = CountingEncoder()
    cached = CachedTextEncoder(inner, max_entries=2)
    cached.encode(["a"])
    cached.encode(["b"])
    cached.encode(["a"])  # "b" is now the least recently used
    cached.encode(["c"])
    assert len(cached) == 2
    cached.encode(["a", "b"])
    assert inner.batches[-1] == ["b"]
    with pytest.raises(ValueError):
        CachedTextEncoder(inner, max_entries=0)


@pytest.fixture(scope="module")
def use() -> UniversalSentenceEncoder:
    return UniversalSentenceEncoder()


def test_the_default_encoder_gives_unit_rows_and_a_zero_row_for_no_text(use) -> None:
    rows = use.encode(["running shoes", "", "跑步鞋"])
    assert rows.shape == (3, 512) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows[[0, 2]], axis=1), 1.0, atol=1e-5)
    assert not rows[1].any()


def test_the_default_encoder_understands_chinese_and_english_in_one_space(use) -> None:
    sneakers, running, cleaver, english = use.encode(["运动鞋", "跑步鞋", "菜刀", "running shoes"])
    assert sneakers @ running > sneakers @ cleaver + 0.3
    assert english @ running > english @ cleaver + 0.3  # across languages
