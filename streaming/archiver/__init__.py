"""The archiver app: every raw event, valid or not, to hive-partitioned Parquet."""
