"""RouterDC (Chen et al., NeurIPS 2024): a query encoder and learnable model embeddings trained with dual
contrastive losses; routing = the model whose embedding is most similar to the query's.

Follows the paper (Sec. 3) and its public training script: the score of model j for query x is
``cos(E(x), k_j) / t``; the *sample-LLM* loss makes each of the top-k models of a training query beat its
bottom-k models (``-log softmax([s_pos, s_negs])[0]``, summed over the k positives; a positive that did not
succeed is skipped and a "negative" at least as good as the positive is ignored); the *sample-sample* loss
clusters the training queries with k-means and, for every query in a batch, contrasts one in-cluster query
against H out-of-cluster queries on encoder similarity (InfoNCE). The total is
``L_sample-LLM + weight * L_sample-sample``.

Adaptation: the mDeBERTa encoder becomes an MLP over the shared ``data.pooled`` features (text-only data
simply has no image block in it); k-means runs on those same features. Cost awareness (the paper routes on
quality only): the training "scores" that rank positives and negatives are the utilities
``y - lambda * c`` of the training outcomes, one RouterDC per ``lambda`` in ``config.lambdas``; routing at
lambda uses the RouterDC trained at the nearest lambda (log(1 + lambda) scale), as the VL-RouterBench soft-label
router does. Checkpoint selection (the paper: best validation routing accuracy) is the best mean validation
utility of the argmax pick at the fit's lambda. Model embeddings exist only for the models seen in training,
so a model added later cannot be scored (the pool is fixed; mask models out with ``avail``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import (
    FittedOnModels,
    TorchTrainConfig,
    default_device,
    fit_split,
    mlp,
    n_params,
    positions,
    train_loop,
    train_means,
)


@dataclass
class RouterDCConfig:
    """RouterDC defaults from its release script: top-k = last-k = 3, t = 1 (cosine), H = 3 negatives,
    sample-sample (cluster) weight 1; ``n_clusters`` k-means clusters (5 here, tuned on validation by the
    evaluation); the encoder is an MLP ``hidden`` -> ``dim``."""

    hidden: tuple[int, ...] = (256,)
    dim: int = 128
    dropout: float = 0.1
    top_k: int = 3
    last_k: int = 3
    temperature: float = 1.0
    n_clusters: int = 5
    cluster_negatives: int = 3  # H
    cluster_weight: float = 1.0
    lambdas: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0)  # one RouterDC per training utility weight
    train: TorchTrainConfig = field(default_factory=lambda: TorchTrainConfig(batch_size=64))

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.last_k < 1 or self.cluster_negatives < 1 or self.n_clusters < 2:
            raise ValueError(f"RouterDCConfig needs top_k, last_k, cluster_negatives >= 1, n_clusters >= 2: {self}")
        if self.temperature <= 0 or self.cluster_weight < 0 or self.dim < 1:
            raise ValueError(f"RouterDCConfig needs temperature > 0, cluster_weight >= 0, dim >= 1: {self}")
        if not self.lambdas or any(not (lam >= 0 and np.isfinite(lam)) for lam in self.lambdas):
            raise ValueError(f"RouterDCConfig.lambdas must be non-empty, finite and >= 0, got {self.lambdas}")


class _DCNet(nn.Module):
    """Query encoder E (MLP) and the learnable model embeddings k_j (init N(0, 0.78^2) as released)."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], dim: int, k: int, dropout: float) -> None:
        super().__init__()
        self.encoder = mlp((d_in, *hidden, dim), dropout)
        self.models = nn.Parameter(torch.randn(k, dim) * 0.78)

    def forward(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [B, K] = cos(E(x), k_j) / t, encoder states [B, dim])."""
        h = self.encoder(x)
        return F.normalize(h, dim=-1) @ F.normalize(self.models, dim=-1).T / t, h


def sample_llm_loss(s: torch.Tensor, util: torch.Tensor, ok: torch.Tensor, avail: torch.Tensor,
                    top_k: int, last_k: int) -> torch.Tensor:
    """RouterDC's sample-LLM contrastive loss.

    ``s`` [B, K] scores, ``util`` [B, K] training utilities (the paper: scores), ``ok`` [B, K] the model
    succeeded (quality > 0), ``avail`` [B, K]. Each of the ``top_k`` best available models is a positive (if it
    succeeded) against the ``last_k`` worst available ones, ignoring negatives whose utility is not below the
    positive's; per positive ``-log softmax([s_pos, s_negs])[0]``, averaged over the batch, summed over positives.
    """
    k = s.shape[1]
    top_k, last_k = min(top_k, k), min(last_k, k)
    u_hi = util.masked_fill(~avail, -np.inf)
    u_lo = util.masked_fill(~avail, np.inf)
    pos_u, pos = u_hi.topk(top_k, dim=1)  # [B, top_k]
    neg_u, neg = u_lo.topk(last_k, dim=1, largest=False)  # [B, last_k]
    s_neg = s.gather(1, neg)
    loss = s.new_zeros(())
    for i in range(top_k):
        p = pos[:, i : i + 1]
        valid = avail.gather(1, p).squeeze(1) & ok.gather(1, p).squeeze(1)
        neg_ok = avail.gather(1, neg) & (neg_u < pos_u[:, i : i + 1])
        logits = torch.cat([s.gather(1, p), s_neg.masked_fill(~neg_ok, -np.inf)], dim=1)
        nll = -torch.log_softmax(logits, dim=1)[:, 0]
        loss = loss + torch.where(valid, nll, torch.zeros_like(nll)).mean()
    return loss


def sample_sample_loss(h: torch.Tensor, cluster: torch.Tensor, n_neg: int, gen: torch.Generator) -> torch.Tensor:
    """RouterDC's sample-sample (cluster) contrastive loss on encoder states ``h`` [B, D].

    For every query with another in-cluster query and at least ``n_neg`` out-of-cluster queries in the batch:
    one random in-cluster positive and ``n_neg`` random out-of-cluster negatives, ``-log softmax`` of the
    positive's cosine similarity (no temperature, as released). Queries without such partners are skipped.
    """
    b = h.shape[0]
    hn = F.normalize(h, dim=-1)
    sim = hn @ hn.T
    same = cluster[:, None] == cluster[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=h.device)
    pos_mask, neg_mask = same & ~eye, ~same
    usable = pos_mask.any(1) & (neg_mask.sum(1) >= n_neg)
    if not usable.any():
        return h.new_zeros(())
    r = torch.rand((b, b), generator=gen).to(h.device)
    pos = torch.where(pos_mask, r, -1.0).argmax(1, keepdim=True)  # one random in-cluster partner
    neg = torch.where(neg_mask, r, -1.0).topk(n_neg, dim=1).indices  # n_neg random out-of-cluster ones
    logits = torch.cat([sim.gather(1, pos), sim.gather(1, neg)], dim=1)[usable]
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


class RouterDCRouter(FittedOnModels, Router):
    """RouterDC with utility-ranked positives per training lambda; routes by the nearest lambda's similarity.

    ``predict`` returns the lambda-0 RouterDC's softmax over models as a quality proxy and the train mean cost
    (similarities are not outcome estimates, so ``predicts_outcomes`` is False). ``history_[lam]`` keeps the
    per-epoch mean training losses (``sample_llm``, ``sample_sample``).
    """

    name = "routerdc"
    predicts_outcomes = False

    def __init__(self, config: RouterDCConfig | None = None) -> None:
        self.config = config or RouterDCConfig()
        self._lams = np.array(sorted(set(self.config.lambdas)), dtype=np.float64)
        self._nets: list[_DCNet] = []
        self.history_: dict[float, dict[str, list[float]]] = {}

    def _clusters(self, data: RoutingData, tr: np.ndarray, seed: int) -> np.ndarray:
        x = data.pooled[tr].astype(np.float64)
        g = max(1, min(self.config.n_clusters, len(np.unique(x, axis=0))))
        return KMeans(n_clusters=g, n_init=4, random_state=seed).fit(x).labels_

    def fit(self, data: RoutingData, seed: int = 0) -> RouterDCRouter:
        dev, cfg = default_device(), self.config
        tr, va, rows = fit_split(data)
        self._remember(data)
        self._c = train_means(data, tr)[1]
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=dev)
        q = np.nan_to_num(data.quality[rows].astype(np.float64))
        c = np.nan_to_num(data.cost[rows].astype(np.float64))
        ok = torch.as_tensor(q > 0, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.bool, device=dev)
        clusters = torch.as_tensor(self._clusters(data, tr, seed), dtype=torch.long, device=dev)
        tr_p, va_p = positions(len(tr), len(va), dev)
        self._nets, self.history_ = [], {}
        for i, lam in enumerate(self._lams):
            util = torch.as_tensor(q - lam * c, dtype=torch.float32, device=dev)
            s_seed = seed * 1000 + i
            torch.manual_seed(s_seed)
            gen = torch.Generator().manual_seed(s_seed)
            net = _DCNet(data.pooled.shape[1], cfg.hidden, cfg.dim, data.k, cfg.dropout).to(dev)
            hist: dict[str, list[float]] = {"sample_llm": [], "sample_sample": []}
            run: dict[str, list[float]] = {"sample_llm": [], "sample_sample": []}

            def batch_loss(pos: torch.Tensor, net: _DCNet = net, util: torch.Tensor = util,
                           gen: torch.Generator = gen, run: dict[str, list[float]] = run) -> torch.Tensor:
                p = tr_p[pos.to(dev)]
                s, h = net(x[p], cfg.temperature)
                l1 = sample_llm_loss(s, util[p], ok[p], m[p], cfg.top_k, cfg.last_k)
                l2 = sample_sample_loss(h, clusters[pos.to(dev)], cfg.cluster_negatives, gen)
                run["sample_llm"].append(float(l1.detach()))
                run["sample_sample"].append(float(l2.detach()))
                return l1 + cfg.cluster_weight * l2

            def val_loss(net: _DCNet = net, util: torch.Tensor = util, hist: dict[str, list[float]] = hist,
                         run: dict[str, list[float]] = run) -> float:
                for key in hist:  # close the epoch's running means
                    hist[key].append(float(np.mean(run[key])) if run[key] else float("nan"))
                    run[key].clear()
                s, _ = net(x[va_p], cfg.temperature)
                pick = s.masked_fill(~m[va_p], -np.inf).argmax(1, keepdim=True)
                return -float(util[va_p].gather(1, pick).mean())

            has_val = len(va) > 0
            train_loop(net, len(tr), batch_loss, val_loss if has_val else None, cfg.train, s_seed)
            if not has_val:
                for key in hist:
                    hist[key].append(float(np.mean(run[key])) if run[key] else float("nan"))
            self._nets.append(net)
            self.history_[float(lam)] = hist
        return self

    def nearest_lambda(self, lam: float) -> float:
        """The training lambda whose RouterDC routes at ``lam``."""
        return float(self._lams[int(np.argmin(np.abs(np.log1p(self._lams) - np.log1p(lam))))])

    @torch.no_grad()
    def _scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        self._check(data)
        net = self._nets[int(np.flatnonzero(self._lams == self.nearest_lambda(lam))[0])]
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=default_device())
        return net(x, self.config.temperature)[0].double().cpu().numpy()

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self._scores(data, rows, float(self._lams[0]))
        p = np.exp(s - s.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True), np.tile(self._c, (len(rows), 1))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        return self._scores(data, rows, lam)

    def n_parameters(self) -> int:
        return int(sum(n_params(n) for n in self._nets))
