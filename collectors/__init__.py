"""Everything that produces outcome data, with no Dagster: the built-in benchmark, answer scoring, model
clients, importers of published routing data, the model registry and the simulated candidate pool.

May import: `warehouse` (schemas, atomic storage). Never `router`, `assets` or `pipelines`.
"""
