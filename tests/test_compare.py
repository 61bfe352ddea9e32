"""`freshrank evaluate`: the anchors see the same examples with the same label delays; every row is real."""

from __future__ import annotations

import math

import numpy as np
import pytest

from job.config import JobConfig
from tools.compare import anchors, delayed_schedule, evaluate_stream, features, feedback_delays, run_anchor
from tools.generate import GeneratorConfig
from udfs.learner_math import LearnerConfig

WINDOW_MS = 60_000


def example(i: int, label: int, t: int, click: int | None = None) -> dict:
    return {"impression_id": f"imp{i}", "user_id": f"u{i % 3}", "item_id": f"i{i % 5}", "position": 1 + i % 4,
            "query": "red shoes" if i % 2 else None, "label": label, "impression_time": t, "click_time": click}


class Recorder:
    """Records what it was asked, and when (by the examples' indices)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None]] = []

    def predict(self, x) -> float:
        self.calls.append(("predict", next(k for k in x if k.startswith("u=")), None))
        return 0.25

    def learn(self, x, label: int) -> None:
        self.calls.append(("learn", next(k for k in x if k.startswith("u=")), label))


def test_anchors_predict_at_the_impression_and_learn_when_the_label_is_known() -> None:
    examples = [example(0, 1, 1000, click=5000), example(1, 0, 2000), example(2, 1, 3000, click=70_000)]
    schedule = delayed_schedule(examples, WINDOW_MS)
    times = {(kind, index): t for t, kind, index in schedule}
    assert times[(0, 0)] == 1000 and times[(1, 0)] == 5000  # a positive: at its click
    assert times[(1, 1)] == 2000 + WINDOW_MS + 1  # a negative: when its window closes
    assert [t for t, _, _ in schedule] == sorted(t for t, _, _ in schedule)
    order = [(kind, index) for _, kind, index in schedule]
    assert order == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    recorder = Recorder()
    scores, _ = run_anchor(recorder, examples, schedule)
    assert list(scores) == [0.25, 0.25, 0.25]
    assert [c[0] for c in recorder.calls] == ["predict"] * 3 + ["learn"] * 3
    assert [c[2] for c in recorder.calls[3:]] == [1, 0, 1]


def test_features_are_one_hot_categoricals() -> None:
    assert features(example(1, 0, 0)) == {"u=u1": 1.0, "i=i1": 1.0, "p=2": 1.0, "q=red shoes": 1.0}
    assert "q=None" not in features(example(2, 0, 0))


def test_feedback_delays_per_mode() -> None:
    examples = [example(0, 1, 1000, click=5000), example(1, 0, 2000)]
    assert feedback_delays(examples, WINDOW_MS, "impression") == (0.0, 0.0)
    p50, p99 = feedback_delays(examples, WINDOW_MS, "decided")
    assert p50 == pytest.approx((4.0 + 60.001) / 2) and p99 > 59


@pytest.fixture(scope="module")
def results():
    gen = GeneratorConfig(n_impressions=8000, n_users=150, n_items=100, seed=5, window_s=60.0,
                          click_delay_median_s=8.0, requests_per_s=2.0)
    config = JobConfig(window_s=60.0, max_disorder_s=3.0, learner=LearnerConfig(dim=8), text_encoder="none")
    return evaluate_stream(gen, config)


def test_every_learner_is_scored_on_the_same_examples(results) -> None:
    rows = results["rows"]
    freshrank = {f"freshrank {mode}, {name}" for mode in ("decided", "impression")
                 for name in ("adagrad", "ftrl biases", "ftrl")}
    assert freshrank | {"freshrank impression, ids only", "popularity", "oracle"} <= set(rows)
    # The freshrank rows read the catalog (item embeddings) as the job does; the ids-only row does not.
    assert rows["freshrank impression, ids only"]["all"]["auc"] != rows["freshrank impression, adagrad"]["all"]["auc"]
    assert "freshrank impression, ids only" not in results["delays"]
    assert set(anchors()) <= set(rows)
    assert len(anchors()) == 3, "River and Vowpal Wabbit belong to the test install (the compare extra)"
    for name, row in rows.items():
        assert 0.5 < row["all"]["auc"] < 1.0, name
        assert math.isfinite(row["all"]["logloss"]), name
    # The oracle bounds every learner, and the model learns something (beats popularity).
    assert all(row["all"]["auc"] < rows["oracle"]["all"]["auc"] for name, row in rows.items() if name != "oracle")
    assert rows["freshrank impression, adagrad"]["after"]["auc"] > rows["popularity"]["after"]["auc"]
    assert results["delays"]["freshrank impression, ftrl"] == (0.0, 0.0)
    assert results["delays"]["freshrank decided, adagrad"][1] > 59
    assert all(len(curve) == 20 and not np.isnan(curve[-1]) for curve in results["curves"].values())


def test_a_replays_examples_are_evaluated_beside_the_anchors(tmp_path) -> None:
    import orjson

    from tools.compare import run_evaluate_replay
    from tools.generate import generate
    from tools.offline_learner import event_rows, learn_offline

    gen = GeneratorConfig(n_impressions=4000, n_users=100, n_items=80, seed=9, window_s=60.0,
                          click_delay_median_s=8.0, requests_per_s=2.0)
    config = JobConfig(window_s=60.0, max_disorder_s=3.0, learner=LearnerConfig(dim=8), text_encoder="none")
    stream = generate(gen)
    examples, _ = learn_offline(event_rows(stream, config.max_disorder_ms), config.learner, config.window_ms,
                                config.retention_ms)
    (tmp_path / "replay" / "examples").mkdir(parents=True)  # laid out as `freshrank replay --out` writes it
    (tmp_path / "replay" / "examples" / "part-0.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n"
                                                                             for e in examples))
    oracle = tmp_path / "oracle.jsonl"
    oracle.write_bytes(b"".join(orjson.dumps({"impression_id": i, "p": p}) + b"\n" for i, p in stream.oracle.items()))
    results = run_evaluate_replay(tmp_path / "out", tmp_path / "replay", config, oracle)
    rows = results["rows"]
    assert results["examples"] == len(examples)
    assert set(rows) == {"freshrank (the replay's scores)", "popularity", "oracle", *anchors()}
    own = rows["freshrank (the replay's scores)"]["all"]["auc"]
    assert own == pytest.approx(auc_of(examples))
    assert rows["oracle"]["all"]["auc"] > own > rows["popularity"]["all"]["auc"] - 0.05


def auc_of(examples: list[dict]) -> float:
    from tools.evaluate import auc

    return auc([e["label"] for e in examples], [e["score"] for e in examples])


def test_a_bad_oracle_file_is_refused_with_file_and_line(tmp_path) -> None:
    from tools.compare import read_oracle

    path = tmp_path / "oracle.jsonl"
    path.write_text('{"impression_id": "a", "p": 0.25}\n\n{"impression_id": "b"}\n')
    with pytest.raises(ValueError, match=r"oracle.jsonl line 3: not an oracle record"):
        read_oracle(path)
    path.write_text('{"impression_id": "a", "p": 0.25}\n')
    assert read_oracle(path) == {"a": 0.25}
