"""Read a reference CSV (file or URL), validate it with Pandera, publish it as a new version (I/O).

One path for every dataset, used by the Dagster assets and by `pulse up`. Publishing is all
or nothing: a file with a single bad row publishes nothing and the live version stays.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pandera.errors
import pandera.pandas as pa
import redis

from enrichment.campaigns import SAMPLE_CAMPAIGNS, UTM_FIELDS, normalize_utm
from enrichment.catalog import SAMPLE_CATALOG
from enrichment.geo import SAMPLE_GEO
from enrichment.reference_store import CAMPAIGNS, CATALOG, GEO, ROW_IDS, current_version, publish_reference
from quality.reference_schemas import CAMPAIGNS_SCHEMA, CATALOG_SCHEMA, GEO_SCHEMA

logger = logging.getLogger(__name__)

URL_TIMEOUT_SECONDS = 30.0


class ReferenceInvalid(ValueError):
    """A reference file could not be read or failed validation; nothing was published."""

    def __init__(self, message: str, failures: pd.DataFrame, rows: int, rejects: int) -> None:
        super().__init__(message)
        self.failures = failures
        self.rows = rows
        self.rejects = rejects


def _normalize_utm_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(**{c: frame[c].map(normalize_utm) for c in UTM_FIELDS if c in frame})


@dataclass(frozen=True)
class ReferenceSpec:
    """A reference dataset: its Redis name, its schema, its sample file and how rows are prepared."""

    dataset: str
    schema: pa.DataFrameSchema
    sample: Path
    prepare: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame


CATALOG_SPEC = ReferenceSpec(CATALOG, CATALOG_SCHEMA, SAMPLE_CATALOG)
GEO_SPEC = ReferenceSpec(GEO, GEO_SCHEMA, SAMPLE_GEO)
CAMPAIGNS_SPEC = ReferenceSpec(CAMPAIGNS, CAMPAIGNS_SCHEMA, SAMPLE_CAMPAIGNS, prepare=_normalize_utm_columns)
SPECS = {spec.dataset: spec for spec in (CATALOG_SPEC, GEO_SPEC, CAMPAIGNS_SPEC)}


@dataclass(frozen=True)
class Published:
    version: str
    previous_version: str | None
    frame: pd.DataFrame


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def read_reference(source: str | Path) -> pd.DataFrame:
    """Every column as text ("NA" stays Namibia's code; only empty cells are missing)."""
    if is_url(source):
        response = httpx.get(str(source), timeout=URL_TIMEOUT_SECONDS, follow_redirects=True)
        response.raise_for_status()
        handle: io.StringIO | Path = io.StringIO(response.text)
    else:
        handle = Path(source)
    return pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])


def rejected_rows(failures: pd.DataFrame, rows: int) -> int:
    """Rows a failure report rules out; a failure without a row (say, a missing column) rules out all."""
    index = failures["index"] if "index" in failures else pd.Series([None])
    return rows if index.isna().any() else int(index.nunique())


def failure_summary(failures: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """One line per (row, check), with the CSV line number (header = line 1), for people to read."""
    if failures.empty or "check" not in failures:
        return failures.head(limit)
    frame = failures.assign(line=failures["index"].map(lambda i: None if pd.isna(i) else int(i) + 2))
    frame = frame.drop_duplicates(subset=["index", "check"]).sort_values("line", na_position="first")
    return (
        frame.reindex(columns=["line", "column", "check", "failure_case"]).head(limit).reset_index(drop=True)
    )


def validate_reference(
    spec: ReferenceSpec, frame: pd.DataFrame, source: str | Path, live: str | None
) -> pd.DataFrame:
    """The prepared frame, or ReferenceInvalid naming the problems."""
    prepared = spec.prepare(frame)
    try:
        spec.schema.validate(prepared, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        failures = exc.failure_cases
        raise ReferenceInvalid(
            f"{source} failed validation ({len(failures)} problem(s)); the live {spec.dataset} stays {live}",
            failures,
            len(frame),
            rejected_rows(failures, len(frame)),
        ) from None
    return prepared


def validate_and_publish(client: redis.Redis, spec: ReferenceSpec, source: str | Path) -> Published:
    """Read ``source``, validate it and publish it as a new version; raise ReferenceInvalid otherwise."""
    live = current_version(client, spec.dataset)
    try:
        frame = read_reference(source)
    except (
        OSError,
        httpx.HTTPError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
    ) as exc:
        reason = (
            f"HTTP {exc.response.status_code}"
            if isinstance(exc, httpx.HTTPStatusError)
            else f"{type(exc).__name__}: {exc}"
        )
        failures = pd.DataFrame([{"check": "readable CSV", "failure_case": reason, "index": None}])
        raise ReferenceInvalid(
            f"cannot read {source} ({reason}); the live {spec.dataset} stays {live}", failures, 0, 0
        ) from None
    prepared = validate_reference(spec, frame, source, live)
    if prepared.empty:
        raise ReferenceInvalid(
            f"{source} has no rows; the live {spec.dataset} stays {live}", pd.DataFrame(), 0, 0
        )
    version = publish_reference(
        client, spec.dataset, prepared.fillna("").astype(str).to_dict("records"), ROW_IDS[spec.dataset]
    )
    return Published(version, live, prepared)


def publish_missing_samples(client: redis.Redis) -> list[str]:
    """Publish the sample file of every dataset that has no live version yet (for `pulse up`)."""
    published = []
    for spec in SPECS.values():
        if current_version(client, spec.dataset) is None:
            published.append(f"{spec.dataset} {validate_and_publish(client, spec, spec.sample).version}")
    return published
