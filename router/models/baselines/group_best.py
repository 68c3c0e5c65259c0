"""GroupBest: the best model per task / dataset label on train, by utility at the requested lambda.

Why: the label of a query (its dataset and task group) is known before routing, so "always the model that is
best on this label" is the floor any learned router has to clear; a router that does not beat it has learned
nothing beyond the label. Unseen labels back off to coarser labels and finally to the global per-model means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import FittedOnModels, group_means, train_means, train_rows

GROUPINGS: tuple[str, ...] = ("dataset_task", "dataset", "task_group")


def _labels(data: RoutingData, level: str) -> np.ndarray:
    """[N] string label of every query at ``level`` (``dataset_task`` joins dataset and task group)."""
    if level == "dataset":
        return np.asarray(data.dataset, dtype=object).astype(str)
    if level == "task_group":
        return np.asarray(data.task_group, dtype=object).astype(str)
    if level == "dataset_task":
        return np.char.add(np.char.add(np.asarray(data.dataset).astype(str), "|"),
                           np.asarray(data.task_group).astype(str))
    raise ValueError(f"unknown grouping {level!r}; known: {GROUPINGS}")


@dataclass
class GroupBestConfig:
    """``by``: the finest label used; coarser ones (task group) are the back-off for unseen labels."""

    by: str = "dataset_task"
    min_count: int = 1  # train rows a label needs before its own means are trusted

    def __post_init__(self) -> None:
        if self.by not in GROUPINGS:
            raise ValueError(f"GroupBestConfig.by must be one of {GROUPINGS}, got {self.by!r}")
        if self.min_count < 1:
            raise ValueError(f"GroupBestConfig.min_count must be >= 1, got {self.min_count}")


class GroupBestRouter(FittedOnModels, Router):
    """Per-label mean quality and cost on train; the base ``select`` then picks the label's best utility.

    ``predict`` returns the means of the query's label, so ``argmax q - lambda c`` is exactly "the model with
    the best mean training utility at lambda on this label"; labels never seen (or seen fewer than
    ``min_count`` times) fall back to the next coarser label (``dataset_task`` -> ``dataset`` ->
    ``task_group``) and then to the global means.
    """

    name = "group_best"
    learned = False

    def __init__(self, config: GroupBestConfig | None = None) -> None:
        self.config = config or GroupBestConfig()
        self._levels: list[tuple[str, dict[str, int], np.ndarray, np.ndarray]] = []

    def _chain(self) -> tuple[str, ...]:
        """The configured label and its coarser back-offs, finest first."""
        return GROUPINGS[GROUPINGS.index(self.config.by):]

    def fit(self, data: RoutingData, seed: int = 0) -> GroupBestRouter:
        tr = train_rows(data)
        self._remember(data)
        self._q, self._c = train_means(data, tr)
        m = data.avail[tr]
        self._levels = []
        for level in self._chain():
            lab = _labels(data, level)[tr]
            names, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
            keep = {str(n): i for i, n in enumerate(names) if counts[i] >= self.config.min_count}
            gq = group_means(inv, len(names), data.quality[tr], m, self._q)
            gc = group_means(inv, len(names), data.cost[tr], m, self._c)
            self._levels.append((level, keep, gq, gc))
        return self

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        rows = np.asarray(rows)
        q = np.tile(self._q, (len(rows), 1))
        c = np.tile(self._c, (len(rows), 1))
        done = np.zeros(len(rows), dtype=bool)
        for level, keep, gq, gc in self._levels:
            lab = _labels(data, level)[rows]
            idx = np.array([keep.get(str(v), -1) for v in lab], dtype=np.int64)
            hit = (idx >= 0) & ~done
            q[hit], c[hit] = gq[idx[hit]], gc[idx[hit]]
            done |= hit
        return q, c

    def n_parameters(self) -> int:
        """Stored numbers: per-label quality and cost tables."""
        return int(sum(gq.size + gc.size for _, _, gq, gc in self._levels))
