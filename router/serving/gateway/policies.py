"""Routing policies: what the OpenAI ``model`` field (plus the optional request fields) asks the gateway to do.

- ``lrouter``: the deployed router at the default lambda; ``lrouter:<lambda>`` at that lambda;
- a named policy: the built-in targets (``quality``, ``balanced``, ``cheap``: named lambdas) or one stored by
  ``lrouter calibrate`` in ``<home>/policies.json`` (re-read when the file changes, so a recalibration
  reaches a running gateway without a restart);
- a concrete model id: no routing, a plain proxy to that model.
Request fields ``lambda``, ``target``, ``models`` and ``max_cost_usd`` refine a routed policy.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from router.serving.redact import clip
from warehouse.store import atomic_write_bytes

ROUTER_POLICY = "lrouter"
TARGETS: dict[str, float] = {"quality": 0.0, "balanced": 0.3, "cheap": 1.0}  # named lambdas
MAX_LAMBDA = 1e3  # as `lrouter serve`: past this only cost matters and float32 overflows
POLICY_FILE = "policies.json"


class PolicyError(ValueError):
    """A request asked for a policy or option that does not exist; names the request field."""

    def __init__(self, message: str, param: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclass(frozen=True)
class Policy:
    name: str
    lam: float
    models: tuple[str, ...] | None = None  # restrict the pool
    max_cost_usd: float | None = None  # never pick a model whose expected cost exceeds it
    description: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)  # what `lrouter calibrate` measured

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lambda"] = d.pop("lam")
        d["models"] = list(self.models) if self.models else None
        d.pop("name")
        return d


@dataclass(frozen=True)
class Plan:
    """What one request will do: route with (lam, models, max_cost_usd), or proxy to ``concrete``."""

    policy: str
    lam: float | None = None
    models: tuple[str, ...] | None = None
    max_cost_usd: float | None = None
    concrete: str | None = None


def check_lambda(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)) \
            or not 0.0 <= float(value) <= MAX_LAMBDA:
        raise PolicyError(f"{param!r} must be a finite number in [0, {MAX_LAMBDA:g}], got {clip(value)}", param)
    return float(value)


def _policy_from_json(name: str, raw: Any, where: Path) -> Policy:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: policy {name!r} is not an object")
    lam = check_lambda(raw.get("lambda"), f"{name}.lambda")
    models = raw.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise ValueError(f"{where}: policy {name!r}: models must be a list of model ids")
    cap = raw.get("max_cost_usd")
    return Policy(name, lam, tuple(models) if models else None, float(cap) if cap is not None else None,
                  str(raw.get("description") or ""), dict(raw.get("calibration") or {}))


def load_policy_file(path: Path) -> dict[str, Policy]:
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    items = raw.get("policies") if isinstance(raw, dict) else None
    if not isinstance(items, dict):
        raise ValueError(f"{path}: expected {{\"policies\": {{name: {{...}}}}}}")
    return {name: _policy_from_json(name, v, path) for name, v in items.items()}


def save_policy(path: Path, policy: Policy) -> None:
    """Add or replace one named policy in the file (atomic rename: a running gateway reads old or new)."""
    if policy.name == ROUTER_POLICY or policy.name.startswith(ROUTER_POLICY + ":") or policy.name in TARGETS:
        raise ValueError(f"policy name {policy.name!r} is reserved")
    current = load_policy_file(path)
    current[policy.name] = policy
    body = {"policies": {n: p.to_json() for n, p in sorted(current.items())}}
    atomic_write_bytes((json.dumps(body, indent=2) + "\n").encode(), path)


class PolicyBook:
    """Built-in and stored policies; ``resolve`` turns a request's model field and options into a `Plan`."""

    def __init__(self, path: Path | None, default_lambda: float = 0.1):
        self.path, self.default_lambda = path, default_lambda
        self._stored: dict[str, Policy] = {}
        self._stamp: tuple[int, int] | None = None
        self.load_error: str | None = None
        self._lock = threading.Lock()

    def stored(self) -> dict[str, Policy]:
        """The file's policies, re-read when its mtime/size changed; a broken file keeps the last good set."""
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._stored = load_policy_file(self.path) if stamp else {}
                    self.load_error = None
                except (ValueError, OSError) as exc:
                    self.load_error = f"{type(exc).__name__}: {exc}"
                self._stamp = stamp
            return self._stored

    def policies(self) -> dict[str, Policy]:
        builtin = {ROUTER_POLICY: Policy(ROUTER_POLICY, self.default_lambda, description="the deployed router")}
        builtin.update({n: Policy(n, lam, description=f"target {n!r}: lambda {lam:g}") for n, lam in TARGETS.items()})
        return {**builtin, **self.stored()}

    def resolve(self, model: Any, extras: dict[str, Any], known_models: list[str]) -> Plan:
        if model is None:
            model = ROUTER_POLICY
        if not isinstance(model, str) or not model:
            raise PolicyError("'model' must be a policy name or a model id", "model")
        policies = self.policies()
        if model.startswith(ROUTER_POLICY + ":"):
            policy = Policy(model, check_lambda(_number(model.split(":", 1)[1]), "model"))
        elif model in policies:
            policy = policies[model]
        elif model in known_models:
            return Plan(policy="model", concrete=model)
        else:
            raise PolicyError(f"unknown model or policy {clip(model)}; policies: {sorted(policies)}; models: "
                              f"{known_models}", "model", 404, "model_not_found")
        lam = policy.lam
        if extras.get("lambda") is not None and extras.get("target") is not None:
            raise PolicyError("give 'lambda' or 'target', not both", "target")
        if extras.get("lambda") is not None:
            lam = check_lambda(extras["lambda"], "lambda")
        if extras.get("target") is not None:
            if extras["target"] not in TARGETS:
                raise PolicyError(f"'target' must be one of {sorted(TARGETS)}, got {clip(extras['target'])}", "target")
            lam = TARGETS[extras["target"]]
        models = policy.models
        if extras.get("models") is not None:
            req = extras["models"]
            if not isinstance(req, list) or not req or not all(isinstance(m, str) for m in req):
                raise PolicyError("'models' must be a non-empty list of model ids", "models")
            unknown = [m for m in req if m not in known_models]
            if unknown:
                raise PolicyError(f"unknown or inactive model(s) in 'models': {clip(unknown[:10], 400)}; active: "
                                  f"{known_models}", "models")
            models = tuple(m for m in req if models is None or m in models)
            if not models:
                raise PolicyError(f"'models' shares no model with policy {policy.name!r}'s pool", "models")
        cap = policy.max_cost_usd
        if extras.get("max_cost_usd") is not None:
            v = extras["max_cost_usd"]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)) or v <= 0:
                raise PolicyError(f"'max_cost_usd' must be a finite number > 0, got {clip(v)}", "max_cost_usd")
            cap = float(v) if cap is None else min(cap, float(v))
        if models is not None:
            kept = tuple(m for m in models if m in known_models)
            if not kept:
                raise PolicyError(f"none of policy {policy.name!r}'s models {list(models)} is active", "model", 503)
            models = kept
        return Plan(policy=policy.name, lam=lam, models=models, max_cost_usd=cap)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text
