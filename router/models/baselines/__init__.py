"""Baseline routers of the LatentRouter paper's Table 1 and of MMR-Bench / VL-RouterBench, by family, all
behind `router.models.base.Router`.

May import: `router.data`, `router.models.base`, torch, scikit-learn.
"""
