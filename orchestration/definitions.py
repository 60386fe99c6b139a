"""The one Dagster code location: assets from assets/, enrichment/ and quality/."""

import dagster as dg

from enrichment import assets as enrichment_assets
from orchestration.resources import default_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([enrichment_assets]),
    resources=default_resources(),
)
