"""Pandera schemas of reference data (validated before anything is published)."""

import pandera.pandas as pa

CATALOG_SCHEMA = pa.DataFrameSchema(
    {
        "product_id": pa.Column(str, checks=pa.Check.str_length(1, 256), unique=True),
        "category": pa.Column(str, checks=pa.Check.str_length(1, 256)),
        "price": pa.Column(float, checks=pa.Check.ge(0), coerce=True, required=False),
    },
    strict=False,
    name="product_catalog",
)
