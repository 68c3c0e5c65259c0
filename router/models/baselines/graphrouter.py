"""GraphRouter (Feng et al., ICLR 2025, arXiv 2410.03834): LLM selection as edge prediction on a
heterogeneous task-query-LLM graph, here with plain-torch message passing (no torch_geometric).

Follows the paper (Sec. 3-4) and its release: task, query and model nodes; query-model edges carry the
observed (effect, cost) of that model on that query, query-task edges attach every query to its task; a GNN
embeds the graph and an edge decoder predicts the query-model edge of a *new* query, which enters the graph
through its task only. Training hides the model edges of a random share of the training queries
(``mask_rate``, the release's ``train_mask_rate``) and predicts them from the rest of the graph; validation
queries are new nodes against the full training graph; at test time train and validation edges are visible.

Adaptation: node features are our shared inputs: ``data.pooled`` for queries, the mean pooled feature of a
task's context queries for task nodes (the release embeds an LLM-written task description, which we do not
have), and the calibration profile vector ``data.model_feats`` for model nodes (the release: an LLM description
embedding). The task is ``dataset|task_group``. The release decodes a sigmoid "best model" label per edge for
one fixed reward weighting; to serve every lambda we decode the edge attributes themselves (quality with BCE,
normalised cost with MSE) and route by predicted utility ``q - lambda c`` (base ``Router.select``).
Masked queries are removed from the graph as a whole (their task edge becomes receive-only), so training
matches the test situation exactly (a new query has no model edges and must not change its task's state).
Because model nodes are built from profile vectors and their edges, a model added after training is scored
without retraining when its profile and its training-row traces are in ``data`` (same profile dimension).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import default_device, fit_rows, mlp, n_params, train_rows


@dataclass
class GraphRouterConfig:
    """GNN sizes and the edge-masking schedule (release: 2 conv layers, AdamW, full-graph steps)."""

    hidden: int = 64
    n_layers: int = 2
    dropout: float = 0.1
    mask_rate: float = 0.3  # share of training queries whose model edges are hidden and predicted per step
    max_targets: int = 2048  # at most this many masked queries are decoded per step
    steps: int = 400
    eval_every: int = 10
    patience: int = 8  # evaluations without validation improvement before stopping
    lr: float = 1e-3
    weight_decay: float = 1e-4
    cost_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.n_layers < 1 or self.steps < 1 or self.eval_every < 1 or self.patience < 1:
            raise ValueError(f"invalid GraphRouterConfig: {self}")
        if not 0 < self.mask_rate < 1 or not 0 <= self.dropout < 1 or self.max_targets < 1 or self.lr <= 0:
            raise ValueError(f"invalid GraphRouterConfig: {self}")


def task_labels(data: RoutingData) -> np.ndarray:
    """[N] task label of each query: ``dataset|task_group``."""
    return np.char.add(np.char.add(np.asarray(data.dataset).astype(str), "|"), np.asarray(data.task_group).astype(str))


def _mean_into(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the rows of ``src`` [E, H] per target ``index`` [E] -> [n, H] (empty targets: 0)."""
    out = src.new_zeros(n, src.shape[1]).index_add_(0, index, src)
    cnt = src.new_zeros(n).index_add_(0, index, torch.ones_like(index, dtype=src.dtype))
    return out / cnt.clamp_min(1.0)[:, None]


@dataclass
class _Graph:
    """Context graph: query features, task of each query (-1 none), query-model edges with (quality, cost)."""

    x: torch.Tensor  # [C, D]
    task: torch.Tensor  # [C] long
    n_tasks: int
    e_q: torch.Tensor  # [E] long, context query position
    e_m: torch.Tensor  # [E] long, model index
    e_attr: torch.Tensor  # [E, 2] (quality, normalised cost)
    models: torch.Tensor  # [K, P] model node features


