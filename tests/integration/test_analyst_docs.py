"""The example queries of docs/analysts.md run against views over a real Parquet archive."""

import json
from pathlib import Path

import duckdb
from quixstreams.sinks import SinkBatch

from assets.analyst_views import create_views
from orchestration.demo_traffic import TrafficGenerator
from streaming.archiver.rows import archive_row
from streaming.archiver.sink import ParquetArchiveSink

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"


def test_documented_queries_run(tmp_path):
    sink = ParquetArchiveSink(tmp_path / "archive")
    batch = SinkBatch(topic="t", partition=0)
    events = list(TrafficGenerator({"p1": "shoes", "p2": "books"}, users=5, seed=1).events(300))
    for n, event in enumerate(events):  # what the collector adds (docs/events.md), a bot now and then
        context = {"geo": {"country": "DE"}, "device": {"type": "mobile", "browser": "Chrome Mobile"}}
        if n % 10 == 0:
            context = {
                "device": {"type": "bot", "browser": "Googlebot"},
                "bot": True,
                "bot_reason": "user_agent",
            }
        if isinstance(event.get("metadata", {}), dict):
            event["metadata"] = {**event.get("metadata", {}), "context": context}
    for offset, event in enumerate(events):
        batch.append(
            value=archive_row(json.dumps(event).encode(), "t", 0, offset, 1_700_000_000_000),
            key=None,
            timestamp=0,
            headers=[],
            offset=offset,
        )
    sink.write(batch)
    sink.write(batch)  # a redelivered batch must not duplicate rows
    counts = create_views(tmp_path / "db.duckdb", tmp_path / "archive")
    assert counts["archive_raw"] == 300
    assert counts["events"] + counts["events_invalid"] <= 300
    sql = DOC.read_text().split("```sql")[1].split("```")[0]
    queries = [
        q
        for q in (
            "\n".join(line for line in part.splitlines() if not line.strip().startswith("--"))
            for part in sql.split(";")
        )
        if q.strip()
    ]
    assert len(queries) == 6
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        for query in queries:
            assert con.execute(query).fetchall(), query
