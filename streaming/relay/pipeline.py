"""The relay's dataflow (pure wiring): trigger record -> webhook or bad record -> delivering sink."""

from __future__ import annotations

from quixstreams.dataframe import StreamingDataFrame
from quixstreams.sinks import BaseSink

from streaming.relay.outbound import read_trigger


def build_pipeline(sdf: StreamingDataFrame, *, sink: BaseSink) -> StreamingDataFrame:
    """Deliver the webhook decisions of ``sdf`` (raw trigger records); other actions are skipped."""
    webhooks = sdf.apply(read_trigger).filter(lambda outbound: outbound.is_webhook)
    webhooks.sink(sink)
    return webhooks
