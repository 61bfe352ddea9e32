"""The generator speaks text: English and Chinese titles and queries, synonyms, a hidden relevance effect."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from tools.evaluate import auc
from tools.generate import GeneratorConfig, generate
from udfs.text_encoder import CachedTextEncoder, UniversalSentenceEncoder

TEXT = GeneratorConfig(n_impressions=6000, n_users=200, n_items=300, seed=21, chinese_share=0.5,
                       synonym_share=0.5)
CJK = re.compile(r"[\u4e00-\u9fff]")


def without_text(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("title", "query")} for r in records]


def test_text_settings_change_only_the_text() -> None:
    english, mixed = generate(replace(TEXT, chinese_share=0.0, synonym_share=0.0)), generate(TEXT)
    assert without_text(mixed.impressions) == without_text(english.impressions)
    assert mixed.clicks == english.clicks and mixed.oracle == english.oracle
    assert without_text(mixed.items) == without_text(english.items)
    chinese_titles = sum(bool(CJK.search(item["title"])) for item in mixed.items) / len(mixed.items)
    assert 0.4 < chinese_titles < 0.6
    assert not any(CJK.search(item["title"]) for item in english.items)


def test_query_relevance_raises_clicks_on_the_query_category() -> None:
    plain, relevant = generate(TEXT), generate(replace(TEXT, query_relevance=2.0))
    category = {item["item_id"]: item["category"] for item in plain.items}

    def in_category_share_of_clicked(stream) -> float:
        by_id = {i["impression_id"]: i for i in stream.impressions}
        queried = {}  # the category of each search request, from its items' most common category
        for i in stream.impressions:
            if i["query"] is not None:
                queried.setdefault(i["request_id"], []).append(category[i["item_id"]])
        top = {request: max(set(cats), key=cats.count) for request, cats in queried.items()}
        clicked = [by_id[c["impression_id"]] for c in stream.clicks if c["impression_id"] in by_id]
        searched = [i for i in clicked if i["query"] is not None]
        return np.mean([category[i["item_id"]] == top[i["request_id"]] for i in searched])

    assert relevant.stats["relevant_search_impressions"] > 0
    assert in_category_share_of_clicked(relevant) > in_category_share_of_clicked(plain) + 0.03


@pytest.fixture(scope="module")
def encoder() -> CachedTextEncoder:
    return CachedTextEncoder(UniversalSentenceEncoder())


def test_the_encoder_finds_the_query_category_in_titles_across_languages_and_synonyms(encoder) -> None:
    stream = generate(replace(TEXT, query_relevance=2.0))
    items = {item["item_id"]: item for item in stream.items}
    search = [i for i in stream.impressions if i["query"] is not None]
    similarity = np.einsum("ij,ij->i", encoder.encode([i["query"] for i in search]),
                           encoder.encode([items[i["item_id"]]["title"] for i in search]))
    queried = {}
    for i in search:
        queried.setdefault(i["request_id"], []).append(items[i["item_id"]]["category"])
    top = {request: max(set(cats), key=cats.count) for request, cats in queried.items()}
    same = np.array([items[i["item_id"]]["category"] == top[i["request_id"]] for i in search])
    assert auc(same, similarity) > 0.85  # text alone tells the query's category from the others
    clicked = {c["impression_id"] for c in stream.clicks}
    assert auc(np.array([i["impression_id"] in clicked for i in search]), similarity) > 0.55
