"""The archiver app: every raw event, valid or not, and every dead letter, to hive-partitioned Parquet."""
