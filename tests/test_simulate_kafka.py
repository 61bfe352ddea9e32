"""`freshrank simulate --kafka`: the closed loop through the real job on a real broker."""

from __future__ import annotations

import pytest

from job.config import JobConfig
from tools.kafka_demo import read_topic
from tools.simulate import SimulationConfig
from tools.simulate_kafka import KAFKA_NAME, run_kafka_simulation
from udfs.learner_math import LearnerConfig

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def test_the_loop_runs_through_the_job_and_serves_its_snapshots(kafka_broker, tmp_path) -> None:
    sim = SimulationConfig(n_requests=400, seed=5)
    job = JobConfig(window_s=30.0, max_disorder_s=3.0, snapshot_interval_s=1.0, learner=LearnerConfig(dim=8),
                    text_encoder="hashing")
    figures = run_kafka_simulation(tmp_path, sim, job, speedup=40.0, bootstrap=kafka_broker)
    assert figures["model_version"] > 0  # serving followed the job's snapshots while the loop ran
    delays = figures["click_delays"]
    assert len(delays) == sim.n_requests * sim.shown and any(d is not None for d in delays.values())
    examples = read_topic(kafka_broker, figures["topics"].examples, "LabeledExample")
    # Every example the job committed is an impression the loop showed, labelled by the click the loop
    # drew for it: a positive if the click came within the window (a later one is a late click).
    assert len(examples) > len(delays) / 2
    expected = {i: int(d is not None and d <= job.window_ms) for i, d in delays.items()}
    assert all(expected[e["impression_id"]] == e["label"] for e in examples)
    assert sum(e["label"] for e in examples) > 0
    assert set(figures["policies"]) == {KAFKA_NAME, "popularity", "random", "oracle"}
    assert figures["policies"]["oracle"]["ctr"] > figures["policies"]["random"]["ctr"]
