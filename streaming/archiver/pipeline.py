"""The archiver's dataflows: raw records -> Parquet sinks building archive rows with Kafka coordinates."""

from __future__ import annotations

from quixstreams import message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.sinks import BaseSink

from streaming.archiver.dead_letters import dead_letter_row


def build_pipeline(sdf: StreamingDataFrame, *, sink: BaseSink) -> StreamingDataFrame:
    """Archive every record, valid or not: the raw bytes go to the sink as they are, and it builds
    their rows per checkpoint, column by column (``RawEventArchiveSink``, ``rows.archive_table``)."""
    sdf.sink(sink)
    return sdf


def build_dead_letter_pipeline(sdf: StreamingDataFrame, *, sink: BaseSink) -> StreamingDataFrame:
    """Archive every dead letter with its reason, source and time (a dataflow apart from the events')."""

    def to_row(raw: bytes | None, _key: object, timestamp: int, headers: object) -> dict:
        ctx = message_context()
        return dead_letter_row(raw, headers, ctx.topic, ctx.partition, ctx.offset, timestamp)  # type: ignore[arg-type]

    rows = sdf.apply(to_row, metadata=True)
    rows.sink(sink)
    return rows
