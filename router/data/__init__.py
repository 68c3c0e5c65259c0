"""Routing data: splits, calibration-only capability profiles, and the `RoutingData` arrays every router
trains on, built from warehouse tables with train-only normalisers.

Modules: ``splits``, ``calibration`` (the trace rows profiles may read), ``profiles``, ``leakage`` (the proof
that no val/test row fed a profile), ``routing_data`` (RoutingData), ``build`` (RoutingData from tables) and
``warehouse_inputs`` (loading those tables).

May import: `router.features`, `warehouse`.
"""
