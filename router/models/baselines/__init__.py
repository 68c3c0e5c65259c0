"""Baseline routers of the LatentRouter paper's Table 1 and of MMR-Bench / VL-RouterBench, by family, all
behind `router.models.base.Router`.

Families: ``fixed`` (training-free: Oracle, Strongest, Cheapest, Random), ``neighbours`` (KNN, KMeans),
``factorisation`` (MLPMF, RouteLLM-MF) and ``classifiers`` (the VL-RouterBench soft-label feature router);
``common`` holds the fit-row guard and the torch training loop they share. Input features are
``data.pooled`` (L2-normalised concat of pooled image, text and side features).

May import: `router.data`, `router.models.base`, torch, scikit-learn.
"""

from __future__ import annotations

from router.models.base import Router
from router.models.baselines.classifiers import VLFeatureConfig, VLFeatureRouter, soft_labels
from router.models.baselines.common import TorchTrainConfig, fit_rows
from router.models.baselines.factorisation import MLPMFConfig, MLPMFRouter, RouteLLMConfig, RouteLLMMFRouter
from router.models.baselines.fixed import CheapestRouter, OracleRouter, RandomRouter, StrongestRouter
from router.models.baselines.neighbours import KMeansRouter, KNNRouter

BASELINES: dict[str, type[Router]] = {
    cls.name: cls
    for cls in (OracleRouter, StrongestRouter, CheapestRouter, RandomRouter, KNNRouter, KMeansRouter,
                MLPMFRouter, RouteLLMMFRouter, VLFeatureRouter)
}
"""Baseline class by its short ``Router.name`` (Table 1 order); each builds with its defaults."""

__all__ = [
    "BASELINES", "CheapestRouter", "KMeansRouter", "KNNRouter", "MLPMFConfig", "MLPMFRouter", "OracleRouter",
    "RandomRouter", "RouteLLMConfig", "RouteLLMMFRouter", "StrongestRouter", "TorchTrainConfig", "VLFeatureConfig",
    "VLFeatureRouter", "fit_rows", "soft_labels",
]
