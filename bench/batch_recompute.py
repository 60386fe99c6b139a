"""Batch recompute and reconciliation on a generated archive (issue 3's benchmark).

1. Generates an archive in the archiver's Parquet format (``bench.archive_gen``), or reuses one.
2. Recomputes every profile from it with DuckDB SQL (``assets.batch_sql``) and with a plain
   pandas version of the same aggregation, each in a child process of its own so that peak
   memory is measured separately. Both outputs must agree exactly, every row and the totals
   (the cells on the built-in profile's, the ones pandas computes).
3. On a ~20k-event sample of the archive's profiles (plus one checkpoint archived twice), both
   must equal the stream-exact Python recompute (``recompute_profiles``), document for document.
4. Loads an embedded Valkey through the stream's own path (``check_record`` +
   ``RedisProfileStore.apply_deltas``) and times a full reconciliation: SQL recompute,
   documents, SCAN of live ids, ``live_documents``, ``diff_profiles``. Zero drift expected.

Usage: .venv/bin/python -m bench.batch_recompute [--events 10000000] [--users 1000000]
       [--archive DIR] [--keep] [--repeat 1] [--duckdb-memory-limit 4GB] [--no-redis]
       [--python-baseline]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from assets.archive import read_valid_events
from assets.batch_sql import ENTRY_COLUMNS, PROFILE_COLUMNS, ProfileTables, documents, recompute_tables
from bench.archive_gen import generate_archive
from core.archive_layout import archive_glob
from enrichment.catalog import SAMPLE_CATALOG, Catalog, categories_from_rows, read_catalog_csv
from streaming.profiles.document import LAST_PRODUCTS_LIMIT
from streaming.traits.measures import CART_SIGNS, DEFAULT_ENGAGEMENT_POINTS, ENGAGEMENT_POINTS, MICROS
from streaming.traits.sql import CELL_COLUMNS
from tests.reference_recompute import recompute_profiles

SESSION_GAP_MS = 1_800_000
DEDUPE_WINDOW_SECONDS = 7 * 86_400
SUBSET_EVENTS = 20_000
JSON_CHUNK = 1_000_000
LOAD_BATCH = 10_000
_METADATA_FIELDS = [
    ("product_id", pa.string()),
    ("category", pa.string()),
    ("quantity", pa.int64()),
    ("price", pa.float64()),
]
_METADATA = pa.schema([("metadata", pa.struct(_METADATA_FIELDS))])
#: The cells pandas computes: the built-in traits stored under their historical names
#: (``builtin_traits``' stored_as), whole or as a prefix of the key.
PANDAS_CELLS = ("event_count", "first_seen", "last_seen", "purchase_micros", "engagement")
PANDAS_CELL_PREFIXES = ("t:", "v:", "c:")
#: Document fields of the traits pandas does not compute (user, windowed, decayed): not compared.
PANDAS_SKIPPED_FIELDS = frozenset({"traits", "interests", "counts_7d", "counts_30d", "computed"})


def catalog_categories() -> dict[str, str]:
    return categories_from_rows(read_catalog_csv(SAMPLE_CATALOG))


# --- the pandas implementation ------------------------------------------------------------------


def _parse_metadata(raw: pa.ChunkedArray) -> pd.DataFrame:
    """metadata.{product_id, category, quantity, price} of each JSON body (pyarrow's JSON reader)."""
    parts = []
    options = pj.ParseOptions(explicit_schema=_METADATA, unexpected_field_behavior="ignore")
    for start in range(0, len(raw), JSON_CHUNK):
        bodies = raw.slice(start, JSON_CHUNK).combine_chunks().cast(pa.binary())  # far below 2 GiB
        bodies = pc.replace_substring(bodies, "\n", " ")  # newlines in valid JSON are whitespace
        lines = pc.binary_join_element_wise(bodies, pa.scalar(b"", pa.binary()), b"\n")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
        offsets = offsets[lines.offset : lines.offset + len(lines) + 1]
        data = lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        parts.append(pj.read_json(pa.BufferReader(data), parse_options=options).flatten())
    metadata = pa.concat_tables(parts).to_pandas()
    metadata.columns = [c.removeprefix("metadata.") for c in metadata.columns]
    return metadata


def pandas_recompute(
    root: Path, categories: dict[str, str], session_gap_ms: int, phases: dict[str, float] | None = None
) -> ProfileTables:
    """The SQL's aggregation in plain pandas: dedupe, enrich, group by (the same output tables).

    ``phases`` receives the seconds spent reading, deduplicating, parsing JSON, deriving deltas
    and aggregating.
    """
    phases = {} if phases is None else phases
    clock = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name], clock[0] = now - clock[0], now

    columns = [
        "raw",
        "event_id",
        "event_type",
        "user_id",
        "anonymous_id",
        "event_time",
        "kafka_partition",
        "kafka_offset",
    ]
    table = pq.read_table(root / "events", columns=columns, filters=[("valid", "=", True)])
    ts = table["event_time"].cast(pa.timestamp("ms", "UTC")).cast(pa.int64())
    table = table.set_column(table.schema.get_field_index("event_time"), "ts", ts)
    df = table.drop_columns(["raw"]).to_pandas()
    df["profile_id"] = df["user_id"].fillna(df["anonymous_id"])
    phase("read")
    # Each (profile, event_id) once: the first in Kafka order, as the stream applies it.
    df = df.sort_values(["kafka_partition", "kafka_offset"], kind="stable")
    df = df[~df.duplicated(["profile_id", "event_id"], keep="first")]
    phase("dedupe")
    metadata = _parse_metadata(table["raw"].cast(pa.large_binary()).take(pa.array(df.index.to_numpy())))
    metadata.index = df.index
    phase("parse_json")

    ev = df[["profile_id", "event_type", "ts", "user_id", "anonymous_id"]].copy()
    ev["pcode"], profile_ids = pd.factorize(ev["profile_id"])
    product = metadata["product_id"].fillna("")
    ev["product_id"] = product
    category = metadata["category"].where(metadata["category"].fillna("") != "", product.map(categories))
    ev["category"] = category.fillna("").where(ev["event_type"] == "page_view", "")
    quantity = metadata["quantity"].fillna(1).astype("int64")
    # The built-in measures (streaming/traits/measures.py), 0 where the measure is None; the
    # has_* masks mark the events a trait reads (None, as 0 engagement points, adds no cell).
    sign = ev["event_type"].map(CART_SIGNS).fillna(0).astype("int64")
    ev["has_cart"] = (product != "") & (sign != 0)
    ev["cart_change"] = sign * quantity
    micros = np.round(metadata["price"].to_numpy() * quantity.to_numpy() * MICROS)  # half to even, as round()
    ev["has_purchase"] = (ev["event_type"] == "purchase") & ~np.isnan(micros)
    ev["purchase_micros"] = np.where(ev["has_purchase"], np.nan_to_num(micros), 0).astype("int64")
    points = ev["event_type"].map(ENGAGEMENT_POINTS).fillna(DEFAULT_ENGAGEMENT_POINTS)
    ev["engagement"] = points.astype("int64")
    ev["has_engagement"] = ev["engagement"] != 0
    phase("deltas")

    ev = ev.sort_values(["pcode", "ts"], kind="stable")
    starts = (ev["pcode"] != ev["pcode"].shift()) | (ev["ts"].diff() > session_gap_ms)
    grouped = ev.groupby("pcode", sort=True)
    profiles = pd.DataFrame(
        {
            "user_id": grouped["user_id"].first(),
            "last_seen": grouped["ts"].max(),
            "session_count": starts.groupby(ev["pcode"]).sum(),
            "last_session_start": ev["ts"].where(starts).groupby(ev["pcode"]).max().astype("int64"),
        }
    )
    profiles.insert(0, "profile_id", profile_ids[profiles.index])

    def entries(kind: str, frame: pd.DataFrame) -> pd.DataFrame:
        frame.columns = ["pcode", "key", "value"]
        return frame.assign(kind=kind)

    linked = ev[ev["user_id"].notna() & ev["anonymous_id"].notna()][["pcode", "anonymous_id"]]
    linked = linked.drop_duplicates().assign(value=0)
    latest = ev[ev["product_id"] != ""].groupby(["pcode", "product_id"])["ts"].max().reset_index()
    latest = latest.sort_values(["pcode", "ts", "product_id"], ascending=[True, False, False])
    latest = latest.groupby("pcode").head(LAST_PRODUCTS_LIMIT)[["pcode", "product_id", "ts"]]
    keyed = pd.concat([entries("a", linked), entries("p", latest)])
    keyed.insert(0, "profile_id", profile_ids[keyed["pcode"].to_numpy()])

    # The built-in traits' cells under their stored names (builtin_traits' stored_as): one per
    # profile (and key) with at least one event whose measure is not None, as the SQL groups them.
    def cells(field: str, values: pd.Series) -> pd.DataFrame:
        """Per-profile values as cells named ``field``; per (profile, key): ``field`` + key."""
        index = values.index
        return pd.DataFrame(
            {
                "pcode": index.get_level_values(0).to_numpy(),
                "field": field + index.get_level_values(1).astype(str) if index.nlevels == 2 else field,
                "n": values.to_numpy("int64"),
            }
        )

    carts = ev[ev["has_cart"]].groupby(["pcode", "product_id"])["cart_change"].sum()
    cell = pd.concat(
        [
            cells("event_count", grouped.size()),
            cells("first_seen", grouped["ts"].min()),
            cells("last_seen", grouped["ts"].max()),
            cells("t:", ev.groupby(["pcode", "event_type"]).size()),
            cells("v:", ev[ev["category"] != ""].groupby(["pcode", "category"]).size()),
            cells("c:", carts),  # sums <= 0 too, as the SQL: the document shows the positive ones
            cells("purchase_micros", ev[ev["has_purchase"]].groupby("pcode")["purchase_micros"].sum()),
            cells("engagement", ev[ev["has_engagement"]].groupby("pcode")["engagement"].sum()),
        ],
        ignore_index=True,
    )
    tables = ProfileTables(
        pa.Table.from_pandas(profiles[list(PROFILE_COLUMNS)], preserve_index=False),
        pa.Table.from_pandas(keyed[list(ENTRY_COLUMNS)].astype({"value": "int64"}), preserve_index=False),
        # The pandas variant is a baseline of the built-in profile: no user, windowed or decayed traits.
        pa.table(
            [
                pa.array(np.asarray(profile_ids)[cell["pcode"].to_numpy()], pa.string()),
                pa.array(cell["field"].to_numpy(object), pa.string()),
                pa.array(cell["n"].to_numpy("int64"), pa.int64()),
                pa.nulls(len(cell), pa.float64()),
                pa.nulls(len(cell), pa.string()),
            ],
            names=list(CELL_COLUMNS),
        ),
    )
    phase("aggregate")
    return tables


