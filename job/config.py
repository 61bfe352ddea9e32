"""Job options: one frozen, typed object; names carry units. Flink settings live in flink-conf/."""

from __future__ import annotations

from dataclasses import dataclass, field

from job.routing import user_shares
from udfs.learner_math import LearnerConfig
from udfs.model_guard import GuardConfig


@dataclass(frozen=True)
class JobConfig:
    """What a freshrank run does, independent of where its events come from."""

    window_s: float = 1800.0
    max_disorder_s: float = 10.0
    retention_s: float = 10800.0  # late clicks hours after the window still count as late
    snapshot_interval_s: float = 10.0
    metrics_interval_s: float = 60.0
    # Wall-clock length of an event batch handed to the Python learner: the throughput/freshness
    # knob (every event waits up to this long, plus the watermark interval, before it is learned).
    batch_s: float = 0.1
    parallelism: int = 1
    # Kafka runs at parallelism > 1: the work of the one-lane stages (the raw records' batching and parse,
    # job.batching.message_batches) relative to all learners', which the learner subtask beside them
    # takes off its share of the users (job.routing.user_shares). Like the parallelism, fixed for a job's state.
    lane_load: float = 0.2
    # Click-outage guard (unbounded runs, udfs.click_stall): how far (event time) negatives may wait
    # for a stalled click stream (0: no guard), and after how long without click progress
    # (wall clock) a stall is reported.
    click_stall_limit_s: float = 3600.0
    click_stall_report_s: float = 30.0
    # Users and items not learned for this long (wall clock) leave Flink state; 0 keeps them for ever.
    state_ttl_s: float = 30 * 86400.0
    # Input guard rails (udfs.parse): an event more than this ahead of min(the newest event time its
    # parse subtask accepted, the wall clock) is dead-lettered instead of moving the watermark; and a
    # dead-letter record keeps at most this many bytes of the rejected payload.
    max_event_ahead_s: float = 86400.0
    dead_letter_max_bytes: int = 64 * 1024
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    # What reads queries and titles (udfs.text_encoder.make_encoder): "use" (the pretrained multilingual
    # model), "hashing" (shared words only, fast) or "none" (the model ignores text).
    text_encoder: str = "use"
    # The stability guard on published snapshot versions (udfs.model_guard).
    guard: GuardConfig = field(default_factory=GuardConfig)

    def __post_init__(self) -> None:
        user_shares(self.parallelism, self.lane_load)  # refuses a parallelism or lane load out of range

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    @property
    def max_disorder_ms(self) -> int:
        return int(self.max_disorder_s * 1000)

    @property
    def retention_ms(self) -> int:
        return int(self.retention_s * 1000)

    @property
    def snapshot_interval_ms(self) -> int:
        return int(self.snapshot_interval_s * 1000)

    @property
    def batch_ms(self) -> int:
        return max(1, int(self.batch_s * 1000))

    @property
    def metrics_interval_ms(self) -> int:
        return int(self.metrics_interval_s * 1000)

    @property
    def click_stall_limit_ms(self) -> int:
        return int(self.click_stall_limit_s * 1000)

    @property
    def click_stall_report_ms(self) -> int:
        return int(self.click_stall_report_s * 1000)

    @property
    def max_event_ahead_ms(self) -> int:
        return int(self.max_event_ahead_s * 1000)

    @property
    def state_ttl_ms(self) -> int:
        return int(self.state_ttl_s * 1000)
