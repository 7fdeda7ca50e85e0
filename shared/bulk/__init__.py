"""Bulk jobs on Ray Data: classify a backlog of photos into Parquet (resumable), and train's feature pass."""