def sql_recompute(
    root: Path,
    categories: dict[str, str],
    session_gap_ms: int,
    memory_limit: str | None = None,
    spill: Path | None = None,
) -> ProfileTables:
    with duckdb.connect() as con:
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        if spill:
            con.execute(f"SET temp_directory = '{spill}'")
        return recompute_tables(con, root, categories, session_gap_ms)


# --- child processes: one measurement each ------------------------------------------------------


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_recompute(impl: str, root: Path, out: Path, memory_limit: str | None = None) -> dict[str, Any]:
    categories = catalog_categories()
    baseline = _rss_mib()
    phases: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if impl == "duckdb":
        tables = sql_recompute(root, categories, SESSION_GAP_MS, memory_limit, out / "spill")
    else:
        tables = pandas_recompute(root, categories, SESSION_GAP_MS, phases)
    seconds = time.perf_counter() - began
    peak = _peak_mib()
    pq.write_table(tables.profiles.select(list(PROFILE_COLUMNS)), out / "profiles.parquet")
    pq.write_table(tables.entries.select(list(ENTRY_COLUMNS)), out / "entries.parquet")
    pq.write_table(tables.cells.select(list(CELL_COLUMNS)), out / "cells.parquet")
    return {
        "impl": impl,
        "seconds": seconds,
        "phases": phases,
        "peak_rss_mib": peak,
        "rss_before_mib": baseline,
        "profiles": tables.profiles.num_rows,
        "entries": tables.entries.num_rows,
        "cells": tables.cells.num_rows,
    }


