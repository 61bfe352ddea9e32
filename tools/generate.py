"""Synthetic e-commerce impression/click/catalog streams with a hidden ground truth.

Why: the online learner must be tested and demonstrated on data where the *right* answer is known.
The generator draws hidden user and item preference vectors, shows items to users in search and
recommendation requests, and clicks with a known probability, so a run can be compared with the
oracle (the true click probability) and with a popularity baseline that ignores the user.

The world:
- users and items have latent vectors in `true_dim` dimensions; item vectors are partly their
  category's vector, so users prefer whole categories as well as single items;
- users are Zipf-active (a few users make many requests); optionally `heavy_users` users (bots,
  power users) each make `heavy_user_share` of all requests; items have a click bias and an exposure
  popularity (correlated with the bias), and belong to one of `n_categories` categories;
- the catalog `embedding` of an item is a noisy linear projection of its latent vector into
  `embedding_dim`, so a learner that seeds item vectors from it starts with real signal;
- a request is a search (query = words naming a category, candidates mostly from that category)
  or a recommendation (no query, candidates by popularity), showing `items_per_request` distinct
  items at positions 1..K;
- P(click) = sigmoid(preference_scale * u.v + item_bias + position_bias(pos) + global_bias), where
  position_bias(pos) = -position_decay * ln(pos) and global_bias is solved for `target_ctr`;
- a click follows its impression after a lognormal delay.

The dirt a real pipeline sees is injected on purpose: duplicate impressions (the same record again,
arriving a bit later), repeated clicks on one impression, orphan clicks (an impression id never
shown) and late clicks (delay > `window_s`, after the attribution window has closed).

Arrival order: every event file is sorted by `event_time + uniform(0, max_disorder_s)`, so a record
never arrives `max_disorder_s` or more after a record with a larger event time. A consumer with a
bounded-out-of-orderness watermark of `max_disorder_s` therefore never sees late data.

Everything is vectorized with numpy and only turned into plain-Python dicts at the end, so a million
impressions take seconds; the same config (seed included) always gives the same stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tools.text_vocabulary import CATEGORY_TEXT, QUERY_MODIFIERS_ZH, TITLE_ADJECTIVES_ZH
from udfs.schemas import field_names

# Category words (and a few modifiers) for titles and search queries; more categories than words get
# a numeric suffix.
CATEGORY_WORDS = (
    "shoes", "laptops", "headphones", "watches", "backpacks", "jackets", "phones", "cameras",
    "lamps", "chairs", "mugs", "toys", "books", "bikes", "tents", "perfume", "jeans", "sofas",
    "guitars", "blenders", "kettles", "monitors", "keyboards", "rugs", "dresses", "helmets",
    "wallets", "speakers", "candles", "scarves",
)
QUERY_MODIFIERS = ("", "", "", "cheap", "best", "new", "black", "small", "large", "premium", "sale")
TITLE_ADJECTIVES = (
    "Classic", "Urban", "Pro", "Eco", "Compact", "Deluxe", "Nordic", "Vintage", "Smart", "Ultra",
    "Everyday", "Trail", "Studio", "Lite", "Prime", "Bold",
)

# Odd 64-bit multipliers for the id bijection (distinct inputs give distinct ids).
_MIX_A = 0x9E3779B97F4A7C15
_MIX_B = 0xBF58476D1CE4E5B9
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class GeneratorConfig:
    """Size, time scale, hidden-world parameters and dirt rates of one synthetic stream.

    Rates of dirt: `duplicate_impression_rate` is per impression; `duplicate_click_rate`,
    `orphan_click_rate` and `late_click_rate` are per genuine click.
    """

    n_users: int = 2000
    n_items: int = 1000
    n_impressions: int = 100_000
    items_per_request: int = 10
    true_dim: int = 8
    embedding_dim: int = 16
    seed: int = 7
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    # Mean request rate; sets the event-time span. Keep the span many attribution windows long:
    # negatives are only known a window after their impression, so a stream shorter than a few
    # windows has all its positives learned (and scored) before its negatives.
    requests_per_s: float = 1.0
    search_fraction: float = 0.4
    n_categories: int = 20
    search_in_category_fraction: float = 0.8  # share of search candidates from the query's category
    # Hidden world.
    target_ctr: float = 0.05  # global_bias is solved so the mean true click probability is this
    preference_scale: float = 1.5  # weight of u.v (which has unit variance) in the click logit
    category_share: float = 0.5  # share of an item vector's variance that comes from its category
    item_bias_sigma: float = 0.5  # std of the per-item click bias (logit units)
    popularity_sigma: float = 1.0  # std of log exposure popularity
    popularity_bias_corr: float = 0.5  # correlation of log exposure popularity with item bias
    user_zipf_exponent: float = 1.0  # activity of the r-th most active user ~ r ** -exponent
    # Skew beyond Zipf, as bots and power users produce: users 0..heavy_users-1 each make this share
    # of all requests; the other users share the rest by their Zipf activity.
    heavy_users: int = 0
    heavy_user_share: float = 0.1
    position_decay: float = 0.7  # position_bias(pos) = -position_decay * ln(pos)
    # Text (tools.text_vocabulary): the share of titles and of queries written in Chinese, the share
    # naming their category by a synonym instead of the catalog's word, and a hidden relevance effect:
    # logit added when a search shows an item of the query's category. At 0 (the defaults) the stream
    # is the English-only one of earlier versions, draw for draw.
    chinese_share: float = 0.0
    synonym_share: float = 0.0
    query_relevance: float = 0.0
    embedding_noise: float = 0.3  # std of noise added to the catalog embedding (signal std ~1)
    # Items launched mid-stream: this share of the catalog (drawn at random) is shown only from a launch
    # time of its own, uniform over the middle 80% of the stream. At 0 (the default) every item is
    # available from the start, draw for draw as in earlier versions.
    new_item_share: float = 0.0
    # Time.
    window_s: float = 1800.0  # attribution window of the downstream join
    max_disorder_s: float = 5.0  # arrival jitter bound (strictly below)
    click_delay_median_s: float = 20.0
    click_delay_sigma: float = 1.5  # lognormal sigma of the click delay
    # Dirt.
    duplicate_impression_rate: float = 0.01
    duplicate_click_rate: float = 0.02
    orphan_click_rate: float = 0.005
    late_click_rate: float = 0.01
    repeat_click_max_s: float = 10.0  # a repeated click comes up to this long after the first one
    late_click_min_factor: float = 1.5  # late clicks come 1.5x..4x window_s after the impression
    late_click_max_factor: float = 4.0


@dataclass
class Stream:
    """One generated stream: three input files' records (in arrival order) and the ground truth."""

    impressions: list[dict[str, Any]]
    clicks: list[dict[str, Any]]
    items: list[dict[str, Any]]
    oracle: dict[str, float]  # impression_id -> true click probability used to draw the click
    stats: dict[str, Any] = field(default_factory=dict)  # what was injected, for tests and reports


