"""The purchase-intent model: trained on archived sessions, published for the profile app to score with."""

from datetime import UTC, datetime

import dagster as dg
import duckdb

from core.redis_client import redis_from_url
from core.resources import PulseResource
from streaming.profiles.intent import FEATURES, NotEnoughData, train_intent_model
from streaming.profiles.intent_store import publish_intent_model

SESSION_ROWS_SQL = """
SELECT page_views, clicks, adds_to_cart, removes_from_cart, searches, events - purchases AS events,
       date_diff('millisecond', started_at, ended_at) / 60000.0 AS minutes, purchases > 0 AS purchased
FROM sessions
"""
MIN_ROC_AUC = 0.6


def session_rows(duckdb_file: str) -> list[tuple[dict[str, int], float, bool]]:
    """(counts by type, minutes, purchased) for every session of the `sessions` table."""
    with duckdb.connect(duckdb_file, read_only=True) as con:
        rows = con.execute(SESSION_ROWS_SQL).fetchall()
    types = ("page_view", "click", "add_to_cart", "remove_from_cart", "search")
    return [(dict(zip(types, row[:5], strict=True)), float(row[6]), bool(row[7])) for row in rows]


@dg.asset(
    group_name="personalization",
    deps=["sessions"],
    kinds={"scikitlearn", "redis"},
    check_specs=[dg.AssetCheckSpec("intent_model_beats_chance", asset="intent_model")],
)
def intent_model(context: dg.AssetExecutionContext, pulse: PulseResource) -> dg.MaterializeResult:
    """Logistic regression of 'this session ends in a purchase' on the session's activity so far.

    Published to Redis as a new version with a pointer switch; the profile app picks it up
    within seconds and sets `intent_score` on every update (scored inside the update script).
    """
    settings = pulse.settings()
    sessions = session_rows(str(settings.data_path / "pulse.duckdb"))
    try:
        model = train_intent_model(sessions, trained_at=datetime.now(UTC).isoformat(timespec="seconds"))
    except NotEnoughData as exc:
        raise dg.Failure(
            description=f"cannot train the intent model: {exc}. "
            "Send more traffic (`pulse demo`) and materialize `sessions` again."
        ) from exc
    auc = model.metrics["roc_auc"]
    good = auc >= MIN_ROC_AUC
    version = None
    if good:
        version = publish_intent_model(redis_from_url(settings.redis_url), model)
    else:
        context.log.warning("intent model not published: held-out ROC AUC %.3f < %.2f", auc, MIN_ROC_AUC)
    coefficients = {name: round(weight, 4) for name, weight in zip(FEATURES, model.weights, strict=True)}
    return dg.MaterializeResult(
        metadata={
            **{name: dg.MetadataValue.float(float(value)) for name, value in model.metrics.items()},
            "published_version": version or "not published",
            "bias": round(model.bias, 4),
            "coefficients": dg.MetadataValue.json(coefficients),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="intent_model_beats_chance",
                passed=good,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"held-out ROC AUC {auc:.3f} (published only at {MIN_ROC_AUC} or more)",
                metadata={"roc_auc": auc},
            )
        ],
    )
