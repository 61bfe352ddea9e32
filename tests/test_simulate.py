"""`freshrank simulate`: the closed loop over the generator's hidden world."""

from __future__ import annotations

import numpy as np
import pytest

from job.config import JobConfig
from tools.generate import GeneratorConfig, TextWriter, hidden_world
from tools.simulate import SPANS, SimulationConfig, TrueClicks, draw_requests, run_simulation
from udfs.learner_math import LearnerConfig

SIM = SimulationConfig(n_requests=3000, freeze_after_s=1200.0, snapshot_interval_s=5.0)
JOB = JobConfig(window_s=300.0, learner=LearnerConfig(dim=8, learning_mode="impression"), text_encoder="hashing")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return run_simulation(tmp_path_factory.mktemp("simulate"), SIM, JOB)


def test_the_requests_are_the_generators_world() -> None:
    cfg = GeneratorConfig(seed=SIM.seed, query_relevance=1.0)
    world = hidden_world(cfg, np.random.default_rng(cfg.seed))
    requests = draw_requests(cfg, world, SIM, TextWriter(cfg, np.random.default_rng(1)))
    assert requests.pool.shape == (SIM.n_requests, SIM.pool)
    assert all(len(set(row)) == SIM.pool for row in requests.pool.tolist())  # distinct candidates
    searches = requests.query_cat >= 0
    assert 0.3 < searches.mean() < 0.5 and all(q for q, s in zip(requests.query, searches, strict=True) if s)
    in_category = world.item_cat[requests.pool[searches]] == requests.query_cat[searches][:, None]
    assert in_category.mean() > 0.6  # most of a search's candidates are of its category
    clicks = TrueClicks(cfg, world, requests, SIM.shown)
    p = np.concatenate([clicks.probabilities(r, requests, requests.pool[r, :SIM.shown]) for r in range(500)])
    assert 0.03 < p.mean() < 0.08  # the legacy order gets about the target click rate


def test_policies_rank_as_expected(figures) -> None:
    ctr = {name: row["ctr"] for name, row in figures["policies"].items()}
    assert ctr["oracle"] > max(v for k, v in ctr.items() if k != "oracle")
    assert ctr["random"] < min(v for k, v in ctr.items() if k != "random")
    late = {name: np.mean(row["ctr_by_span"][SPANS // 2:]) for name, row in figures["policies"].items()}
    assert late["freshrank online"] > late["random"] * 1.1  # it learned from the clicks it caused


def test_online_and_frozen_are_the_same_until_the_freeze(figures) -> None:
    """Same requests, same candidates, same click draws, same model until the freeze: same clicks."""
    online = figures["policies"]["freshrank online"]["ctr_by_span"]
    frozen = figures["policies"]["freshrank frozen"]["ctr_by_span"]
    span_hours = figures["hours"] / SPANS
    before = int(SIM.freeze_after_s / 3600 / span_hours)  # spans that end before the freeze
    assert before >= 1
    assert online[:before] == frozen[:before]
    assert online != frozen
