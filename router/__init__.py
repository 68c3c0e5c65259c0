"""Routing, with no Dagster and no `collectors`: features, routing data, capability profiles, LatentRouter and
the baselines, training, evaluation and reports, and the routing service.

May import: `warehouse`. Never `collectors`, `assets` or `pipelines`.
"""
