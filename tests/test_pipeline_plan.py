"""The job's plan, without running it: where the learner's outputs meet their sinks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyflink.common import Types
from pyflink.table import StreamTableEnvironment

from job.config import JobConfig
from job.files import json_lines_sink
from job.flink_env import make_environment
from job.pipeline import OUTPUTS, PipelineInputs, build_pipeline
from udfs.encoding import JsonLinesEncoder


def _edges_out_of_the_learner(tmp_path: Path, unbounded: bool) -> list[str]:
    """The ship strategies of the edges that leave the learner's chain (forward edges chain)."""
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    lines = [env.from_collection(["{}"], Types.STRING()) for _ in range(2)]
    inputs = PipelineInputs(*lines, unbounded=unbounded, parse_in_batches=not unbounded)
    sinks = {name: (lambda stream, n, folder=tmp_path / name: json_lines_sink(stream, folder, n, t_env))
             for name in OUTPUTS}
    build_pipeline(inputs, sinks, JobConfig(), JsonLinesEncoder(), t_env=t_env)
    nodes = json.loads(env.get_execution_plan())["nodes"]
    learner = {node["id"] for node in nodes if node["contents"].startswith("join-and-learn")}
    assert len(learner) == 1
    # the learner and what follows it by forward edges (PyFlink's side outputs pass a map of their own)
    chain, grown = set(learner), True
    while grown:
        before = len(chain)
        chain |= {node["id"] for node in nodes for edge in node.get("predecessors", [])
                  if edge["id"] in chain and edge["ship_strategy"] == "FORWARD"}
        grown = len(chain) > before
    return [edge["ship_strategy"] for node in nodes for edge in node.get("predecessors", [])
            if edge["id"] in chain and node["id"] not in chain]


@pytest.mark.parametrize("unbounded", [False, True])
def test_a_bounded_run_hands_the_learners_outputs_to_their_sinks_through_an_exchange(tmp_path: Path,
                                                                                      unbounded: bool) -> None:
    """Bounded runs: the sinks' JVM work off the learner's thread (it holds the interpreter, the job's
    bottleneck); live runs keep them chained (a click's way to a visible snapshot is shorter)."""
    strategies = _edges_out_of_the_learner(tmp_path, unbounded)
    # examples, snapshots, late and orphan clicks; the metrics' partials go by their key (HASH)
    assert sorted(strategies) == (["HASH"] if unbounded else ["HASH", "RESCALE", "RESCALE", "RESCALE", "RESCALE"])
