"""`freshrank simulate`: the closed loop. Does ranking with a fresh model bring more clicks?

A hidden world (tools.generate.hidden_world: users, items, categories, popularity, position bias,
query relevance) sends requests; each request brings a pool of candidates (drawn as the generator's
legacy ranker draws them: by popularity, from the query's category for most of a search); a serving
policy ranks the pool and shows its top items; simulated users click by their true probabilities at
the positions shown. The clicks and impressions of the freshrank policies flow back through the
job's learner core (udfs.batch_learner, in-process, event time simulated), whose snapshot records are
served through the serving library's model (udfs.model_store.ModelStore, what
clients.snapshot_consumer.SnapshotConsumer keeps), refreshed every snapshot interval of event time.

Policies (each over the same requests, pools and click draws: common random numbers):
- freshrank online: the newest snapshot;
- freshrank frozen: the snapshot as of `freeze_after_s`, never refreshed after;
- popularity: the pool by observed click rate (smoothed), from the clicks known so far;
- random; and the oracle (true click probability), the ceiling.
Printed: CTR per policy over time (in equal spans of requests) and overall; and a PNG.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from job.config import JobConfig
from tools.generate import (
    QUERY_MODIFIERS,
    TITLE_ADJECTIVES,
    GeneratorConfig,
    TextWriter,
    World,
    hidden_world,
    solve_global_bias,
)
from udfs.batch_learner import BatchJoinLearner
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_kernel import compile_kernel
from udfs.memory_state import memory_state
from udfs.model_store import ModelStore
from udfs.records import CLICK, IMPRESSION
from udfs.text_encoder import make_encoder
from udfs.text_features import TextFeatures

POLICIES = ("freshrank online", "freshrank frozen", "popularity", "random", "oracle")
SPANS = 10  # CTR is reported over this many equal spans of requests


@dataclass(frozen=True)
class SimulationConfig:
    n_requests: int = 20_000
    pool: int = 30  # candidates per request
    shown: int = 10  # of which the policy shows its top
    freeze_after_s: float = 3600.0  # the frozen policy's model is the one of this much event time
    snapshot_interval_s: float = 10.0  # event time between refreshes of the served model
    learn_every_s: float = 1.0  # event time per learner call
    seed: int = 7


@dataclass
class Requests:
    """Everything random about the requests, drawn once and shared by every policy."""

    time_ms: np.ndarray
    user: np.ndarray
    query_cat: np.ndarray  # -1: a recommendation request
    query: list[str | None]
    pool: np.ndarray  # (n, pool) item indices, in the legacy ranker's order
    click_draw: np.ndarray  # (n, pool) uniforms: the candidate is clicked if its draw < its probability
    click_delay_ms: np.ndarray  # (n, pool)


class TrueClicks:
    """The hidden click model: p(user clicks item at position) for a request."""

    def __init__(self, cfg: GeneratorConfig, world: World, requests: Requests, shown: int) -> None:
        self.cfg, self.world = cfg, world
        self.position_logit = -cfg.position_decay * np.log(np.arange(1, shown + 1))
        # The global bias gives the target click rate when the legacy order is shown.
        logits = np.concatenate([self.item_logits(r, requests, requests.pool[r, :shown]) + self.position_logit
                                 for r in range(min(len(requests.user), 2000))])
        self.global_bias = solve_global_bias(logits, cfg.target_ctr)

    def item_logits(self, r: int, requests: Requests, items: np.ndarray) -> np.ndarray:
        """Logits without position and global bias (what the oracle ranks by)."""
        w, cfg = self.world, self.cfg
        logits = cfg.preference_scale * (w.item_vecs[items] @ w.users[requests.user[r]]) + w.item_bias[items]
        if requests.query_cat[r] >= 0:
            logits = logits + cfg.query_relevance * (w.item_cat[items] == requests.query_cat[r])
        return logits

    def probabilities(self, r: int, requests: Requests, shown: np.ndarray) -> np.ndarray:
        z = self.item_logits(r, requests, shown) + self.position_logit[: len(shown)] + self.global_bias
        return 1.0 / (1.0 + np.exp(-z))


def draw_requests(cfg: GeneratorConfig, world: World, sim: SimulationConfig, text: TextWriter) -> Requests:
    rng = np.random.default_rng([sim.seed, 3])
    n, k = sim.n_requests, sim.pool
    gaps = rng.exponential(1000.0 / cfg.requests_per_s, n)
    time_ms = cfg.start_ms + np.floor(np.cumsum(gaps)).astype(np.int64)
    user = rng.choice(len(world.activity), size=n, p=world.activity)
    search = rng.random(n) < cfg.search_fraction
    affinity = 2.0 * world.users @ world.centers.T
    affinity[:, world.cat_last == world.cat_first] = -np.inf
    query_cat = np.full(n, -1)
    for r in np.nonzero(search)[0]:
        p = np.exp(affinity[user[r]] - affinity[user[r]].max())
        query_cat[r] = rng.choice(len(p), p=p / p.sum())
    modifiers = rng.integers(0, len(QUERY_MODIFIERS), n)
    query = [text.query(int(c), int(m)) if c >= 0 else None for c, m in zip(query_cat, modifiers, strict=True)]
    pool = np.empty((n, k), dtype=np.int64)
    total = world.pop_cum[-1]
    for r in range(n):
        chosen: dict[int, None] = {}
        while len(chosen) < k:
            in_cat = query_cat[r] >= 0 and rng.random() < cfg.search_in_category_fraction
            lo, hi = (world.cat_lo[query_cat[r]], world.cat_hi[query_cat[r]]) if in_cat else (0.0, total)
            item = min(int(np.searchsorted(world.pop_cum, lo + rng.random() * (hi - lo), side="right")),
                       len(world.pop_cum) - 1)
            chosen.setdefault(item)
        pool[r] = list(chosen)
    click_draw = rng.random((n, k))
    delay = cfg.click_delay_median_s * 1000.0 * np.exp(cfg.click_delay_sigma * rng.normal(size=(n, k)))
    return Requests(time_ms, user, query_cat, query, pool, click_draw, np.maximum(1, np.round(delay)).astype(np.int64))


class Policy(Protocol):
    """A serving policy: ranks a request's candidates, then sees what it showed and what was clicked."""

    def order(self, r: int, requests: Requests) -> np.ndarray: ...

    def observe(self, r: int, requests: Requests, shown: np.ndarray, top: np.ndarray, hit: np.ndarray) -> None: ...


