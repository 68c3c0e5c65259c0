"""Budget calibration: the lambda whose validation picks meet a cost (or strongest-model share) target.

Why on validation traces with the router's own picks: the gateway routes with ``score = f(request, lambda)``;
the mean expected cost of the argmax pick falls (weakly) as lambda grows, so a bisection over lambda on the
validation split finds the smallest lambda (best quality) whose picks cost at most the target on average.
Costs are the ones known before answering (price x expected tokens from calibration), as at serving time.
The result is stored as a named policy in ``<home>/policies.json``, which a running gateway re-reads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.serving.gateway.policies import Policy
from router.serving.service import RouterService
from router.threads import torch_threads

LAMBDA_CEILING = 1e3  # the gateway's MAX_LAMBDA: past this only cost matters


@dataclass(frozen=True)
class OperatingPoint:
    """What the router's validation picks look like at one lambda."""

    lam: float
    expected_cost_usd: float  # mean expected cost of the pick
    expected_quality: float  # mean predicted quality of the pick
    realised_quality: float  # mean validation-trace quality of the pick (where the trace exists)
    strong_share: float  # share of picks that are the strongest model
    shares: dict[str, float]


class Calibrator:
    """Validation picks of one router snapshot over a pool, at any lambda (memoised)."""

    def __init__(self, service: RouterService, models: list[str] | None = None):
        data = service.data
        self.service, self.data = service, data
        self.rows = data.idx("val")
        if not len(self.rows):
            raise ValueError("the warehouse has no validation rows to calibrate on")
        pool = models or list(data.model_ids)
        unknown = [m for m in pool if m not in data.model_ids]
        if unknown:
            raise ValueError(f"unknown or inactive model(s) {unknown}; active: {data.model_ids}")
        self.pool = pool
        self.cols = np.array([data.model_ids.index(m) for m in pool])
        self.mask = np.zeros((len(self.rows), data.k), dtype=bool)
        self.mask[:, self.cols] = True
        q = np.where(data.avail[self.rows][:, self.cols], data.quality[self.rows][:, self.cols], np.nan)
        self.strongest = pool[int(np.nanargmax(np.nanmean(q, axis=0)))]  # best mean validation quality
        self._memo: dict[float, OperatingPoint] = {}

    def at(self, lam: float) -> OperatingPoint:
        if lam not in self._memo:
            d, rows = self.data, self.rows
            with torch_threads(1):
                mu, _, score = self.service.predict_rows(d, rows, lam, self.mask)  # the deployed router
            pick = np.argmax(score, axis=1)
            cost = d.exp_cost[rows, pick] * self.service.norms.cost_scale
            real = np.where(d.avail[rows, pick], d.quality[rows, pick], np.nan)
            names = np.array(d.model_ids)[pick]
            self._memo[lam] = OperatingPoint(
                lam, float(cost.mean()), float(mu[np.arange(len(rows)), pick].mean()),
                float(np.nanmean(real)) if np.isfinite(real).any() else float("nan"),
                float((names == self.strongest).mean()),
                {m: float((names == m).mean()) for m in self.pool if (names == m).any()})
        return self._memo[lam]

    def solve(self, metric: str, target: float, iters: int = 40) -> OperatingPoint:
        """The smallest lambda whose ``metric`` (a non-increasing function of lambda) is <= ``target``."""
        value = (lambda p: p.expected_cost_usd) if metric == "cost" else (lambda p: p.strong_share)
        if value(self.at(0.0)) <= target:
            return self.at(0.0)  # the target does not bind: the quality-first router already meets it
        hi = 0.01
        while value(self.at(hi)) > target:
            if hi >= LAMBDA_CEILING:
                floor = self.at(LAMBDA_CEILING)
                raise ValueError(f"no lambda up to {LAMBDA_CEILING:g} meets the target {target:g} for {metric}: "
                                 f"the cheapest operating point reaches {value(floor):.4g}")
            hi = min(hi * 4, LAMBDA_CEILING)
        lo = hi / 4 if hi > 0.01 else 0.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            if value(self.at(mid)) <= target:
                hi = mid
            else:
                lo = mid
            if hi - lo < 1e-4 * max(hi, 1e-3):
                break
        return self.at(hi)


def calibrate_policy(service: RouterService, name: str, target_cost_usd: float | None = None,
                     target_strong_share: float | None = None, models: list[str] | None = None) -> Policy:
    """A named policy whose lambda meets the target on validation (cost first when both are given: the
    larger of the two lambdas meets both)."""
    if target_cost_usd is None and target_strong_share is None:
        raise ValueError("give --target-cost-usd and/or --target-strong-share")
    if target_cost_usd is not None and not target_cost_usd > 0:
        raise ValueError(f"--target-cost-usd must be > 0, got {target_cost_usd}")
    if target_strong_share is not None and not 0.0 <= target_strong_share <= 1.0:
        raise ValueError(f"--target-strong-share must be in [0, 1], got {target_strong_share}")
    cal = Calibrator(service, models)
    points = []
    if target_cost_usd is not None:
        points.append(cal.solve("cost", target_cost_usd))
    if target_strong_share is not None:
        points.append(cal.solve("share", target_strong_share))
    point = max(points, key=lambda p: p.lam)
    meta: dict[str, Any] = {
        "target_cost_usd": target_cost_usd, "target_strong_share": target_strong_share,
        "expected_cost_usd": point.expected_cost_usd, "expected_quality": point.expected_quality,
        "realised_val_quality": point.realised_quality if np.isfinite(point.realised_quality) else None, "strongest_model": cal.strongest,
        "strong_share": point.strong_share, "shares": point.shares, "n_val": int(len(cal.rows)),
        "checkpoint": service.checkpoint.name,
        "calibrated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "at_lambda_0": {"expected_cost_usd": cal.at(0.0).expected_cost_usd,
                        "expected_quality": cal.at(0.0).expected_quality},
    }
    desc = (f"calibrated on {len(cal.rows)} validation queries: mean expected cost "
            f"{point.expected_cost_usd:.3e} USD, expected quality {point.expected_quality:.3f}")
    return Policy(name, float(point.lam), tuple(models) if models else None, None, desc, meta)
