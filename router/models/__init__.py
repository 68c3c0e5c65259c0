"""Routers: the one-method `Router` interface, LatentRouter (the paper's model) and the baselines.

May import: `router.data`, torch, scikit-learn. Nothing of the warehouse: models see `RoutingData` only.
"""
