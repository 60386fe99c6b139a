"""Batch tables in the analysts' DuckDB file: `profiles_batch` (the recompute) and `sessions`."""

import json

import dagster as dg
import duckdb

from assets.batch_sql import recompute_documents
from assets.forgotten import read_suppressions
from core.forgetting import SUPPRESSIONS_TABLE, forgotten_sql, suppressions_table
from core.redis_client import redis_from_url
from core.resources import PulseResource
from enrichment.reference_store import load_catalog
from streaming.profiles.admission import Admission
from streaming.traits.follower import load_configured_traits

SESSIONS_SQL = """
CREATE OR REPLACE TABLE sessions AS
WITH ordered AS (
    SELECT coalesce(user_id, anonymous_id) AS profile_id, event_time, event_type,
           CASE WHEN event_time - lag(event_time) OVER w > to_seconds(?) THEN 1 ELSE 0 END AS starts_new
    FROM events WHERE NOT {forgotten}
    WINDOW w AS (PARTITION BY coalesce(user_id, anonymous_id) ORDER BY event_time)
), numbered AS (
    SELECT *,
           sum(starts_new) OVER (PARTITION BY profile_id ORDER BY event_time ROWS UNBOUNDED PRECEDING)
               AS session_number
    FROM ordered
)
SELECT profile_id, session_number + 1 AS session_number,
       min(event_time) AS started_at, max(event_time) AS ended_at,
       count(*) AS events, count(*) FILTER (event_type = 'page_view') AS page_views,
       count(*) FILTER (event_type = 'click') AS clicks,
       count(*) FILTER (event_type = 'add_to_cart') AS adds_to_cart,
       count(*) FILTER (event_type = 'remove_from_cart') AS removes_from_cart,
       count(*) FILTER (event_type = 'search') AS searches,
       count(*) FILTER (event_type = 'purchase') AS purchases
FROM numbered GROUP BY ALL
"""


@dg.asset(kinds={"duckdb"}, group_name="archive", deps=["analyst_views"])
def profiles_batch(pulse: PulseResource) -> dg.MaterializeResult:
    """Every profile recomputed from the archive with the stream's semantics, as table `profiles_batch`."""
    settings = pulse.settings()
    client = redis_from_url(settings.redis_url)
    gap_ms = settings.session_timeout_seconds * 1000
    documents = recompute_documents(
        settings.archive_path,
        load_catalog(client).categories,
        gap_ms,
        forgotten=read_suppressions(settings, client),
        traits=load_configured_traits(settings),
        admission=Admission.from_settings(settings),
    )
    rows = [
        (
            pid,
            doc["user_id"],
            doc["event_count"],
            doc["session_count"],
            doc["purchase_total"],
            doc["engagement_score"],
            doc["first_seen"],
            doc["last_seen"],
            json.dumps(doc["traits"]),
            json.dumps(doc["interests"]),
            json.dumps(doc["computed"]),
            json.dumps(doc),
        )
        for pid, doc in documents.items()
    ]
    with duckdb.connect(str(settings.data_path / "pulse.duckdb")) as con:
        con.execute(
            "CREATE OR REPLACE TABLE profiles_batch (profile_id VARCHAR PRIMARY KEY, user_id VARCHAR, "
            "event_count BIGINT, session_count BIGINT, purchase_total DOUBLE, engagement_score BIGINT, "
            "first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ, traits JSON, interests JSON, computed JSON, "
            "profile JSON)"
        )
        if rows:
            con.executemany("INSERT INTO profiles_batch VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return dg.MaterializeResult(
        metadata={"profiles": len(rows), "events": sum(doc["event_count"] for doc in documents.values())}
    )


@dg.asset(kinds={"duckdb"}, group_name="archive", deps=["analyst_views"])
def sessions(pulse: PulseResource) -> dg.MaterializeResult:
    """Sessions per profile from `events`: a gap over PULSE_SESSION_TIMEOUT_SECONDS in event time starts a
    new one; forgotten events left out (core/forgetting.py)."""
    settings = pulse.settings()
    forgotten = read_suppressions(settings, redis_from_url(settings.redis_url))
    with duckdb.connect(str(settings.data_path / "pulse.duckdb")) as con:
        con.register(SUPPRESSIONS_TABLE, suppressions_table(forgotten))
        where = forgotten_sql("coalesce(user_id, anonymous_id)", "epoch_ms(event_time)")
        con.execute(SESSIONS_SQL.format(forgotten=where), [settings.session_timeout_seconds])
        count = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return dg.MaterializeResult(metadata={"sessions": count})