def _ids(prefix: str, index: np.ndarray, key: int) -> list[str]:
    """Random-looking but unique ids: a bijection of the 64-bit index, keyed by the seed."""
    out = []
    for i in index.tolist():
        x = ((i ^ key) * _MIX_A) & _MASK64
        x ^= x >> 31
        x = (x * _MIX_B) & _MASK64
        x ^= x >> 29
        out.append(f"{prefix}{x:016x}")
    return out


def _arrival_keys(event_ms: np.ndarray, rng: np.random.Generator, max_disorder_ms: float) -> np.ndarray:
    """Arrival keys: event time plus jitter in [0, max_disorder_ms - 1] ms.

    Sorting by key gives the arrival order. A record arriving before another has key <= the other's
    key, so its event time exceeds the other's by at most max_disorder_ms - 1 (integer ms): the
    disorder is strictly below the bound.
    """
    return event_ms.astype(np.float64) + rng.random(event_ms.size) * max(max_disorder_ms - 1.0, 0.0)


def _sample_cumulative(
    cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Indices drawn with weights whose running sum is `cum`, restricted to the range [lo, hi) of it."""
    r = lo + rng.random(lo.shape) * (hi - lo)
    return np.minimum(np.searchsorted(cum, r, side="right"), cum.size - 1)


def _first_k_distinct(draws: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first `k` distinct values in draw order, and a mask of rows that have `k` of them."""
    n_rows, n_cols = draws.shape
    order = np.argsort(draws, axis=1, kind="stable")
    sorted_draws = np.take_along_axis(draws, order, axis=1)
    dup_sorted = np.zeros_like(sorted_draws, dtype=bool)
    dup_sorted[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
    is_first = np.empty_like(dup_sorted)
    np.put_along_axis(is_first, order, ~dup_sorted, axis=1)
    rank = np.cumsum(is_first, axis=1)
    keep = is_first & (rank <= k)
    complete = rank[:, -1] >= k
    out = np.full((n_rows, k), -1, dtype=draws.dtype)
    rows, cols = np.nonzero(keep)
    out[rows, rank[rows, cols] - 1] = draws[rows, cols]
    return out, complete


def solve_global_bias(logits: np.ndarray, target: float) -> float:
    """The b with mean(sigmoid(logits + b)) == target (bisection; the mean is increasing in b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(logits + mid)))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _request_users(activity: np.ndarray, u: np.ndarray, heavy_users: int, heavy_share: float) -> np.ndarray:
    """The user of each request from one uniform draw `u` per request.

    Heavy users take the bottom `heavy_users * heavy_share` of [0, 1), one slice each; the rest of
    the interval is stretched back to [0, 1) and mapped through the other users' Zipf activity.
    One draw per request either way, so a stream without heavy users consumes exactly the random
    numbers it always did and stays identical for its seed.
    """
    n_users = activity.size
    if heavy_users == 0:
        # Kept as it was, not as the heavy_users=0 case of the general formula: renormalizing the
        # activity would change float rounding and so, rarely, a user.
        return np.minimum(np.searchsorted(np.cumsum(activity), u, side="right"), n_users - 1)
    heavy_total = heavy_users * heavy_share
    rest = activity[heavy_users:] / activity[heavy_users:].sum()
    rest_user = heavy_users + np.searchsorted(np.cumsum(rest), (u - heavy_total) / (1.0 - heavy_total), side="right")
    heavy_user = np.floor(u / heavy_share).astype(np.int64)
    return np.where(u < heavy_total, np.minimum(heavy_user, heavy_users - 1), np.minimum(rest_user, n_users - 1))


def _category_names(n: int) -> list[str]:
    words = list(CATEGORY_WORDS)
    return [words[c % len(words)] + ("" if c < len(words) else f"-{c // len(words)}") for c in range(n)]


class TextWriter:
    """Titles and queries in English or Chinese, naming a category by its word or a synonym."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.names = _category_names(cfg.n_categories)

    def _word(self, category: int) -> tuple[str, bool]:
        """(the category's word in a language, whether it is Chinese)."""
        cfg = self.cfg
        word = CATEGORY_WORDS[category % len(CATEGORY_WORDS)]
        suffix = "" if category < len(CATEGORY_WORDS) else f"-{category // len(CATEGORY_WORDS)}"
        if cfg.chinese_share <= 0 and cfg.synonym_share <= 0:
            return self.names[category], False
        english, chinese = CATEGORY_TEXT[word]
        in_chinese = self.rng.random() < cfg.chinese_share
        synonym = self.rng.random() < cfg.synonym_share
        if in_chinese:
            return (chinese[1] if synonym else chinese[0]) + suffix, True
        return (str(self.rng.choice(english)) if synonym else word) + suffix, False

    def query(self, category: int, modifier: int) -> str:
        word, in_chinese = self._word(category)
        if in_chinese:
            return f"{QUERY_MODIFIERS_ZH[modifier]}{word}"
        return f"{QUERY_MODIFIERS[modifier]} {word}".strip()

    def title(self, category: int, adjective: int, number: int) -> str:
        word, in_chinese = self._word(category)
        if in_chinese:
            return f"{TITLE_ADJECTIVES_ZH[adjective]}{word} {number}"
        return f"{TITLE_ADJECTIVES[adjective]} {word} {number}"


@dataclass
class World:
    """The hidden world of a stream: who likes what, and how popular each item is.

    Items are grouped by category, so each category's items are a contiguous range of indices, and of
    the cumulative popularity `pop_cum` (category c: indices cat_first[c]..cat_last[c], popularity mass
    cat_lo[c]..cat_hi[c]).
    """

    users: np.ndarray  # (n_users, true_dim) hidden user vectors
    activity: np.ndarray  # request share of each user (Zipf)
    item_cat: np.ndarray
    centers: np.ndarray  # category centres
    item_vecs: np.ndarray
    item_bias: np.ndarray
    pop_cum: np.ndarray  # cumulative exposure popularity
    cat_first: np.ndarray
    cat_last: np.ndarray
    cat_lo: np.ndarray
    cat_hi: np.ndarray


def hidden_world(cfg: GeneratorConfig, rng: np.random.Generator) -> World:
    """Draw the hidden world (the generator's first draws from `rng`)."""
    d = cfg.true_dim
    comp_sigma = d ** -0.25  # u_k, v_k ~ N(0, 1/sqrt(d)) so u.v has unit variance
    users = rng.normal(0.0, comp_sigma, (cfg.n_users, d))
    activity = rng.permutation(np.arange(1, cfg.n_users + 1, dtype=np.float64) ** -cfg.user_zipf_exponent)
    activity /= activity.sum()

    cat_sizes = rng.dirichlet(np.full(cfg.n_categories, 5.0))
    item_cat = np.sort(rng.choice(cfg.n_categories, size=cfg.n_items, p=cat_sizes))  # items grouped by cat
    centers = rng.normal(0.0, comp_sigma, (cfg.n_categories, d))
    item_vecs = (math.sqrt(cfg.category_share) * centers[item_cat]
                 + math.sqrt(1.0 - cfg.category_share) * rng.normal(0.0, comp_sigma, (cfg.n_items, d)))
    item_bias = rng.normal(0.0, cfg.item_bias_sigma, cfg.n_items)
    z_bias = item_bias / max(cfg.item_bias_sigma, 1e-12)
    log_pop = cfg.popularity_sigma * (cfg.popularity_bias_corr * z_bias
                                      + math.sqrt(1.0 - cfg.popularity_bias_corr**2)
                                      * rng.normal(size=cfg.n_items))
    pop = np.exp(log_pop)
    pop_cum = np.cumsum(pop)  # items are grouped by category, so each category is a contiguous range
    cat_first = np.searchsorted(item_cat, np.arange(cfg.n_categories), side="left")
    cat_last = np.searchsorted(item_cat, np.arange(cfg.n_categories), side="right")
    pop_cum0 = np.concatenate([[0.0], pop_cum])
    cat_lo, cat_hi = pop_cum0[cat_first], pop_cum0[cat_last]  # empty category: lo == hi

    return World(users, activity, item_cat, centers, item_vecs, item_bias, pop_cum, cat_first, cat_last, cat_lo,
                 cat_hi)


def generate(config: GeneratorConfig | None = None) -> Stream:
    """Draw a hidden world and one stream of impressions, clicks and catalog items from it."""
    cfg = config if config is not None else GeneratorConfig()
    if cfg.n_items < cfg.items_per_request:
        raise ValueError("n_items must be at least items_per_request")
    if cfg.n_impressions < 1 or cfg.n_users < 1 or cfg.n_categories < 1:
        raise ValueError("n_impressions, n_users and n_categories must be positive")
    if cfg.heavy_users < 0 or cfg.heavy_users >= cfg.n_users:
        raise ValueError("heavy_users must be at least 0 and below n_users (the rest need someone)")
    if cfg.heavy_users and not (0.0 < cfg.heavy_user_share and cfg.heavy_users * cfg.heavy_user_share < 1.0):
        raise ValueError("heavy_user_share must be positive and heavy_users * heavy_user_share below 1")
    rng = np.random.default_rng(cfg.seed)
    id_key = int(rng.integers(0, 2**62))
    d, k = cfg.true_dim, cfg.items_per_request
    comp_sigma = d ** -0.25  # u_k, v_k ~ N(0, 1/sqrt(d)) so u.v has unit variance

    # --- hidden world -------------------------------------------------------------------------
    world = hidden_world(cfg, rng)
    users, activity, item_cat, centers = world.users, world.activity, world.item_cat, world.centers
    item_vecs, item_bias, pop_cum = world.item_vecs, world.item_bias, world.pop_cum
    cat_first, cat_last, cat_lo, cat_hi = world.cat_first, world.cat_last, world.cat_lo, world.cat_hi

    projection = rng.normal(0.0, 1.0, (d, cfg.embedding_dim)) / comp_sigma / math.sqrt(d)
    noise = rng.normal(0.0, cfg.embedding_noise, (cfg.n_items, cfg.embedding_dim))
    embeddings = item_vecs @ projection + noise

    # --- requests -----------------------------------------------------------------------------
    n_req = -(-cfg.n_impressions // k)
    gaps_ms = rng.exponential(1000.0 / cfg.requests_per_s, n_req)
    req_ms = cfg.start_ms + np.floor(np.cumsum(gaps_ms) - gaps_ms[0]).astype(np.int64)
    req_user = _request_users(activity, rng.random(n_req), cfg.heavy_users, cfg.heavy_user_share)
    is_search = rng.random(n_req) < cfg.search_fraction
    # Searchers ask for categories they like: P(cat) ~ softmax(2 * u.center) over non-empty categories.
    affinity = 2.0 * users @ centers.T
    affinity[:, cat_last == cat_first] = -np.inf
    cat_p = np.exp(affinity - affinity.max(axis=1, keepdims=True))
    cat_cum = np.cumsum(cat_p / cat_p.sum(axis=1, keepdims=True), axis=1)
    search_idx = np.nonzero(is_search)[0]
    r = rng.random(search_idx.size)[:, None]
    query_cat = np.full(n_req, -1, dtype=np.int64)
    query_cat[search_idx] = np.minimum((cat_cum[req_user[search_idx]] < r).sum(axis=1), cfg.n_categories - 1)
    query_mod = rng.integers(0, len(QUERY_MODIFIERS), n_req)

    # Candidates: draw 3K with replacement, keep the first K distinct (draw order = shown order, so
    # the shown ranking favours popular items like a legacy ranker would); redraw rare short rows.
    n_draw = 3 * k
    lo = np.zeros((n_req, n_draw))
    hi = np.full((n_req, n_draw), pop_cum[-1])
    in_cat = is_search[:, None] & (rng.random((n_req, n_draw)) < cfg.search_in_category_fraction)
    rows = np.nonzero(in_cat)[0]
    lo[in_cat] = cat_lo[query_cat[rows]]
    hi[in_cat] = cat_hi[query_cat[rows]]
    draws = _sample_cumulative(pop_cum, lo, hi, rng)
    # Launches have a generator of their own, so the rest of the stream is the same without them.
    launch_rng = np.random.default_rng([cfg.seed, 2])
    launch_ms = np.zeros(cfg.n_items, dtype=np.int64)
    n_new = round(cfg.new_item_share * cfg.n_items)
    new_items = np.sort(launch_rng.choice(cfg.n_items, size=n_new, replace=False)) if n_new else np.zeros(0, int)
    span = float(req_ms[-1] - req_ms[0])
    launch_ms[new_items] = req_ms[0] + np.round(launch_rng.uniform(0.1, 0.9, n_new) * span).astype(np.int64)
    available = np.setdiff1d(np.arange(cfg.n_items), new_items)  # from the start
    if n_new:
        for _ in range(20):  # draw again (same category range) where an item was not launched yet
            early = launch_ms[draws] > req_ms[:, None]
            if not early.any():
                break
            draws[early] = _sample_cumulative(pop_cum, lo[early], hi[early], launch_rng)
        early = launch_ms[draws] > req_ms[:, None]
        draws[early] = available[launch_rng.integers(0, available.size, int(early.sum()))]
    shown, complete = _first_k_distinct(draws, k)
    bad = np.nonzero(~complete)[0]
    pool = draws[bad]
    while bad.size:  # rows with too few distinct draws (tiny categories): uniform draws of items there all along
        pool = np.concatenate([pool, available[rng.integers(0, available.size, (bad.size, n_draw))]], axis=1)
        fixed, ok = _first_k_distinct(pool, k)
        shown[bad[ok]] = fixed[ok]
        bad, pool = bad[~ok], pool[~ok]

    # --- impressions and click probabilities --------------------------------------------------
    n = cfg.n_impressions
    imp_req = np.repeat(np.arange(n_req), k)[:n]
    imp_pos = np.tile(np.arange(1, k + 1), n_req)[:n]
    imp_item = shown.reshape(-1)[:n]
    imp_user = req_user[imp_req]
    imp_ms = req_ms[imp_req]
    pref = np.einsum("ij,ij->i", users[imp_user], item_vecs[imp_item])
    logits = cfg.preference_scale * pref + item_bias[imp_item] - cfg.position_decay * np.log(imp_pos)
    relevant = is_search[imp_req] & (item_cat[imp_item] == query_cat[imp_req])
    logits = logits + cfg.query_relevance * relevant
    global_bias = solve_global_bias(logits, cfg.target_ctr)
    p_click = 1.0 / (1.0 + np.exp(-(logits + global_bias)))

    # --- clicks ---------------------------------------------------------------------------------
    clicked = np.nonzero(rng.random(n) < p_click)[0]
    log_delay = cfg.click_delay_sigma * rng.normal(size=clicked.size)
    delay_ms = cfg.click_delay_median_s * 1000.0 * np.exp(log_delay)
    click_imp = [clicked]
    click_ms = [imp_ms[clicked] + np.maximum(1, np.round(delay_ms)).astype(np.int64)]
    n_genuine = clicked.size
    # Repeated clicks on an already clicked impression, a little after the first click.
    n_repeat = min(round(cfg.duplicate_click_rate * n_genuine), n_genuine)
    rep = rng.choice(n_genuine, size=n_repeat, replace=False)
    click_imp.append(clicked[rep])
    click_ms.append(click_ms[0][rep] + rng.integers(50, int(cfg.repeat_click_max_s * 1000) + 1, n_repeat))
    # Late clicks: on impressions that were not clicked, well after the window closed.
    not_clicked = np.setdiff1d(np.arange(n), clicked, assume_unique=True)
    n_late = min(round(cfg.late_click_rate * n_genuine), not_clicked.size)
    late = rng.choice(not_clicked, size=n_late, replace=False)
    late_delay_s = cfg.window_s * rng.uniform(cfg.late_click_min_factor, cfg.late_click_max_factor, n_late)
    click_imp.append(late)
    click_ms.append(imp_ms[late] + np.round(late_delay_s * 1000.0).astype(np.int64))
    click_imp_all = np.concatenate(click_imp)
    click_ms_all = np.concatenate(click_ms)
    click_user = imp_user[click_imp_all]
    click_item = imp_item[click_imp_all]
    # Orphan clicks: ids from an index range no impression uses, at random times within the span.
    n_orphan = round(cfg.orphan_click_rate * n_genuine)
    orphan_index = np.arange(n, n + n_orphan)
    orphan_ms = rng.integers(int(imp_ms[0]), int(imp_ms[-1]) + 1, n_orphan)
    orphan_user = rng.integers(0, cfg.n_users, n_orphan)
    orphan_item = rng.integers(0, cfg.n_items, n_orphan)

    # --- duplicate impressions and arrival order ------------------------------------------------
    # A duplicate is the same record again; its key lies between its original's key and the latest
    # key its event time allows, so it arrives after the original and still within the bound.
    disorder_ms = cfg.max_disorder_s * 1000.0
    n_dup = min(round(cfg.duplicate_impression_rate * n), n)
    dup_of = np.sort(rng.choice(n, size=n_dup, replace=False))
    orig_key = _arrival_keys(imp_ms, rng, disorder_ms)
    latest = imp_ms[dup_of].astype(np.float64) + max(disorder_ms - 1.0, 0.0)
    dup_key = orig_key[dup_of] + rng.random(n_dup) * (latest - orig_key[dup_of])
    rows_imp = np.concatenate([np.arange(n), dup_of])
    key = np.concatenate([orig_key, dup_key])
    imp_order = rows_imp[np.lexsort((np.arange(rows_imp.size), key))]

    c_index = np.concatenate([click_imp_all, orphan_index])
    c_ms = np.concatenate([click_ms_all, orphan_ms])
    c_user = np.concatenate([click_user, orphan_user])
    c_item = np.concatenate([click_item, orphan_item])
    c_order = np.argsort(_arrival_keys(c_ms, rng, disorder_ms), kind="stable")

    # --- plain-Python records ---------------------------------------------------------------------
    imp_ids = _ids("imp-", np.arange(n), id_key)
    req_ids = _ids("req-", np.arange(n_req), id_key)
    user_ids = [f"u{i:06d}" for i in range(cfg.n_users)]
    item_ids = [f"sku{i:06d}" for i in range(cfg.n_items)]
    cat_names = _category_names(cfg.n_categories)
    # Text draws come from a generator of their own, so the rest of the stream is the same whatever
    # the text settings.
    text = TextWriter(cfg, np.random.default_rng([cfg.seed, 1]))
    queries: list[str | None] = [None] * n_req
    qc, qm = query_cat.tolist(), query_mod.tolist()
    for i in search_idx.tolist():
        queries[i] = text.query(qc[i], qm[i])

    imp_keys = field_names("Impression")
    req_l, user_l, item_l, pos_l, ms_l = (imp_req.tolist(), imp_user.tolist(), imp_item.tolist(),
                                          imp_pos.tolist(), imp_ms.tolist())
    impressions = [
        dict(zip(imp_keys, (imp_ids[i], req_ids[req_l[i]], user_ids[user_l[i]], item_ids[item_l[i]],
                            queries[req_l[i]], pos_l[i], ms_l[i]), strict=True))
        for i in imp_order.tolist()
    ]
    orphan_ids = _ids("imp-", orphan_index, id_key)
    c_index_l, c_ms_l, c_user_l, c_item_l = c_index.tolist(), c_ms.tolist(), c_user.tolist(), c_item.tolist()
    click_keys = field_names("Click")
    clicks = [
        dict(zip(click_keys, (imp_ids[c_index_l[j]] if c_index_l[j] < n else orphan_ids[c_index_l[j] - n],
                              user_ids[c_user_l[j]], item_ids[c_item_l[j]], c_ms_l[j]), strict=True))
        for j in c_order.tolist()
    ]
    item_keys = field_names("Item")
    adjectives = rng.integers(0, len(TITLE_ADJECTIVES), cfg.n_items).tolist()
    emb = np.round(embeddings, 5).tolist()
    items = [
        dict(zip(item_keys, (item_ids[j], text.title(c, adjectives[j], j), cat_names[c], emb[j]), strict=True))
        for j, c in enumerate(item_cat.tolist())
    ]
    oracle = dict(zip(imp_ids, p_click.tolist(), strict=True))
    stats = {
        "n_requests": n_req,
        "n_impressions": n,
        "n_duplicate_impressions": n_dup,
        "n_genuine_clicks": n_genuine,
        "n_repeat_clicks": n_repeat,
        "n_late_clicks": n_late,
        "n_orphan_clicks": n_orphan,
        "global_bias": global_bias,
        "true_ctr": float(p_click.mean()),
        "span_ms": int(imp_ms[-1] - imp_ms[0]),
        "heavy_user_ids": user_ids[: cfg.heavy_users],
        "relevant_search_impressions": int(relevant.sum()),
        "launches": {item_ids[j]: int(launch_ms[j]) for j in new_items.tolist()},  # item id -> launch time
    }
    return Stream(impressions=impressions, clicks=clicks, items=items, oracle=oracle, stats=stats)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    dumps = orjson.dumps
    with path.open("wb") as f:
        f.write(b"".join(dumps(rec) + b"\n" for rec in records))


def write_stream(stream: Stream, out_dir: str | Path) -> dict[str, Path]:
    """Write the stream as JSON Lines files the job's file/Kafka sources read; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.jsonl" for name in ("impressions", "clicks", "items", "oracle")}
    _write_jsonl(paths["impressions"], stream.impressions)
    _write_jsonl(paths["clicks"], stream.clicks)
    _write_jsonl(paths["items"], stream.items)
    _write_jsonl(paths["oracle"], [{"impression_id": i, "p": p} for i, p in stream.oracle.items()])
    return paths