class Ids:
    """The world's user and item ids, and the events of what a policy showed."""

    def __init__(self, users: int, items: int) -> None:
        self.users = [f"u{i:06d}" for i in range(users)]
        self.items = [f"sku{i:06d}" for i in range(items)]

    def events(self, r: int, requests: Requests, shown: np.ndarray, top: np.ndarray, hit: np.ndarray
               ) -> tuple[list[list], list[tuple[int, list]]]:
        """Impression events of request `r` and (click time, click event) of its clicked items."""
        now, user = int(requests.time_ms[r]), self.users[requests.user[r]]
        impressions, clicks = [], []
        for position, item in enumerate(shown, 1):
            impression_id = f"r{r}-{position}"
            impressions.append([IMPRESSION, impression_id, f"r{r}", user, self.items[item], requests.query[r],
                                position, now])
            if hit[position - 1]:
                at = now + int(requests.click_delay_ms[r, top[position - 1]])
                clicks.append((at, [CLICK, impression_id, user, self.items[item], at]))
        return impressions, clicks

    def order_by(self, scores: list[float | None]) -> np.ndarray:
        """Candidate indices by descending model score; unknown items (None) last, in pool order."""
        return np.array(sorted(range(len(scores)), key=lambda n: (scores[n] is None, -(scores[n] or 0.0), n)))


class OraclePolicy:
    def __init__(self, clicks: TrueClicks) -> None:
        self.clicks = clicks

    def order(self, r: int, requests: Requests) -> np.ndarray:
        return np.argsort(-self.clicks.item_logits(r, requests, requests.pool[r]), kind="stable")

    def observe(self, r: int, requests: Requests, shown: np.ndarray, top: np.ndarray, hit: np.ndarray) -> None:
        pass


class RandomPolicy(OraclePolicy):
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 4])

    def order(self, r: int, requests: Requests) -> np.ndarray:
        return self.rng.permutation(requests.pool.shape[1])