def child_python(root: Path) -> dict[str, Any]:
    """The recompute `pulse reconcile` runs today: every event through check_record and the reference."""
    baseline = _rss_mib()
    began = time.perf_counter()
    events = read_valid_events(root)
    read = time.perf_counter() - began
    docs = recompute_profiles((e.raw for e in events), Catalog("bench", catalog_categories()), SESSION_GAP_MS)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "read_seconds": read,
        "peak_rss_mib": _peak_mib(),
        "rss_before_mib": baseline,
        "profiles": len(docs),
    }


def _store(redis_url: str) -> Any:
    import redis

    from streaming.profiles.store import RedisProfileStore

    client = redis.Redis.from_url(redis_url)
    return RedisProfileStore(
        client, dedupe_window_seconds=DEDUPE_WINDOW_SECONDS, session_gap_ms=SESSION_GAP_MS
    )


def child_load(root: Path, redis_url: str) -> dict[str, Any]:
    """Apply every archived record to Redis as the profile app does, each partition in offset order."""
    from streaming.profile_app.pipeline import check_record

    store = _store(redis_url)
    catalog = Catalog("bench", catalog_categories())
    began, check_seconds, applied, records = time.perf_counter(), 0.0, 0, 0
    query = (
        f"FROM read_parquet('{archive_glob(root)}') "
        "SELECT raw ORDER BY kafka_topic, kafka_partition, kafka_offset"
    )
    with duckdb.connect() as con:
        for batch in con.sql(query).to_arrow_reader(LOAD_BATCH):
            records += batch.num_rows
            started = time.perf_counter()
            checked = (check_record(raw, catalog) for raw in batch.column(0).to_pylist())
            deltas = [c.delta for c in checked if c.delta is not None]
            check_seconds += time.perf_counter() - started
            applied += store.apply_deltas(deltas)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "check_seconds": check_seconds,
        "records": records,
        "applied": applied,
        "peak_rss_mib": _peak_mib(),
    }


