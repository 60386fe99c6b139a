"""Pure enrichers and the reference data (product catalog) they read."""
