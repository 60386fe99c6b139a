"""The one Dagster code location: assets from assets/, enrichment/ and quality/, jobs from orchestration/."""

import dagster as dg

from assets import analyst_views, reconciliation_assets
from enrichment import assets as enrichment_assets
from orchestration.jobs import replay_job
from orchestration.resources import default_resources
from quality import archive_assets

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([enrichment_assets, analyst_views, reconciliation_assets, archive_assets]),
    asset_checks=dg.load_asset_checks_from_modules([reconciliation_assets]),
    jobs=[replay_job],
    resources=default_resources(),
)