def child_reconcile(root: Path, redis_url: str) -> dict[str, Any]:
    """A full reconciliation with the SQL recompute as the batch side, each step timed."""
    from assets.reconciliation import diff_profiles, live_documents, live_profile_ids

    store = _store(redis_url)
    steps: dict[str, float] = {}
    began = mark = time.perf_counter()

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[name], mark = now - mark, now

    tables = sql_recompute(root, catalog_categories(), SESSION_GAP_MS)
    step("sql_recompute")
    as_of = int(time.time() * 1000)  # both sides read windows and decay at the same time
    batch = dict(documents(tables, now_ms=as_of))
    step("documents")
    ids = set(live_profile_ids(store.client)) | set(batch)
    step("scan_live_ids")
    live = live_documents(store, ids, now_ms=as_of)
    step("live_documents")
    report = diff_profiles(batch, live)
    step("diff_profiles")
    seconds = time.perf_counter() - began
    # The diff is not vacuous: 100 wrong counts and 10 profiles missing from the batch side are found.
    drifted = sorted(batch)[:110]
    for profile_id in drifted[:100]:
        batch[profile_id] = {**batch[profile_id], "event_count": batch[profile_id]["event_count"] + 1}
    for profile_id in drifted[100:]:
        del batch[profile_id]
    injected = diff_profiles(batch, live)
    return {
        "seconds": seconds,
        "steps": steps,
        "injected_drift_found": {
            "mismatched": injected.mismatched,
            "extra_in_redis": injected.extra_in_redis,
        },
        "peak_rss_mib": _peak_mib(),
        "report": report.as_dict(),
    }


