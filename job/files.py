"""File connectors: JSON Lines event files in, JSON Lines part files out."""

from __future__ import annotations

from pathlib import Path

from pyflink.common import WatermarkStrategy
from pyflink.common.serialization import Encoder
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (
    BucketAssigner,
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)


def text_lines(env: StreamExecutionEnvironment, path: Path, name: str) -> DataStream:
    """Each line of the file(s) at `path` as a string (watermarks are assigned after parsing)."""
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path.resolve())).build()
    return env.from_source(source, WatermarkStrategy.no_watermarks(), f"{name}-file").uid(f"source-{name}")


def json_lines_sink(stream: DataStream, folder: Path, name: str) -> None:
    """Write string records as JSON Lines part files into `folder` (committed on checkpoints)."""
    sink = (
        FileSink.for_row_format(str(folder.resolve()), Encoder.simple_string_encoder())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .with_output_file_config(OutputFileConfig.builder().with_part_prefix(name).with_part_suffix(".jsonl").build())
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
        .build()
    )
    stream.sink_to(sink).name(f"{name}-files").uid(f"sink-{name}")
