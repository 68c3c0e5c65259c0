"""The warehouse: declared table schemas, atomic Parquet storage under `$LROUTER_HOME/warehouse`, the DuckDB
catalog of views and its read-only query path.

May import: polars, pyarrow, duckdb. Nothing of ours.
"""