class PopularityPolicy:
    """Items by their smoothed click rate so far (clicks count once they have happened)."""

    def __init__(self, n_items: int) -> None:
        self.shows = np.zeros(n_items)
        self.clicks = np.zeros(n_items)
        self.pending: list[tuple[int, int]] = []  # (click time, item)

    def order(self, r: int, requests: Requests) -> np.ndarray:
        now, pool = int(requests.time_ms[r]), requests.pool[r]
        while self.pending and self.pending[0][0] <= now:
            self.clicks[heapq.heappop(self.pending)[1]] += 1
        mean = (self.clicks.sum() + 1) / (self.shows.sum() + 2)
        return np.argsort(-(self.clicks[pool] + 10 * mean) / (self.shows[pool] + 10), kind="stable")

    def observe(self, r: int, requests: Requests, shown: np.ndarray, top: np.ndarray, hit: np.ndarray) -> None:
        self.shows[shown] += 1
        for slot in np.nonzero(hit)[0]:
            at = int(requests.time_ms[r]) + int(requests.click_delay_ms[r, top[slot]])
            heapq.heappush(self.pending, (at, int(shown[slot])))


class FreshrankPolicy:
    """The job's learner core learning from the policy's own traffic; serving reads its snapshots."""

    def __init__(self, config: JobConfig, titles: dict[str, str], ids: Ids, sim: SimulationConfig,
                 freeze_at_ms: int | None) -> None:
        encoder = make_encoder(config.text_encoder)
        text = TextFeatures(encoder, titles) if encoder is not None else None
        self.learner = BatchJoinLearner(ImpressionClickJoin(config.window_ms, config.retention_ms), config.learner,
                                        60_000, 0, memory_state(), text=text)
        self.store = ModelStore(text)  # one set of embeddings for learning and serving: each text encoded once
        self.ids, self.sim, self.freeze_at_ms = ids, sim, freeze_at_ms
        self.rows: list[list] = []
        self.pending: list[tuple[int, int, list]] = []  # heap of (click time, order, event)
        self.sequence = 0
        self.last_learned_ms: int | None = None
        self.last_snapshot_ms: int | None = None

    def order(self, r: int, requests: Requests) -> np.ndarray:
        ids = [self.ids.items[i] for i in requests.pool[r]]
        return self.ids.order_by(self.store.scores(self.ids.users[requests.user[r]], ids, requests.query[r]))

    def observe(self, r: int, requests: Requests, shown: np.ndarray, top: np.ndarray, hit: np.ndarray) -> None:
        now_ms, sim = int(requests.time_ms[r]), self.sim
        if self.freeze_at_ms is not None and now_ms > self.freeze_at_ms:
            return  # frozen: serving never sees a newer model, so learning on is moot
        impressions, clicks = self.ids.events(r, requests, shown, top, hit)
        while self.pending and self.pending[0][0] <= now_ms:
            self.rows.append([now_ms - 1, heapq.heappop(self.pending)[2]])
        self.rows += [[now_ms - 1, event] for event in impressions]
        for click_ms, event in clicks:
            heapq.heappush(self.pending, (click_ms, self.sequence, event))
            self.sequence += 1
        if self.last_learned_ms is None or now_ms - self.last_learned_ms >= sim.learn_every_s * 1000:
            self.learner.process_batch(self.rows, now_ms)
            self.rows, self.last_learned_ms = [], now_ms
        if self.last_snapshot_ms is None or now_ms - self.last_snapshot_ms >= sim.snapshot_interval_s * 1000:
            self.store.apply_all(self.learner.snapshot(now_ms))
            self.last_snapshot_ms = now_ms


def simulate_policy(policy: Policy, requests: Requests, clicks: TrueClicks, sim: SimulationConfig) -> np.ndarray:
    """Clicks per request (shown items clicked) under one policy."""
    clicked = np.zeros(len(requests.user))
    for r in range(len(requests.user)):
        top = policy.order(r, requests)[: sim.shown]
        shown = requests.pool[r][top]
        hit = requests.click_draw[r, top] < clicks.probabilities(r, requests, shown)
        clicked[r] = hit.sum()
        policy.observe(r, requests, shown, top, hit)
    return clicked


