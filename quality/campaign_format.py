"""The campaigns reference table's key columns, shared by its schema and the campaign lookup."""

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign")
#: A ``*`` in a row's utm_* column matches any value there.
CAMPAIGN_WILDCARD = "*"