def run_child(*args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.batch_recompute", "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- checks in the parent -----------------------------------------------------------------------


def compare_outputs(left: Path, right: Path) -> dict[str, int]:
    """Rows of each output table missing from the other (0 everywhere = identical), and totals.

    Cells are compared on the built-in ones pandas computes (PANDAS_CELLS, PANDAS_CELL_PREFIXES).
    """
    fields = ", ".join(f"'{f}'" for f in PANDAS_CELLS)
    prefixes = "".join(f" OR starts_with(field, '{p}')" for p in PANDAS_CELL_PREFIXES)
    builtin = f"WHERE field IN ({fields}){prefixes}"
    result: dict[str, int] = {}
    with duckdb.connect() as con:
        for name in ("profiles", "entries", "cells"):
            where = builtin if name == "cells" else ""
            a = f"(FROM read_parquet('{left / name}.parquet') {where})"
            b = f"(FROM read_parquet('{right / name}.parquet') {where})"
            for label, x, y in ((f"{name}_only_duckdb", a, b), (f"{name}_only_pandas", b, a)):
                result[label] = con.execute(
                    f"SELECT count(*) FROM (FROM {x} EXCEPT ALL FROM {y})"
                ).fetchone()[0]
        totals = con.execute(
            "SELECT count(*), sum(session_count), "
            f"(SELECT count(*) FROM read_parquet('{left}/cells.parquet') {builtin}) "
            f"FROM read_parquet('{left}/profiles.parquet')"
        ).fetchone()
        sums = con.execute(
            "SELECT sum(n) FILTER (field = 'event_count'), sum(n) FILTER (field = 'purchase_micros'), "
            f"sum(n) FILTER (field = 'engagement') FROM read_parquet('{left}/cells.parquet')"
        ).fetchone()
    names = ("profiles", "sessions", "builtin_cells", "events", "purchase_micros", "engagement")
    result.update(zip(names, (*totals, *sums), strict=True))
    return result


def archive_stats(root: Path) -> dict[str, Any]:
    with duckdb.connect() as con:
        records, valid, distinct, profiles, hours = con.execute(
            "SELECT count(*), count(*) FILTER (valid), "
            "count(DISTINCT (coalesce(user_id, anonymous_id), event_id)) FILTER (valid), "
            "count(DISTINCT coalesce(user_id, anonymous_id)) FILTER (valid), count(DISTINCT (dt, hour)) "
            f"FROM read_parquet('{archive_glob(root)}', hive_partitioning = true)"
        ).fetchone()
    files = list((root / "events").glob("dt=*/hour=*/*.parquet"))
    mib = sum(f.stat().st_size for f in files) / 2**20
    return {
        "records": records,
        "valid": valid,
        "distinct_events": distinct,
        "profiles": profiles,
        "hours": hours,
        "files": len(files),
        "mib": mib,
    }


def subset_check(root: Path, work: Path, target_events: int) -> dict[str, Any]:
    """SQL, pandas and the stream-exact Python recompute on every event of a sample of profiles."""
    sub = work / "subset"
    sub.mkdir()
    source = f"read_parquet('{archive_glob(root)}', hive_partitioning = true, hive_types_autocast = false)"
    with duckdb.connect() as con:
        modulus = max(
            1, con.execute(f"SELECT count(*) FROM {source} WHERE valid").fetchone()[0] // target_events
        )
        con.execute(
            f"COPY (FROM {source} "
            f"WHERE hash(coalesce(user_id, anonymous_id, kafka_offset::VARCHAR)) % {modulus} = 0) "
            f"TO '{sub / 'events'}' (FORMAT parquet, PARTITION_BY (dt, hour))"
        )
    # A checkpoint archived twice (the archiver crashed after writing, before committing).
    first = sorted((sub / "events").glob("dt=*/hour=*/*.parquet"))[0]
    shutil.copy(first, first.with_name("redelivered.parquet"))
    redelivered = pq.ParquetFile(first).metadata.num_rows
    categories = catalog_categories()
    events = read_valid_events(sub)
    as_of = int(time.time() * 1000)  # windows and decay read at one time by every variant
    python = recompute_profiles(
        (e.raw for e in events), Catalog("bench", categories), SESSION_GAP_MS, now_ms=as_of
    )
    sql = dict(documents(sql_recompute(sub, categories, SESSION_GAP_MS), now_ms=as_of))
    # pandas computes the built-in profile only: compare it on everything but the other traits.
    skipped = PANDAS_SKIPPED_FIELDS
    untraited = {k: {f: v for f, v in d.items() if f not in skipped} for k, d in python.items()}
    pandas = {
        k: {f: v for f, v in d.items() if f not in skipped}
        for k, d in documents(pandas_recompute(sub, categories, SESSION_GAP_MS), now_ms=as_of)
    }
    shutil.rmtree(sub)
    return {
        "valid_records": len(events),
        "redelivered_rows": redelivered,
        "profiles": len(python),
        "sql_equal": sum(sql.get(k) == v for k, v in python.items()),
        "pandas_equal": sum(pandas.get(k) == v for k, v in untraited.items()),
        "sql_extra": len(set(sql) - set(python)),
        "pandas_extra": len(set(pandas) - set(python)),
    }


def _recompute_runs(root: Path, work: Path, repeat: int, memory_limit: str | None) -> None:
    runs: dict[str, list[float]] = {"duckdb": [], "pandas": []}
    for round_ in range(repeat):
        for impl in ("duckdb", "pandas") if round_ % 2 == 0 else ("pandas", "duckdb"):
            result = run_child(impl, str(root), str(work / impl))
            runs[impl].append(result["seconds"])
            phases = "".join(f", {k} {v:.1f}" for k, v in result["phases"].items())
            print(
                f"{impl}: {result['seconds']:.1f} s{phases}, peak RSS {result['peak_rss_mib']:,.0f} MiB "
                f"(after imports {result['rss_before_mib']:,.0f}), {result['profiles']:,} profiles, "
                f"{result['entries']:,} entries, {result['cells']:,} cells",
                flush=True,
            )
    if memory_limit:
        result = run_child("duckdb", str(root), str(work / "duckdb-limited"), memory_limit)
        print(
            f"duckdb with memory_limit={memory_limit}: {result['seconds']:.1f} s, "
            f"peak RSS {result['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
    duck, pand = min(runs["duckdb"]), min(runs["pandas"])
    print(
        f"DuckDB / pandas time (best of {repeat}) = {duck / pand:.3f} (pandas {pand / duck:.1f}x slower)",
        flush=True,
    )
    print(
        "duckdb vs pandas outputs:", json.dumps(compare_outputs(work / "duckdb", work / "pandas")), flush=True
    )


def _reconcile_runs(root: Path, work: Path) -> None:
    from orchestration.local_services import start_redis

    proc, url = start_redis(work, persist=False)
    try:
        load = run_child("load", str(root), url)
        print(
            f"redis load (check_record + apply_deltas): {load['seconds']:.0f} s "
            f"for {load['records']:,} records "
            f"({load['applied']:,} applied, check_record {load['check_seconds']:.0f} s)",
            flush=True,
        )
        result = run_child("reconcile", str(root), url)
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in result["steps"].items())
        print(
            f"reconcile: {result['seconds']:.1f} s ({steps}), peak RSS {result['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
        report = {k: v for k, v in result["report"].items() if k != "examples"}
        print(
            "reconcile report:", json.dumps(report), json.dumps(result["report"]["examples"][:3]), flush=True
        )
        print(
            "injected drift (100 wrong counts, 10 profiles missing from the batch side) found:",
            json.dumps(result["injected_drift_found"]),
            flush=True,
        )
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--archive", type=Path, help="reuse this archive root instead of generating one")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder (default: the system's)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (and a generated archive)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="recompute runs per implementation")
    parser.add_argument(
        "--duckdb-memory-limit", help="one more SQL run under this DuckDB memory_limit (e.g. 4GB)"
    )
    parser.add_argument("--no-redis", action="store_true", help="skip loading Redis and reconciling")
    parser.add_argument(
        "--python-baseline",
        action="store_true",
        help="also time recompute_profiles (what `pulse reconcile` runs)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        handlers = {
            "duckdb": lambda: child_recompute("duckdb", Path(rest[0]), Path(rest[1]), *rest[2:]),
            "pandas": lambda: child_recompute("pandas", Path(rest[0]), Path(rest[1])),
            "python": lambda: child_python(Path(rest[0])),
            "load": lambda: child_load(Path(rest[0]), rest[1]),
            "reconcile": lambda: child_reconcile(Path(rest[0]), rest[1]),
        }
        print(json.dumps(handlers[kind]()))
        return

    work = Path(tempfile.mkdtemp(prefix="pulse-batch-bench-", dir=args.workdir))
    try:
        root = args.archive
        if root is None:
            root = work / "archive"
            began = time.perf_counter()
            generate_archive(root, events=args.events, users=args.users)
            print(f"archive generated in {time.perf_counter() - began:.0f} s at {root}", flush=True)
        print("archive:", json.dumps(archive_stats(root)), flush=True)
        _recompute_runs(root, work, args.repeat, args.duckdb_memory_limit)
        print(
            "sample vs recompute_profiles:", json.dumps(subset_check(root, work, SUBSET_EVENTS)), flush=True
        )
        if args.python_baseline:
            result = run_child("python", str(root))
            print(
                f"python recompute_profiles: {result['seconds']:.1f} s "
                f"(reading {result['read_seconds']:.1f} s), "
                f"peak RSS {result['peak_rss_mib']:,.0f} MiB, {result['profiles']:,} profiles",
                flush=True,
            )
        if not args.no_redis:
            _reconcile_runs(root, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
