"""The few Kafka wire-protocol bytes Pulse writes itself: a control batch that skips offsets.

librdkafka cannot set a batch's offset span, and the embedded broker (Tansu 0.6, memory storage)
assigns each produced batch the partition's end and advances it by the batch's
``lastOffsetDelta + 1``. So one control batch (a transaction COMMIT marker, which consumers never
deliver) whose ``lastOffsetDelta`` is ``count - 1`` moves a fresh partition's end to ``count``:
after a restart the embedded broker's offsets continue where they were (docs/architecture.md,
"Embedded broker maintenance"). Pure encoding and decoding; the socket is the caller's.
"""

from __future__ import annotations

import struct
import time

PRODUCE_API_KEY = 0
PRODUCE_VERSION = 7  # the last version before flexible (tagged-field) encoding
_CONTROL_ATTRIBUTES = 0x30  # control (0x20) + transactional (0x10), as every control batch
_COMMIT_MARKER_KEY = struct.pack(">hh", 0, 1)  # control record: version 0, type COMMIT
_COMMIT_MARKER_VALUE = struct.pack(">hi", 0, 0)  # version 0, coordinator epoch 0


class WireError(RuntimeError):
    """A broker answer that does not decode as expected."""


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of Kafka record batches."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def zigzag_varint(value: int) -> bytes:
    """A signed integer as Kafka's zig-zag varint."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def offset_gap_batch(count: int, now_ms: int | None = None) -> bytes:
    """A record batch (magic 2) spanning ``count`` offsets: one COMMIT marker at the last of them."""
    if count < 1:
        raise ValueError("an offset gap spans at least one offset")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    key, value = _COMMIT_MARKER_KEY, _COMMIT_MARKER_VALUE
    body = (
        b"\x00"  # record attributes
        + zigzag_varint(0)  # timestamp delta
        + zigzag_varint(count - 1)  # offset delta
        + zigzag_varint(len(key))
        + key
        + zigzag_varint(len(value))
        + value
        + zigzag_varint(0)  # headers
    )
    record = zigzag_varint(len(body)) + body
    # attributes, lastOffsetDelta, base/max timestamp, producer id/epoch, base sequence, records
    after_crc = (
        struct.pack(">hiqqqhii", _CONTROL_ATTRIBUTES, count - 1, now_ms, now_ms, -1, -1, -1, 1) + record
    )
    tail = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", 0, len(tail)) + tail


def produce_request(
    topic: str, partition: int, batch: bytes, correlation_id: int, timeout_ms: int = 10_000
) -> bytes:
    """A size-prefixed Produce v7 request (acks=all, no transaction) of one batch to one partition."""
    client_id = b"pulse-broker-maintenance"
    name = topic.encode()
    body = (
        struct.pack(">hhih", PRODUCE_API_KEY, PRODUCE_VERSION, correlation_id, len(client_id))
        + client_id
        + struct.pack(">hhi", -1, -1, timeout_ms)  # null transactional id, acks=all, timeout
        + struct.pack(">ih", 1, len(name))
        + name
        + struct.pack(">iii", 1, partition, len(batch))
        + batch
    )
    return struct.pack(">i", len(body)) + body


def produce_response(payload: bytes, correlation_id: int) -> tuple[int, int]:
    """(error code, base offset) of a Produce v7 response to one batch (without the size prefix)."""
    try:
        answered, topics = struct.unpack_from(">ii", payload, 0)
        if answered != correlation_id or topics != 1:
            raise WireError(f"unexpected produce response (correlation {answered}, {topics} topics)")
        (name_length,) = struct.unpack_from(">h", payload, 8)
        _partitions, _index, error_code, base_offset = struct.unpack_from(">iihq", payload, 10 + name_length)
    except struct.error as exc:
        raise WireError(f"truncated produce response: {exc}") from None
    return error_code, base_offset