class _Layer(nn.Module):
    """One heterogeneous round: queries -> models (with edge attrs), queries -> tasks, then models + task ->
    queries (context queries) and task -> new queries (receive-only)."""

    def __init__(self, h: int, dropout: float) -> None:
        super().__init__()
        self.q2m, self.m2q = nn.Linear(h + 2, h), nn.Linear(h + 2, h)
        self.q2t, self.t2q = nn.Linear(h, h), nn.Linear(h, h)
        self.norm_m, self.norm_t, self.norm_q = nn.LayerNorm(h), nn.LayerNorm(h), nn.LayerNorm(h)
        self.drop = nn.Dropout(dropout)

    def context(self, g: _Graph, hq: torch.Tensor, hm: torch.Tensor,
                ht: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Update the context nodes: models from their edges, tasks from their queries, queries from both."""
        k, t = hm.shape[0], ht.shape[0]
        msg = self.q2m(torch.cat([hq[g.e_q], g.e_attr], 1))
        hm = self.norm_m(hm + self.drop(F.relu(_mean_into(msg, g.e_m, k))))
        has_t = g.task >= 0
        ht = self.norm_t(ht + self.drop(F.relu(_mean_into(self.q2t(hq[has_t]), g.task[has_t], t))))
        back = _mean_into(self.m2q(torch.cat([hm[g.e_m], g.e_attr], 1)), g.e_q, hq.shape[0])
        from_task = torch.where(has_t[:, None], self.t2q(ht[g.task.clamp_min(0)]), 0.0)
        hq = self.norm_q(hq + self.drop(F.relu(back + from_task)))
        return hq, hm, ht

    def new(self, hn: torch.Tensor, new_task: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
        """Update new (receive-only) query nodes from their task; unseen tasks (-1) receive nothing."""
        to_new = torch.where((new_task >= 0)[:, None], self.t2q(ht[new_task.clamp_min(0)]), 0.0)
        return self.norm_q(hn + self.drop(F.relu(to_new)))


class _GraphNet(nn.Module):
    def __init__(self, d_q: int, d_m: int, h: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.q_in, self.m_in, self.t_in = nn.Linear(d_q, h), nn.Linear(d_m, h), nn.Linear(d_q, h)
        self.layers = nn.ModuleList(_Layer(h, dropout) for _ in range(n_layers))
        self.decoder = mlp((3 * h, h, 2))

    def context(self, g: _Graph) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(task states after each layer, final model states): all a new query needs from the graph."""
        hq, hm = self.q_in(g.x), self.m_in(g.models)
        has_t = g.task >= 0
        ht = self.t_in(_mean_into(g.x[has_t], g.task[has_t], g.n_tasks))
        tasks = []
        for layer in self.layers:
            hq, hm, ht = layer.context(g, hq, hm, ht)
            tasks.append(ht)
        return tasks, hm

    def decode(self, ctx: tuple[list[torch.Tensor], torch.Tensor], new_x: torch.Tensor,
               new_task: torch.Tensor) -> torch.Tensor:
        """[B, K, 2] (quality logit, cost) of the edges between the new queries and every model."""
        tasks, hm = ctx
        hn = self.q_in(new_x)
        for layer, ht in zip(self.layers, tasks, strict=True):
            hn = layer.new(hn, new_task, ht)
        b, k = hn.shape[0], hm.shape[0]
        a, m = hn[:, None, :].expand(b, k, -1), hm[None, :, :].expand(b, k, -1)
        return self.decoder(torch.cat([a, m, a * m], -1))

    def forward(self, g: _Graph, new_x: torch.Tensor, new_task: torch.Tensor) -> torch.Tensor:
        return self.decode(self.context(g), new_x, new_task)


class GraphRouter(Router):
    """GraphRouter edge predictor: predicted (quality, cost) of each query-model edge; routes by utility."""

    name = "graphrouter"

    def __init__(self, config: GraphRouterConfig | None = None) -> None:
        self.config = config or GraphRouterConfig()
        self._net: _GraphNet | None = None
        self._tasks: dict[str, int] = {}
        self._p = 0
        self._cache: tuple[tuple[int, ...], tuple[list[torch.Tensor], torch.Tensor]] | None = None
        self.history_: dict[str, list[float]] = {"train": [], "val": []}

    # -- graph construction ---------------------------------------------------------------------------------

    def _task_ids(self, data: RoutingData, rows: np.ndarray) -> np.ndarray:
        lab = task_labels(data)[rows]
        return np.array([self._tasks.get(str(v), -1) for v in lab], dtype=np.int64)

    def _graph(self, data: RoutingData, ctx: np.ndarray, dev: torch.device) -> _Graph:
        """The context graph of the (train / val) rows ``ctx``: only their available outcomes become edges."""
        av = data.avail[ctx]
        qi, mi = np.nonzero(av)
        attr = np.stack([np.nan_to_num(data.quality[ctx][qi, mi]), np.nan_to_num(data.cost[ctx][qi, mi])], 1)

        def t(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=dev)

        return _Graph(x=t(data.pooled[ctx]), task=t(self._task_ids(data, ctx), torch.long), n_tasks=len(self._tasks),
                      e_q=t(qi, torch.long), e_m=t(mi, torch.long), e_attr=t(attr), models=t(data.model_feats))

    def _loss(self, out: torch.Tensor, y: torch.Tensor, c: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        n = m.sum().clamp_min(1.0)
        bce = (F.binary_cross_entropy_with_logits(out[..., 0], y, reduction="none") * m).sum() / n
        mse = (((out[..., 1] - c) ** 2) * m).sum() / n
        return bce + self.config.cost_weight * mse

    def _targets(self, data: RoutingData, rows: np.ndarray, dev: torch.device) -> tuple[torch.Tensor, ...]:
        def t(a: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=dev)

        return (t(data.pooled[rows]), t(self._task_ids(data, rows), torch.long),
                t(np.clip(np.nan_to_num(data.quality[rows]), 0, 1)), t(np.nan_to_num(data.cost[rows])),
                t(data.avail[rows]))

    # -- fit / predict --------------------------------------------------------------------------------------

    def fit(self, data: RoutingData, seed: int = 0) -> GraphRouter:
        dev, cfg = default_device(), self.config
        tr, va = train_rows(data), fit_rows(data, "val")
        labels = task_labels(data)[tr]
        self._tasks = {str(v): i for i, v in enumerate(np.unique(labels))}
        self._p = int(data.model_feats.shape[1])
        torch.manual_seed(seed)
        gen = np.random.default_rng(seed)
        net = _GraphNet(data.pooled.shape[1], self._p, cfg.hidden, cfg.n_layers, cfg.dropout).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        val_graph = self._graph(data, tr, dev) if len(va) else None
        val_t = self._targets(data, va, dev) if len(va) else None
        val_chunks = [torch.arange(i, min(i + 2048, len(va)), device=dev) for i in range(0, len(va), 2048)]
        n_tgt = max(1, min(cfg.max_targets, int(round(cfg.mask_rate * len(tr)))))
        best, best_state, bad = np.inf, None, 0
        self.history_ = {"train": [], "val": []}
        for step in range(cfg.steps):
            net.train()
            perm = gen.permutation(tr)
            tgt, ctx = perm[:n_tgt], perm[n_tgt:] if len(tr) > n_tgt else perm
            x, task, y, c, m = self._targets(data, tgt, dev)
            loss = self._loss(net(self._graph(data, ctx, dev), x, task), y, c, m)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            self.history_["train"].append(float(loss.detach()))
            if val_graph is None or (step + 1) % cfg.eval_every:
                continue
            net.eval()
            with torch.no_grad():
                assert val_t is not None
                vctx = net.context(val_graph)
                v = float(sum(self._loss(net.decode(vctx, val_t[0][i], val_t[1][i]), val_t[2][i], val_t[3][i],
                                         val_t[4][i]) * len(i) for i in val_chunks) / len(va))
            self.history_["val"].append(v)
            if v < best - 1e-7:
                best, bad = v, 0
                best_state = {k: w.detach().clone() for k, w in net.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self._net, self._cache = net, None
        return self

    def _check_pool(self, data: RoutingData) -> None:
        if self._net is None:
            raise RuntimeError("GraphRouter is not fitted; call fit() first")
        if data.model_feats.shape[1] != self._p:
            raise ValueError(f"GraphRouter was fitted on {self._p}-d model profiles, got {data.model_feats.shape[1]}")

    def _context(self, data: RoutingData, dev: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Context states of the graph of every train and val outcome in ``data``, memoised per data + edges
        (a new query never changes them, so single-query routing costs one decoder pass)."""
        assert self._net is not None
        ctx = np.concatenate([train_rows(data), fit_rows(data, "val")])
        key = (id(data), id(data.pooled), hash(data.avail[ctx].tobytes()), hash(np.nan_to_num(data.quality[ctx]).tobytes()),
               hash(data.model_feats.tobytes()))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._net.context(self._graph(data, ctx, dev)))
        return self._cache[1]

    @torch.no_grad()
    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New query nodes for ``rows`` against the graph of every train and val outcome in ``data``."""
        self._check_pool(data)
        assert self._net is not None
        dev = default_device()
        ctx = self._context(data, dev)
        rows = np.asarray(rows)
        qs, cs = [np.zeros((0, data.k))], [np.zeros((0, data.k))]
        for start in range(0, len(rows), 2048):
            part = rows[start : start + 2048]
            x = torch.as_tensor(data.pooled[part], dtype=torch.float32, device=dev)
            task = torch.as_tensor(self._task_ids(data, part), dtype=torch.long, device=dev)
            out = self._net.decode(ctx, x, task)
            qs.append(torch.sigmoid(out[..., 0]).double().cpu().numpy())
            cs.append(out[..., 1].clamp_min(0).double().cpu().numpy())
        return np.concatenate(qs), np.concatenate(cs)

    def n_parameters(self) -> int:
        return n_params(self._net)