def make_policy(name: str, requests: Requests, clicks: TrueClicks, ids: Ids, titles: dict[str, str],
                config: JobConfig, sim: SimulationConfig) -> Policy:
    """The policy named `name` (one of POLICIES), fresh."""
    if name == "oracle":
        return OraclePolicy(clicks)
    if name == "random":
        return RandomPolicy(sim.seed)
    if name == "popularity":
        return PopularityPolicy(len(ids.items))
    freeze = int(requests.time_ms[0] + sim.freeze_after_s * 1000) if name == "freshrank frozen" else None
    return FreshrankPolicy(config, titles, ids, sim, freeze)


def world_of(sim: SimulationConfig, config: JobConfig
             ) -> tuple[GeneratorConfig, World, Ids, dict[str, str], Requests, TrueClicks]:
    """The simulation's world (English and Chinese text, a hidden relevance effect), its ids and titles,
    its requests and its click model."""
    cfg = GeneratorConfig(seed=sim.seed, chinese_share=0.5, synonym_share=0.3, query_relevance=1.0,
                          window_s=config.window_s)
    world = hidden_world(cfg, np.random.default_rng(cfg.seed))
    text = TextWriter(cfg, np.random.default_rng([cfg.seed, 1]))
    ids = Ids(len(world.users), len(world.item_cat))
    adjectives = np.random.default_rng([cfg.seed, 5]).integers(0, len(TITLE_ADJECTIVES), len(ids.items))
    titles = {ids.items[j]: text.title(int(c), int(adjectives[j]), j) for j, c in enumerate(world.item_cat)}
    requests = draw_requests(cfg, world, sim, text)
    return cfg, world, ids, titles, requests, TrueClicks(cfg, world, requests, sim.shown)


def run_simulation(out_dir: Path, sim: SimulationConfig, config: JobConfig,
                   policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    """Every policy over the same requests; prints the CTR table, writes the PNG, returns the figures."""
    _, _, ids, titles, requests, clicks = world_of(sim, config)
    compile_kernel()
    spans = np.array_split(np.arange(sim.n_requests), SPANS)
    hours = (requests.time_ms[-1] - requests.time_ms[0]) / 3_600_000
    figures: dict[str, Any] = {"requests": sim.n_requests, "hours": hours, "policies": {}}
    for name in policies:
        started = time.perf_counter()
        policy = make_policy(name, requests, clicks, ids, titles, config, sim)
        per_request = simulate_policy(policy, requests, clicks, sim)
        ctr = per_request / sim.shown
        figures["policies"][name] = {"ctr": float(ctr.mean()),
                                     "ctr_by_span": [float(ctr[s].mean()) for s in spans],
                                     "seconds": time.perf_counter() - started}
        print(f"  {name}: CTR {ctr.mean():.4f} ({time.perf_counter() - started:.0f} s)")
    print()
    print(format_simulation(figures, sim))
    png = _plot(figures, out_dir / "closed-loop-ctr.png")
    print(f"CTR over time: {png}" if png else "CTR over time: install the plots extra for the PNG")
    return figures


def format_simulation(figures: dict[str, Any], sim: SimulationConfig) -> str:
    hours = figures["hours"]
    lines = [f"closed loop: {figures['requests']:,} requests over {hours:.1f} h of event time, "
             f"{sim.shown} shown of {sim.pool} candidates each; CTR of the shown items",
             f"{'policy':20s} {'overall':>8s}  " + " ".join(f"{f'{(i + 1) * hours / SPANS:.1f}h':>6s}"
                                                          for i in range(SPANS))]
    for name, row in figures["policies"].items():
        lines.append(f"{name:20s} {row['ctr']:8.4f}  " + " ".join(f"{v:6.4f}" for v in row["ctr_by_span"]))
    base = figures["policies"].get("popularity")
    if base:
        lines.append("lift over popularity: " + ", ".join(
            f"{name} {row['ctr'] / base['ctr'] - 1:+.1%}" for name, row in figures["policies"].items()
            if name != "popularity"))
    return "\n".join(lines)


def _plot(figures: dict[str, Any], png: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    hours = figures["hours"]
    for name, row in figures["policies"].items():
        x = [(i + 0.5) * hours / SPANS for i in range(SPANS)]
        ax.plot(x, row["ctr_by_span"], marker="o", label=name, linestyle="--" if name == "oracle" else "-")
    ax.set_xlabel("event time (h)")
    ax.set_ylabel("CTR of shown items")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png

