"""ECVL-Router (Tang et al. 2025, arXiv 2510.27256): scenario-aware routing for vision-language models.

What is public about it (abstract and summaries; the LatentRouter paper only calls it "the most recent MLLM
router" and adapts it to the same features, pools, costs and splits): a lightweight *transformer-based* router
reads the image-question query and predicts the response score / problem-solving probability a model would
reach; a scenario (fast response, high quality, low energy) is expressed as a *Minimal Expected Score* (MES)
with a tunable threshold, and a query goes to the cheap (edge) model whenever its predicted score clears the
MES, otherwise to the strong (cloud) model. It was proposed for one small and one large model.

Closest faithful reading, and the assumptions made here (the method text was not available):
1. Router: a small transformer encoder over the query's own token sequences (a [CLS] token, the pooled feature
   vector as one token, the image tokens when present, the question tokens), each projected to ``d_model``
   with a type embedding; [CLS] -> one sigmoid head per model = predicted problem-solving probability, trained
   with BCE on the training outcomes (masked by availability), early-stopped on validation BCE.
2. Scenario rule generalised from {edge, cloud} to K models ordered by cost (train mean normalised cost, the
   "cost advantage" a model has regardless of the query): pick the *cheapest* available model whose predicted
   score is >= MES; if none clears it, the model with the highest predicted score.
3. Our cost weight lambda sets the scenario: ``MES(lambda) = mes_max * exp(-lambda / mes_scale)``; lambda = 0 is
   the high-quality scenario (MES = 1: no model clears, so the best predicted model), large lambda the
   low-cost one (MES -> 0: the cheapest model). The evaluation's lambda sweep is the paper's threshold grid.
The per-model heads exist only for the models seen in training, so models added later are not scored (fixed
pool; mask models out with ``avail``). Text-only data (no image tokens) uses the question tokens alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import (
    FittedOnModels,
    TorchTrainConfig,
    default_device,
    fit_split,
    n_params,
    train_loop,
    train_means,
)


@dataclass
class ECVLConfig:
    """Transformer router sizes (a lightweight router, as the paper asks) and the MES map of lambda."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    dropout: float = 0.1
    max_tokens: int = 64  # per modality: longer token sequences are truncated
    mes_max: float = 1.0
    mes_scale: float = 1.0
    train: TorchTrainConfig = field(default_factory=lambda: TorchTrainConfig(batch_size=64))

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads or self.n_layers < 1:
            raise ValueError(f"ECVLConfig needs d_model divisible by n_heads >= 1 and n_layers >= 1: {self}")
        if not 0 <= self.dropout < 1 or self.max_tokens < 1 or not 0 < self.mes_max <= 1 or self.mes_scale <= 0:
            raise ValueError(f"invalid ECVLConfig: {self}")

    def mes(self, lam: float) -> float:
        """The Minimal Expected Score of the scenario with cost weight ``lam``."""
        return float(self.mes_max * np.exp(-max(float(lam), 0.0) / self.mes_scale))


class _ECVLNet(nn.Module):
    """[CLS; pooled; image tokens; question tokens] -> transformer encoder -> K score logits from [CLS]."""

    def __init__(self, d_pooled: int, d_img: int | None, d_txt: int, k: int, cfg: ECVLConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pooled = nn.Linear(d_pooled, d)
        self.img = nn.Linear(d_img, d) if d_img else None
        self.txt = nn.Linear(d_txt, d)
        self.type_emb = nn.Parameter(torch.randn(4, d) * 0.02)  # cls, pooled, image, text
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, k)

    def forward(self, pooled: torch.Tensor, img: torch.Tensor | None, img_m: torch.Tensor | None,
                txt: torch.Tensor, txt_m: torch.Tensor) -> torch.Tensor:
        b = pooled.shape[0]
        parts = [self.cls.expand(b, 1, -1) + self.type_emb[0], (self.pooled(pooled) + self.type_emb[1])[:, None]]
        masks = [torch.ones(b, 2, dtype=torch.bool, device=pooled.device)]
        if self.img is not None and img is not None and img_m is not None:
            parts.append(self.img(img) + self.type_emb[2])
            masks.append(img_m)
        parts.append(self.txt(txt) + self.type_emb[3])
        masks.append(txt_m)
        h = self.encoder(torch.cat(parts, 1), src_key_padding_mask=~torch.cat(masks, 1))
        return self.head(self.norm(h[:, 0]))


