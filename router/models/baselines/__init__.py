"""Baseline routers of the LatentRouter paper's Table 1 and of MMR-Bench / VL-RouterBench, by family, all
behind `router.models.base.Router`.

Families: ``fixed`` (training-free: Oracle, Strongest, Cheapest, Random), ``group_best`` (best model per task /
dataset label), ``neighbours`` (KNN, KMeans), ``factorisation`` (MLPMF, RouteLLM-MF), ``classifiers`` (the
VL-RouterBench soft-label feature router) and the learned routers of Table 1: ``ecvl`` (ECVL-Router), ``routerdc``
(RouterDC), ``graphrouter`` (GraphRouter) and ``r2router`` (R2-Router);
``common`` holds the fit-row guard and the torch training loop they share. Input features are
``data.pooled`` (L2-normalised concat of pooled image, text and side features).

May import: `router.data`, `router.models.base`, torch, scikit-learn.
"""

from __future__ import annotations

from router.models.baselines.classifiers import VLFeatureConfig, VLFeatureRouter, soft_labels
from router.models.baselines.common import TorchTrainConfig, fit_rows
from router.models.baselines.ecvl import ECVLConfig, ECVLRouter
from router.models.baselines.factorisation import MLPMFConfig, MLPMFRouter, RouteLLMConfig, RouteLLMMFRouter
from router.models.baselines.fixed import CheapestRouter, OracleRouter, RandomRouter, StrongestRouter
from router.models.baselines.graphrouter import GraphRouter, GraphRouterConfig
from router.models.baselines.group_best import GroupBestConfig, GroupBestRouter
from router.models.baselines.neighbours import KMeansConfig, KMeansRouter, KNNConfig, KNNRouter
from router.models.baselines.r2router import R2Router, R2RouterConfig
from router.models.baselines.routerdc import RouterDCConfig, RouterDCRouter

__all__ = [
    "CheapestRouter", "ECVLConfig", "ECVLRouter", "GraphRouter", "GraphRouterConfig", "GroupBestConfig",
    "GroupBestRouter", "KMeansConfig", "KMeansRouter", "KNNConfig", "KNNRouter", "MLPMFConfig", "MLPMFRouter", "OracleRouter", "R2Router",
    "R2RouterConfig", "RandomRouter", "RouteLLMConfig", "RouteLLMMFRouter", "RouterDCConfig", "RouterDCRouter",
    "StrongestRouter", "TorchTrainConfig", "VLFeatureConfig", "VLFeatureRouter", "fit_rows", "soft_labels",
]
