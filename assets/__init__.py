"""Thin Dagster assets and asset checks, by domain (`collection`, `features`, `routing`, `evaluation`), and the
resources and IO manager they use. Each asset wires inputs to a function of `collectors`/`router` and
attaches metadata.

May import: `collectors`, `router`, `warehouse`, dagster. Never `pipelines`.
"""
