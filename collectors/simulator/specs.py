"""The simulated candidate pool: nine documented multimodal "models" whose answers are drawn, not computed.

No model weights can be downloaded here, so the default pool is simulated. Each `SimModelSpec` fixes a
model's size, prices, speed and skills (how `collectors.simulator.behaviour` turns them into answers is
documented there). Skills and sensitivities are chosen so the best model changes from query to query
(Proposition B.1 of the LatentRouter paper: no additive router can rank the pool correctly everywhere):

* ``simvl-ultra:72b`` is the best on average and the most expensive, but collapses on rotated text;
* ``simdoc-ocr:4b`` reads small / faint text well but is weak on charts and math;
* ``simchart-vl:7b`` is the chart specialist; ``simmath-vl:8b`` the (verbose) math reasoner;
* ``simscan-vl:11b`` is robust to noise and rotation (trained on scans) but mediocre elsewhere;
* ``simvl-nano:1b`` / ``simvl-lite:3b`` are cheap and fast and fine on easy general questions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warehouse.vocabulary import TASK_GROUPS, VISUAL_FACTORS


@dataclass(frozen=True)
class SimModelSpec:
    """One simulated model: what it costs, how fast it is, and what it is good and bad at."""

    name: str  # Ollama-style "family:size" tag
    family: str
    params_b: float
    price_in_per_mtok: float  # USD per million input tokens (image tokens count as input)
    price_out_per_mtok: float
    image_tokens: int  # prompt tokens one image costs
    tokens_per_s: float  # decode speed
    prefill_tokens_per_s: float  # prompt (incl. image) evaluation speed
    load_ms: float  # cold-load time; a warm call reports ~1% of it
    base: float  # base skill logit
    group_skill: Mapping[str, float]  # logit offset per task group
    sensitivity: Mapping[str, float]  # logit penalty per unit of each visual factor
    verbosity: float  # mean completion tokens
    bare_rate: float  # probability the reply is the bare answer
    description: str
    quantization: str = "Q4_K_M"
    context_length: int = 8192
    digest: str = field(default="")

    def __post_init__(self) -> None:
        where = f"SimModelSpec {self.name!r}"
        if not self.name or ":" not in self.name:
            raise ValueError(f"{where}: name must be an Ollama-style 'family:tag'")
        if set(self.group_skill) != set(TASK_GROUPS):
            raise ValueError(f"{where}: group_skill keys {sorted(self.group_skill)} != {sorted(TASK_GROUPS)}")
        if set(self.sensitivity) != set(VISUAL_FACTORS):
            raise ValueError(
                f"{where}: sensitivity keys {sorted(self.sensitivity)} != {sorted(VISUAL_FACTORS)}"
            )
        for fname in ("params_b", "tokens_per_s", "prefill_tokens_per_s", "verbosity"):
            if not getattr(self, fname) > 0:
                raise ValueError(f"{where}: field {fname!r} must be > 0, got {getattr(self, fname)!r}")
        for fname in ("price_in_per_mtok", "price_out_per_mtok", "load_ms", "image_tokens"):
            if getattr(self, fname) < 0:
                raise ValueError(f"{where}: field {fname!r} must be >= 0, got {getattr(self, fname)!r}")
        if not 0.0 <= self.bare_rate <= 1.0:
            raise ValueError(f"{where}: field 'bare_rate' must be in [0, 1], got {self.bare_rate!r}")
        object.__setattr__(self, "group_skill", dict(self.group_skill))
        object.__setattr__(self, "sensitivity", dict(self.sensitivity))
        if not self.digest:
            object.__setattr__(self, "digest", hashlib.sha256(self._canonical().encode()).hexdigest())

    def __hash__(self) -> int:  # dict fields are not hashable; the name identifies a model
        return hash(self.name)

    def _canonical(self) -> str:
        d = {k: v for k, v in self.__dict__.items() if k != "digest"}
        return json.dumps(d, sort_keys=True, default=str)

    @property
    def size_bytes(self) -> int:
        """Approximate on-disk size of a 4-bit quantised model plus its vision projector."""
        return int(self.params_b * 0.56e9 + 0.35e9)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_in_per_mtok + completion_tokens * self.price_out_per_mtok) / 1e6


def _spec(
    *,
    name: str,
    family: str,
    params_b: float,
    price: tuple[float, float],
    image_tokens: int,
    speed: tuple[float, float],
    load_ms: float,
    base: float,
    skill: tuple[float, float, float, float],
    sens: tuple[float, float, float, float, float],
    verbosity: float,
    bare_rate: float,
    description: str,
) -> SimModelSpec:
    return SimModelSpec(
        name=name,
        family=family,
        params_b=params_b,
        price_in_per_mtok=price[0],
        price_out_per_mtok=price[1],
        image_tokens=image_tokens,
        tokens_per_s=speed[0],
        prefill_tokens_per_s=speed[1],
        load_ms=load_ms,
        base=base,
        group_skill=dict(zip(TASK_GROUPS, skill, strict=True)),
        sensitivity=dict(zip(VISUAL_FACTORS, sens, strict=True)),
        verbosity=verbosity,
        bare_rate=bare_rate,
        description=description,
    )


# price = (in, out) USD per million tokens; speed = (decode, prefill) tokens/s
# skill = (ocr, chart, math, general); sens = (small_text, noise, rotation, density, low_contrast)
DEFAULT_POOL: tuple[SimModelSpec, ...] = (
    _spec(
        name="simvl-nano:1b",
        family="simvl",
        params_b=1.0,
        price=(0.02, 0.06),
        image_tokens=196,
        speed=(140.0, 1200.0),
        load_ms=600.0,
        base=1.5,
        skill=(-0.4, -1.0, -1.2, 1.5),
        sens=(2.8, 1.6, 1.3, 1.8, 1.5),
        verbosity=6.0,
        bare_rate=0.8,
        description="Tiny, very cheap and fast; fine on easy general questions, fails on small text, "
        "dense charts and math.",
    ),
    _spec(
        name="simvl-lite:3b",
        family="simvl",
        params_b=3.0,
        price=(0.05, 0.15),
        image_tokens=256,
        speed=(95.0, 1000.0),
        load_ms=900.0,
        base=1.9,
        skill=(0.0, -0.4, -0.9, 1.4),
        sens=(2.4, 1.3, 1.1, 1.4, 1.3),
        verbosity=12.0,
        bare_rate=0.6,
        description="Small general-purpose model; good value on general questions, weak at math.",
    ),
    _spec(
        name="simdoc-ocr:4b",
        family="simdoc",
        params_b=4.0,
        price=(0.08, 0.20),
        image_tokens=1024,
        speed=(80.0, 950.0),
        load_ms=1100.0,
        base=2.0,
        skill=(1.4, -1.3, -1.0, -0.3),
        sens=(0.3, 1.1, 1.4, 1.5, 0.3),
        verbosity=10.0,
        bare_rate=0.7,
        description="Document/OCR specialist with high-resolution tiling: robust to small and faint text, "
        "weak on charts and math.",
    ),
    _spec(
        name="simchart-vl:7b",
        family="simchart",
        params_b=7.0,
        price=(0.15, 0.45),
        image_tokens=576,
        speed=(55.0, 800.0),
        load_ms=1600.0,
        base=2.0,
        skill=(-0.5, 1.6, 0.0, -0.2),
        sens=(2.2, 1.0, 1.1, 0.3, 1.4),
        verbosity=25.0,
        bare_rate=0.5,
        description="Chart specialist: reads dense plots well, poor at small printed text.",
    ),
    _spec(
        name="simmath-vl:8b",
        family="simmath",
        params_b=8.0,
        price=(0.20, 0.60),
        image_tokens=576,
        speed=(48.0, 750.0),
        load_ms=1800.0,
        base=2.0,
        skill=(-0.6, 0.1, 1.7, -0.2),
        sens=(1.6, 1.1, 1.1, 1.1, 1.0),
        verbosity=110.0,
        bare_rate=0.1,
        description="Math reasoner: long step-by-step answers, strong on math, average elsewhere.",
    ),
    _spec(
        name="simscan-vl:11b",
        family="simscan",
        params_b=11.0,
        price=(0.25, 0.75),
        image_tokens=1024,
        speed=(38.0, 650.0),
        load_ms=2300.0,
        base=1.9,
        skill=(0.5, -0.2, -0.5, -0.1),
        sens=(1.5, 0.15, 0.15, 1.1, 0.8),
        verbosity=18.0,
        bare_rate=0.6,
        description="Trained on scanned pages: robust to noise and rotation, mediocre on clean content.",
    ),
    _spec(
        name="simvl-pro:13b",
        family="simvl",
        params_b=13.0,
        price=(0.35, 1.05),
        image_tokens=729,
        speed=(32.0, 600.0),
        load_ms=2800.0,
        base=2.5,
        skill=(0.2, 0.3, 0.2, 0.5),
        sens=(1.7, 1.0, 1.3, 1.1, 1.1),
        verbosity=30.0,
        bare_rate=0.4,
        description="Balanced mid-size generalist; no specialty, no glaring weakness.",
    ),
    _spec(
        name="simvl-ultra:72b",
        family="simvl",
        params_b=72.0,
        price=(1.20, 3.60),
        image_tokens=1296,
        speed=(28.0, 900.0),
        load_ms=9000.0,
        base=3.5,
        skill=(0.3, 0.4, 0.4, 0.5),
        sens=(1.3, 0.9, 4.5, 0.9, 1.0),
        verbosity=45.0,
        bare_rate=0.3,
        description="Largest and most expensive; best on average but collapses on rotated text.",
    ),
)

HELD_OUT: SimModelSpec = _spec(
    name="simocr-pro:12b",
    family="simocr",
    params_b=12.0,
    price=(0.30, 0.90),
    image_tokens=1024,
    speed=(36.0, 650.0),
    load_ms=2600.0,
    base=2.0,
    skill=(1.5, -0.6, -0.8, -0.4),
    sens=(0.5, 0.7, 1.0, 1.2, 0.4),
    verbosity=16.0,
    bare_rate=0.6,
    description="Held-out newcomer: strong OCR at mid price; added at run time to test routing to new models.",
)

ALL_MODELS: dict[str, SimModelSpec] = {s.name: s for s in (*DEFAULT_POOL, HELD_OUT)}


def get_spec(name: str) -> SimModelSpec:
    """The spec of a pool or held-out model (KeyError naming the known ones otherwise)."""
    if name not in ALL_MODELS:
        raise KeyError(f"unknown simulated model {name!r}; known: {sorted(ALL_MODELS)}")
    return ALL_MODELS[name]


def model_table_rows(
    specs: list[SimModelSpec] | tuple[SimModelSpec, ...] | None = None,
) -> list[dict[str, Any]]:
    """Registry rows (``models`` table columns) for ``specs``; the default pool when None.

    The held-out model is listed only when asked for: ``model_table_rows([HELD_OUT])``.
    """
    specs = DEFAULT_POOL if specs is None else specs
    return [
        {
            "model_id": s.name,
            "backend": "sim",
            "endpoint": "",
            "price_in_per_mtok": s.price_in_per_mtok,
            "price_out_per_mtok": s.price_out_per_mtok,
            "params_b": s.params_b,
            "description": f"SIMULATED: {s.description}",
            "simulated": True,
        }
        for s in specs
    ]
