"""Importers of published routing data (MMR-Bench CSV, VL-RouterBench folders, long format, query JSONL):
one module per format, row validation, and ingest into the warehouse.

May import: `collectors.registry`, `warehouse`.
"""
