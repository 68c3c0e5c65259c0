"""The in-memory routing dataset every router (LatentRouter and baselines) trains and is evaluated on.

`RoutingData` is the one contract between the warehouse tables (queries, features, traces, splits,
profiles) and the learning code: dense arrays indexed by query (N) and model (K). It is built by
`router.data.build.build_routing_data` from real tables, or by `synthetic_routing_data` for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from warehouse.vocabulary import TASK_GROUPS


@dataclass
class RoutingData:
    query_ids: list[str]  # N
    model_ids: list[str]  # K
    # token sequences the capsules attend over ([V;Q] of the paper); masks are True where valid
    img_tokens: np.ndarray | None  # [N, Ti, Di] float16/32, None in text-only mode
    img_mask: np.ndarray | None  # [N, Ti] bool
    txt_tokens: np.ndarray  # [N, Tq, Dq]
    txt_mask: np.ndarray  # [N, Tq] bool
    pooled: np.ndarray  # [N, D] float32: L2-normalised concat of pooled image, text and side features
    side: np.ndarray  # [N, S] float32 side features (task one-hots, question length, image size)
    quality: np.ndarray  # [N, K] float32 in [0, 1]; 0 where not available
    cost: np.ndarray  # [N, K] float32 realised cost normalised within the benchmark (see normalise_cost)
    cost_usd: np.ndarray  # [N, K] float64 realised cost in USD
    avail: np.ndarray  # [N, K] bool: the model has an ok trace for the query
    exp_cost: np.ndarray  # [N, K] float32 normalised cost known BEFORE answering (price x expected tokens)
    model_feats: np.ndarray  # [K, P] float32 standardised capability-profile vectors (calibration only)
    model_feat_names: list[str]  # P
    split: np.ndarray  # [N] str: one of warehouse.vocabulary.SPLIT_NAMES
    task_group: np.ndarray  # [N] str
    dataset: np.ndarray  # [N] str
    simulated: list[bool] = field(default_factory=list)  # K: model is from the simulated pool
    text_only: bool = False
    latency_ms: np.ndarray | None = None  # [N, K] realised latency

    @property
    def n(self) -> int:
        return len(self.query_ids)

    @property
    def k(self) -> int:
        return len(self.model_ids)

    def idx(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def utility(self, lam: float) -> np.ndarray:
        """u_i = y_i - lambda * c_i with the realised normalised cost (what routers are judged on)."""
        return self.quality - lam * self.cost

    def subset_models(self, keep: list[str]) -> RoutingData:
        """The same queries restricted to the models in ``keep`` (order of ``keep``)."""
        cols = [self.model_ids.index(m) for m in keep]
        return replace(
            self,
            model_ids=list(keep),
            quality=self.quality[:, cols],
            cost=self.cost[:, cols],
            cost_usd=self.cost_usd[:, cols],
            avail=self.avail[:, cols],
            exp_cost=self.exp_cost[:, cols],
            model_feats=self.model_feats[cols],
            simulated=[self.simulated[c] for c in cols] if self.simulated else [],
            latency_ms=None if self.latency_ms is None else self.latency_ms[:, cols],
        )


def normalise_cost(cost_usd: np.ndarray, avail: np.ndarray, train_rows: np.ndarray) -> tuple[np.ndarray, float]:
    """Divide costs by the largest per-model mean cost on train rows (a train-only normaliser).

    Returns the normalised [N, K] matrix and the scale used, so the same scale can be re-applied to a
    model added later.
    """
    c = np.where(avail, cost_usd, np.nan)[train_rows]
    with np.errstate(invalid="ignore"):
        means = np.nanmean(c, axis=0)
    scale = float(np.nanmax(means)) if np.isfinite(means).any() and np.nanmax(means) > 0 else 1.0
    return (np.nan_to_num(cost_usd, nan=0.0) / scale).astype(np.float32), scale


def synthetic_routing_data(
    n: int = 600,
    k: int = 5,
    seed: int = 0,
    ti: int = 8,
    di: int = 16,
    tq: int = 6,
    dq: int = 12,
    text_only: bool = False,
) -> RoutingData:
    """A small dataset with a planted query-dependent preference reversal, for unit tests.

    Each query has a latent type t in {0..3} visible in its image tokens; each model is good at some
    types and bad at others, so the best model changes with the query and no additive score fits.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 4, size=n)
    proto_i = rng.normal(size=(4, di)).astype(np.float32)
    proto_q = rng.normal(size=(4, dq)).astype(np.float32)
    img = proto_i[types][:, None, :] + 0.5 * rng.normal(size=(n, ti, di)).astype(np.float32)
    txt = 0.3 * proto_q[types][:, None, :] + rng.normal(size=(n, tq, dq)).astype(np.float32)
    skill = rng.uniform(0.1, 0.9, size=(k, 4))
    skill[0] = [0.9, 0.2, 0.8, 0.2]
    if k > 1:
        skill[1] = [0.2, 0.9, 0.2, 0.8]
    p = skill[:, types].T  # [N, K]
    quality = (rng.uniform(size=(n, k)) < p).astype(np.float32)
    price = np.linspace(0.2, 1.0, k)
    cost_usd = (price[None, :] * rng.uniform(0.8, 1.2, size=(n, k)) * 1e-4).astype(np.float64)
    avail = np.ones((n, k), dtype=bool)
    split = np.array(["train"] * n, dtype=object)
    perm = rng.permutation(n)
    split[perm[int(0.7 * n) : int(0.8 * n)]] = "val"
    split[perm[int(0.8 * n) :]] = "test"
    train = np.flatnonzero(split == "train")
    cost, _ = normalise_cost(cost_usd, avail, train)
    feats = np.concatenate([skill, price[:, None]], axis=1).astype(np.float32)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    side = np.eye(4, dtype=np.float32)[types] * 0.0  # side features carry no type information here
    pooled = np.concatenate([img.mean(1), txt.mean(1)], axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    return RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        model_ids=[f"m{j}" for j in range(k)],
        img_tokens=None if text_only else img,
        img_mask=None if text_only else np.ones((n, ti), dtype=bool),
        txt_tokens=txt,
        txt_mask=np.ones((n, tq), dtype=bool),
        pooled=pooled.astype(np.float32),
        side=side,
        quality=quality,
        cost=cost,
        cost_usd=cost_usd,
        avail=avail,
        exp_cost=np.broadcast_to(cost[train].mean(0), (n, k)).astype(np.float32).copy(),
        model_feats=feats,
        model_feat_names=[f"skill_{t}" for t in range(4)] + ["price"],
        split=split,
        task_group=np.array(TASK_GROUPS, dtype=object)[types],
        dataset=np.array(["synthetic"] * n, dtype=object),
        simulated=[True] * k,
        text_only=text_only,
    )