class ECVLRouter(FittedOnModels, Router):
    """ECVL-style router: transformer-predicted success probability per model + the MES (threshold) rule.

    ``predict`` returns the predicted scores (quality estimates) and the train mean cost per model; ``scores``
    encodes the MES rule so that the base ``select`` (argmax over available models) applies it: models that
    clear MES score in [1, 2] (cheaper higher), the others ``q_hat - 2`` (best predicted highest).
    """

    name = "ecvl"

    def __init__(self, config: ECVLConfig | None = None) -> None:
        self.config = config or ECVLConfig()
        self._net: _ECVLNet | None = None
        self._use_img = False
        self._memo: tuple[tuple[int, int, bytes], tuple[np.ndarray, np.ndarray]] | None = None

    def _tensors(self, data: RoutingData, rows: np.ndarray, dev: torch.device) -> tuple[torch.Tensor, ...]:
        t = self.config.max_tokens

        def f(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.nan_to_num(np.asarray(a[rows], dtype=np.float32)), device=dev)

        pooled = f(data.pooled)
        txt, txt_m = f(data.txt_tokens[:, :t]), torch.as_tensor(data.txt_mask[rows, :t], device=dev)
        if self._use_img and data.img_tokens is not None and data.img_mask is not None:
            img, img_m = f(data.img_tokens[:, :t]), torch.as_tensor(data.img_mask[rows, :t], device=dev)
        else:
            img, img_m = torch.zeros(len(rows), 0, 1, device=dev), torch.zeros(len(rows), 0, dtype=torch.bool,
                                                                                 device=dev)
        return pooled, img, img_m, txt, txt_m

    def _forward(self, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        assert self._net is not None
        pooled, img, img_m, txt, txt_m = x
        if self._use_img:
            return self._net(pooled, img, img_m, txt, txt_m)
        return self._net(pooled, None, None, txt, txt_m)

    def fit(self, data: RoutingData, seed: int = 0) -> ECVLRouter:
        dev, cfg = default_device(), self.config
        tr, va, rows = fit_split(data)
        self._remember(data)
        self._c = train_means(data, tr)[1]
        self._use_img = data.img_tokens is not None and not data.text_only
        d_img = int(data.img_tokens.shape[2]) if self._use_img and data.img_tokens is not None else None
        torch.manual_seed(seed)
        self._net = _ECVLNet(data.pooled.shape[1], d_img, data.txt_tokens.shape[2], data.k, cfg).to(dev)
        yn, mn = np.zeros((data.n, data.k), np.float32), np.zeros((data.n, data.k), np.float32)
        yn[rows] = np.clip(np.nan_to_num(data.quality[rows]), 0, 1)  # only train/val rows are ever copied
        mn[rows] = data.avail[rows]
        y, m = torch.as_tensor(yn), torch.as_tensor(mn)

        def bce(rows: np.ndarray) -> torch.Tensor:
            """Masked BCE on ``rows`` (train or val only); token tensors are built per batch to bound memory."""
            logits = self._forward(self._tensors(data, rows, dev))
            yy, mm = y[rows].to(dev), m[rows].to(dev)
            per = F.binary_cross_entropy_with_logits(logits, yy, reduction="none") * mm
            return per.sum() / mm.sum().clamp_min(1.0)

        def val_loss() -> float:
            chunks = [va[i : i + 1024] for i in range(0, len(va), 1024)]
            return float(sum(float(bce(ch)) * len(ch) for ch in chunks) / len(va))

        train_loop(self._net, len(tr), lambda pos: bce(tr[pos.numpy()]), val_loss if len(va) else None,
                   cfg.train, seed)
        self._memo = None
        return self

    @torch.no_grad()
    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        rows = np.asarray(rows)
        dev = default_device()
        out = []
        for start in range(0, len(rows), 1024):
            x = self._tensors(data, rows[start : start + 1024], dev)
            out.append(torch.sigmoid(self._forward(x)).double().cpu().numpy())
        q = np.concatenate(out) if out else np.zeros((0, data.k))
        return q, np.tile(self._c, (len(rows), 1))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        """The MES rule as scores: cheapest model clearing ``MES(lam)``, else the best predicted model.

        The prediction is memoised per (data, rows) so a lambda sweep runs the transformer once."""
        rows = np.asarray(rows)
        key = (id(data), id(data.pooled), rows.tobytes())
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self.predict(data, rows))
        q, c = self._memo[1]
        rel = c / (float(np.max(c)) + 1e-12) if c.size else c
        return np.where(q >= self.config.mes(lam), 2.0 - rel, q - 2.0)

    def n_parameters(self) -> int:
        return n_params(self._net)
