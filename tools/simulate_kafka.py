"""`freshrank simulate --kafka`: the closed loop through the real job.

The same world, requests and click draws as `tools.simulate`; the freshrank policy is the Flink job on
a Kafka broker (`freshrank run` in a child process): the loop produces each shown impression and,
when its time comes, its click to the input topics, and ranks every request with the snapshot
consumer (clients.snapshot_consumer.SnapshotConsumer) following the model-snapshot topic, as a
serving service would. Event time runs `speedup` times faster than the wall clock (the first request
is now). Popularity, random and the oracle run on the same requests for reference.
"""

from __future__ import annotations

import heapq
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from clients.producer import Producer
from clients.snapshot_consumer import SnapshotConsumer
from clients.topics import TopicNames, create_all
from job.config import JobConfig
from tools.kafka_demo import Broker, LocalJob, run_args
from tools.simulate import (
    SPANS,
    Ids,
    Requests,
    SimulationConfig,
    format_simulation,
    make_policy,
    simulate_policy,
    world_of,
)
from udfs.text_encoder import make_encoder
from udfs.text_features import TextFeatures

KAFKA_NAME = "freshrank online (Flink job on Kafka)"


class KafkaFreshrankPolicy:
    """Ranks with the newest snapshot on Kafka; what it shows and what is clicked goes to the job's topics."""

    def __init__(self, producer: Producer, consumer: SnapshotConsumer, ids: Ids, requests: Requests,
                 speedup: float) -> None:
        self.producer, self.consumer, self.ids, self.speedup = producer, consumer, ids, speedup
        self.first_ms = int(requests.time_ms[0])
        self.offset_ms = int(time.time() * 1000) - self.first_ms  # event time: the first request is now
        self.started = time.monotonic()
        self.clicks: list[tuple[float, int, dict[str, Any]]] = []  # (wall time due, sequence, click record)
        self.sequence = 0
        self.click_delays: dict[str, int | None] = {}  # impression id -> its click's delay (ms), None: no click

    def _wall(self, event_ms: int) -> float:
        return self.started + (event_ms - self.first_ms) / 1000.0 / self.speedup

    def _produce_due_clicks(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        while self.clicks and self.clicks[0][0] <= now:
            self.producer.send_click(heapq.heappop(self.clicks)[2])

    def finish(self) -> None:
        """Send the clicks still to come at once (their event times are what the job goes by)."""
        self._produce_due_clicks(float("inf"))
        self.producer.flush()

    def order(self, r: int, requests: Requests) -> np.ndarray:
        due = self._wall(int(requests.time_ms[r]))
        while True:  # wait for the request's time, sending clicks as they fall due and following snapshots
            self._produce_due_clicks()
            self.consumer.poll(0.0)
            left = due - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.02))
        ids = [self.ids.items[i] for i in requests.pool[r]]
        ranked = self.consumer.rank(self.ids.users[requests.user[r]], ids, k=len(ids), query=requests.query[r])
        index = {item: n for n, item in enumerate(ids)}
        return np.array([index[item] for item, _ in ranked])

    def observe(self, r: int, requests: Requests, shown: np.ndarray, top: np.ndarray, hit: np.ndarray) -> None:
        impressions, clicks = self.ids.events(r, requests, shown, top, hit)
        self.click_delays.update((event[1], None) for event in impressions)
        shown_ms = int(requests.time_ms[r])
        self.click_delays.update((event[1], click_ms - shown_ms) for click_ms, event in clicks)
        for event in impressions:
            _, impression_id, request_id, user_id, item_id, query, position, event_ms = event
            self.producer.send_impression({
                "impression_id": impression_id, "request_id": request_id, "user_id": user_id, "item_id": item_id,
                "query": query, "position": position, "event_time": event_ms + self.offset_ms})
        for click_ms, event in clicks:
            _, impression_id, user_id, item_id, _ = event
            heapq.heappush(self.clicks, (self._wall(click_ms), self.sequence, {
                "impression_id": impression_id, "user_id": user_id, "item_id": item_id,
                "event_time": click_ms + self.offset_ms}))
            self.sequence += 1
        self.producer.poll(0.0)


def run_kafka_simulation(out_dir: Path, sim: SimulationConfig, config: JobConfig, speedup: float = 30.0,
                         bootstrap: str | None = None) -> dict[str, Any]:
    """The loop through the job on Kafka, beside popularity, random and the oracle; prints the CTR table."""
    _, _, ids, titles, requests, clicks = world_of(sim, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = out_dir / "items.jsonl"
    catalog.write_bytes(b"".join(orjson.dumps({"item_id": item, "title": titles[item], "category": "",
                                               "embedding": None}) + b"\n" for item in ids.items))
    hours = (requests.time_ms[-1] - requests.time_ms[0]) / 3_600_000
    figures: dict[str, Any] = {"requests": sim.n_requests, "hours": hours, "policies": {}}
    spans = np.array_split(np.arange(sim.n_requests), SPANS)
    with Broker(bootstrap, out_dir / "kafka", print) as servers:
        suffix = f"-simulate-{uuid.uuid4().hex[:8]}"
        topics = TopicNames().suffixed(suffix)
        create_all(servers, topics, partitions=2)
        name = f"freshrank-simulate-{uuid.uuid4().hex[:6]}"
        job = LocalJob(run_args(servers, suffix, config, group_id=name, job_name=name, idleness_s=60.0,
                                checkpoint_interval_s=2.0, items=catalog.resolve(),
                                checkpoint_dir=(out_dir / "checkpoints").resolve()),
                       name, out_dir / "job.log", out_dir)
        print(f"starting the job (log {job.log_path}) ...")
        job.start()
        try:
            job.wait_running()
            encoder = make_encoder(config.text_encoder)
            text = TextFeatures(encoder, titles) if encoder is not None else None
            seconds = (requests.time_ms[-1] - requests.time_ms[0]) / 1000.0 / speedup
            print(f"closed loop through the job: {sim.n_requests:,} requests, {hours:.1f} h of event time at "
                  f"{speedup:g}x (~{seconds:.0f} s) ...")
            with Producer(servers, topics) as producer, SnapshotConsumer(servers, topics.snapshots,
                                                                         text=text) as consumer:
                policy = KafkaFreshrankPolicy(producer, consumer, ids, requests, speedup)
                started = time.monotonic()
                per_request = simulate_policy(policy, requests, clicks, sim)
                wall = time.monotonic() - started
                policy.finish()
                versions = consumer.version
            job.check_state()
            figures.update(topics=topics, bootstrap=servers, click_delays=policy.click_delays,
                           model_version=versions)
            del policy, producer, consumer  # their Kafka handles go before the broker does (no shutdown noise)
        finally:
            job.kill()
    ctr = per_request / sim.shown
    figures["policies"][KAFKA_NAME] = {"ctr": float(ctr.mean()), "ctr_by_span": [float(ctr[s].mean()) for s in spans],
                                       "seconds": wall}
    print(f"  {KAFKA_NAME}: CTR {ctr.mean():.4f} ({wall:.0f} s; newest model version {versions})")
    for other in ("popularity", "random", "oracle"):
        policy = make_policy(other, requests, clicks, ids, titles, config, sim)
        ctr = simulate_policy(policy, requests, clicks, sim) / sim.shown
        figures["policies"][other] = {"ctr": float(ctr.mean()), "ctr_by_span": [float(ctr[s].mean()) for s in spans],
                                      "seconds": 0.0}
    print()
    print(format_simulation(figures, sim))
    return figures
