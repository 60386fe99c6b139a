"""The one Dagster code location: assets from assets/, enrichment/ and quality/, jobs from orchestration/."""

import dagster as dg

from assets import (
    analyst_views,
    archive_compaction,
    batch_tables,
    dead_letter_volume,
    intent_model,
    pipeline_health,
    reconciliation_assets,
    trait_backfill,
)
from core.resources import default_resources
from enrichment import assets as enrichment_assets
from orchestration.jobs import forget_job, forget_schedule, rebuild_profiles_job, replay_job
from orchestration.sensors import health_job, health_schedule, post_run_failures, stream_health_sensor
from quality import archive_assets

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [
            enrichment_assets,
            analyst_views,
            archive_compaction,
            batch_tables,
            dead_letter_volume,
            reconciliation_assets,
            archive_assets,
            pipeline_health,
            intent_model,
            trait_backfill,
        ]
    ),
    asset_checks=dg.load_asset_checks_from_modules([reconciliation_assets]),
    jobs=[
        replay_job,
        rebuild_profiles_job,
        health_job,
        forget_job,
        archive_compaction.archive_compaction_job,
        trait_backfill.traits_backfill_job,
        reconciliation_assets.reconcile_job,
        dead_letter_volume.dead_letter_volume_job,
    ],
    schedules=[
        health_schedule,
        forget_schedule,
        archive_compaction.archive_compaction_schedule,
        reconciliation_assets.reconcile_schedule,
        dead_letter_volume.dead_letter_volume_schedule,
    ],
    sensors=[post_run_failures, stream_health_sensor, trait_backfill.new_traits_sensor],
    resources=default_resources(),
)
