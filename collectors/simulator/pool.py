"""The simulated candidate pool: nine documented multimodal "models" whose answers are drawn, not computed.

No model weights can be downloaded here, so the default pool is simulated. Each `SimModelSpec` fixes a
model's size, prices, speed and skills; the chance that it answers a query correctly is

    p = sigmoid(base + group_skill[task_group] - sum_f sensitivity[f] * visual[f] + difficulty(query))

where ``visual`` holds the five hidden rendering factors of the query image (``source_meta["visual"]``) and
``difficulty`` is a per-query term shared by all models (so models' outcomes are correlated, as real ones
are). Skills and sensitivities are chosen so the best model changes from query to query (Proposition B.1 of
the LatentRouter paper: no additive router can rank the pool correctly everywhere):

* ``simvl-ultra:72b`` is the best on average and the most expensive, but collapses on rotated text;
* ``simdoc-ocr:4b`` reads small / faint text well but is weak on charts and math;
* ``simchart-vl:7b`` is the chart specialist; ``simmath-vl:8b`` the (verbose) math reasoner;
* ``simscan-vl:11b`` is robust to noise and rotation (trained on scans) but mediocre elsewhere;
* ``simvl-nano:1b`` / ``simvl-lite:3b`` are cheap and fast and fine on easy general questions.

Everything is deterministic per (seed, model, query): `answer_for` derives its random generator from a
hash of those, so a collector run is reproducible and a retry returns the same answer. Wrong answers are
plausible (a distractor, a perturbed number, another option letter, an OCR-style misreading) and answers
come bare ("42") or wrapped ("The answer is 42.", reasoning text ending in "Therefore, the answer is 42.").
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VISUAL_FACTORS: tuple[str, ...] = ("small_text", "noise", "rotation", "density", "low_contrast")
TASK_GROUPS: tuple[str, ...] = ("ocr", "chart", "math", "general")
# Factors used when a query's image is not in the answer key (or it has no "visual" metadata).
NEUTRAL_VISUAL: dict[str, float] = dict.fromkeys(VISUAL_FACTORS, 0.3)
DIFFICULTY_STD = 1.1  # std of the shared per-query logit shift
CHARS_PER_TOKEN = 4.0  # crude tokenizer used for prompt/completion token counts
TEMPLATE_TOKENS = 12  # chat-template overhead added to every prompt
OVERHEAD_NS = 2_000_000  # request handling time outside load / prompt eval / eval, part of total_duration


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


# ----------------------------------------------------------------------------------------------- skills


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def check_visual(visual: Mapping[str, Any] | None, where: str = "visual") -> dict[str, float]:
    """Validate the five visual factors (missing ones take the neutral value) and return them as floats."""
    out = dict(NEUTRAL_VISUAL)
    for k, v in (visual or {}).items():
        if k not in out:
            continue  # extra descriptive keys are allowed
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: factor {k!r} is not a number: {v!r}") from None
        if not 0.0 <= fv <= 1.0 or math.isnan(fv):
            raise ValueError(f"{where}: factor {k!r} = {fv} outside [0, 1]")
        out[k] = fv
    return out


def skill_logit(spec: SimModelSpec, task_group: str, visual: Mapping[str, Any] | None) -> float:
    """Model-specific part of the logit (without the shared query difficulty)."""
    if task_group not in spec.group_skill:
        raise ValueError(f"unknown task_group {task_group!r}; expected one of {', '.join(TASK_GROUPS)}")
    vis = check_visual(visual)
    return (
        spec.base + spec.group_skill[task_group] - sum(spec.sensitivity[f] * vis[f] for f in VISUAL_FACTORS)
    )


def p_correct(
    spec: SimModelSpec, task_group: str, visual: Mapping[str, Any] | None, difficulty: float = 0.0
) -> float:
    """Probability that ``spec`` answers a query of ``task_group`` with these visual factors correctly."""
    return _sigmoid(skill_logit(spec, task_group, visual) + difficulty)


def stable_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by a hash of ``parts`` (stable across processes, unlike ``hash()``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def normalise_question(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def question_hash(text: str) -> str:
    return hashlib.sha256(normalise_question(text).encode("utf-8")).hexdigest()


def query_key(key_row: Mapping[str, Any]) -> str:
    """The identity a simulated answer is seeded by: query id, else image hash + question, else question."""
    qid = str(key_row.get("query_id") or "")
    if qid:
        return f"q:{qid}"
    sha = str(key_row.get("image_sha256") or "")
    return f"img:{sha}:{question_hash(key_row.get('question') or '')}"


def query_difficulty(key: str, seed: int) -> float:
    """The logit shift shared by every model on one query (seeded, so the same in every process)."""
    return float(stable_rng(seed, "difficulty", key).normal(0.0, DIFFICULTY_STD))


def parse_source_meta(raw: Any, where: str = "source_meta") -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    return meta


# ---------------------------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class SimAnswer:
    """One simulated reply with the counts and durations an Ollama server would report (nanoseconds)."""

    text: str
    correct: bool | None  # None when the query is not in the answer key (no ground truth)
    p_correct: float
    query_id: str | None
    prompt_tokens: int
    completion_tokens: int
    load_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    style: str  # bare | short | verbose | refusal

    @property
    def total_duration_ns(self) -> int:
        return self.load_duration_ns + self.prompt_eval_duration_ns + self.eval_duration_ns + OVERHEAD_NS


def count_tokens(text: str) -> int:
    """Crude token estimate (about four characters per token), used for both prompt and completion."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN)) if text else 0


def prompt_token_count(spec: SimModelSpec, prompt_text: str, n_images: int) -> int:
    return TEMPLATE_TOKENS + count_tokens(prompt_text) + n_images * spec.image_tokens


# Reasoning filler: no digits and no one-letter words, so answer extraction cannot pick them up.
_FILLER = {
    "ocr": [
        "Reading the text region line by line.",
        "The characters are partly blurred, so each glyph needs care.",
        "The relevant word appears near the highlighted region.",
        "Checking the spelling against the visible letters.",
        "Some strokes are faint, so the surrounding words help.",
        "The font is small but the shapes are still distinguishable.",
    ],
    "chart": [
        "Looking at the chart axes and the legend first.",
        "Comparing the heights of the relevant bars.",
        "The labels on the horizontal axis identify each category.",
        "Reading the value where the series meets the gridline.",
        "The legend maps each colour to its series.",
        "Several elements overlap, so the closest gridline matters.",
    ],
    "math": [
        "Let us work through this step by step.",
        "First identify the quantities given in the figure.",
        "Substituting the known values into the relation.",
        "Simplifying the expression carefully gives the result.",
        "Double checking the arithmetic before answering.",
        "The diagram fixes the relation between the unknowns.",
        "Isolating the unknown on one side of the equation.",
    ],
    "general": [
        "Looking at the image carefully.",
        "The main object is in the centre of the scene.",
        "Considering the context shown in the picture.",
        "The question asks about the most salient detail.",
        "The background gives additional clues about the setting.",
    ],
}
_REFUSALS = (
    "Sorry, the image is too unclear for me to read.",
    "The text in the image is not legible enough to answer.",
    "Unable to determine this from the image.",
)
_OCR_CONFUSIONS = {
    "O": "0",
    "0": "O",
    "l": "1",
    "1": "l",
    "I": "1",
    "S": "5",
    "5": "S",
    "B": "8",
    "8": "B",
    "e": "c",
    "c": "e",
    "a": "o",
    "o": "a",
    "n": "h",
    "h": "n",
    "m": "rn",
    "u": "v",
    "v": "u",
    "g": "q",
    "Z": "2",
}
_NUM_RE = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def _norm(s: str) -> str:
    return " ".join(str(s).split()).casefold().rstrip(".")


def _as_float(s: str) -> float | None:
    t = str(s).strip().replace(",", "").rstrip("%")
    return float(t) if _NUM_RE.match(t) else None


def _differs(cand: str, answer: str, kind: str) -> bool:
    """True when ``cand`` would be scored wrong against ``answer`` (numeric: more than 6% apart)."""
    if not str(cand).strip() or _norm(cand) == _norm(answer):
        return False
    if kind == "numeric":
        a, c = _as_float(answer), _as_float(cand)
        if a is not None and c is not None:
            return abs(c - a) > max(0.06 * abs(a), 1e-9)
    return True


def _perturb_number(answer: str, rng: np.random.Generator) -> str:
    text = answer.strip()
    a = _as_float(text)
    if a is None:
        return _perturb_text(text, rng)
    decimals = len(text.split(".")[1]) if "." in text else 0
    suffix = "%" if text.endswith("%") else ""
    for _ in range(20):
        if a == 0:
            cand = float(rng.integers(1, 6)) * (1 if rng.random() < 0.5 else -1)
        elif rng.random() < 0.15:
            cand = a * (10.0 if rng.random() < 0.5 else 0.1)  # misplaced decimal point
        else:
            cand = a * (1 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.5))
        s = f"{cand:.{decimals}f}" if decimals else str(int(round(cand)))
        if _differs(s, text, "numeric"):
            return s + suffix
    return str(int(round(a)) + 7) + suffix


def _perturb_text(answer: str, rng: np.random.Generator) -> str:
    s = answer.strip() or "none"
    words = s.split()
    if len(words) > 2 and rng.random() < 0.5:  # drop a word
        del words[int(rng.integers(len(words)))]
        cand = " ".join(words)
        if _norm(cand) != _norm(s):
            return cand
    chars = list(s)
    n_edits = 1 + len(chars) // 6
    idx = [i for i, ch in enumerate(chars) if ch in _OCR_CONFUSIONS or ch.isalnum()]
    for i in rng.permutation(idx)[:n_edits] if idx else []:
        ch = chars[i]
        if ch in _OCR_CONFUSIONS:
            chars[i] = _OCR_CONFUSIONS[ch]
        elif ch.isdigit():
            chars[i] = str((int(ch) + 3) % 10)
        elif ch.isascii():
            chars[i] = chr((ord(ch.lower()) - 97 + 1) % 26 + 97)
        else:
            chars[i] = "e"
    cand = "".join(chars)
    return cand if _norm(cand) != _norm(s) else s + "s"


_LETTER_RE = re.compile(r"^\(?([A-Za-z])[\).:]?$")


def _wrong_choice(answer: str, options: list[str], rng: np.random.Generator) -> str:
    m = _LETTER_RE.match(answer.strip())
    if m and options:
        letters = [chr(65 + i) for i in range(len(options))]
        others = [x for x in letters if x != m.group(1).upper()]
        if others:
            return str(rng.choice(others))
    others = [o for o in options if _norm(o) != _norm(answer)]
    if others:
        return str(rng.choice(others))
    if m:
        return "B" if m.group(1).upper() == "A" else "A"
    return _perturb_text(answer, rng)


def _wrong_answer(row: Mapping[str, Any], meta: Mapping[str, Any], rng: np.random.Generator) -> str:
    answer, kind = str(row.get("answer") or ""), str(row.get("answer_kind") or "exact")
    distractors = [str(d) for d in (meta.get("distractors") or []) if _differs(str(d), answer, kind)]
    options = [str(o) for o in (meta.get("options") or [])]
    if kind == "choice":
        if distractors and (not options or rng.random() < 0.5):
            return str(rng.choice(distractors))
        return _wrong_choice(answer, options, rng)
    if distractors and rng.random() < 0.75:
        return str(rng.choice(distractors))
    if kind == "numeric":
        return _perturb_number(answer, rng)
    return _perturb_text(answer, rng)


SHORT_SHARE = 0.4  # share of non-bare replies that are one short sentence rather than reasoning


def _verbose_mean(spec: SimModelSpec) -> float:
    """Mean length of reasoning replies such that all replies together average ``spec.verbosity`` tokens."""
    verbose_share = (1.0 - spec.bare_rate) * (1.0 - SHORT_SHARE)
    if verbose_share <= 0:
        return spec.verbosity
    short_tokens = 3.0  # a bare or one-sentence reply is about three tokens
    return max(8.0, (spec.verbosity - short_tokens * (1.0 - verbose_share)) / verbose_share)


def _dress(core: str, style: str, spec: SimModelSpec, group: str, rng: np.random.Generator) -> str:
    """Wrap the bare answer ``core`` in the reply style."""
    if style == "bare":
        return core
    if style == "short":
        template = ("The answer is {}.", "Answer: {}", "{}.")[int(rng.integers(3))]
        return template.format(core)
    filler = _FILLER.get(group, _FILLER["general"])
    target = max(8, int(rng.gamma(4.0, _verbose_mean(spec) / 4.0)))
    parts: list[str] = []
    closing = f"Therefore, the answer is {core}."
    budget = target - count_tokens(closing)
    order: list[int] = []
    while count_tokens(" ".join(parts)) < budget:
        if not order:  # each sentence once before any repeats
            order = [int(i) for i in rng.permutation(len(filler))]
        parts.append(filler[order.pop()])
    return " ".join([*parts, closing])


def _core_answer(row: Mapping[str, Any], meta: Mapping[str, Any], rng: np.random.Generator) -> str:
    """The correct answer as a model would write it (choice letters sometimes with their option text)."""
    answer = str(row.get("answer") or "").strip()
    options = [str(o) for o in (meta.get("options") or [])]
    m = _LETTER_RE.match(answer)
    if str(row.get("answer_kind")) == "choice" and m and options and rng.random() < 0.3:
        i = ord(m.group(1).upper()) - 65
        if 0 <= i < len(options):
            return f"{m.group(1).upper()}. {options[i]}"
    return answer


def _durations(
    spec: SimModelSpec, prompt_tokens: int, completion_tokens: int, rng: np.random.Generator
) -> tuple[int, int, int]:
    jitter = rng.lognormal(0.0, 0.12, size=3)
    load = int(spec.load_ms * 1e6 * 0.01 * jitter[0])  # warm model: weights already resident
    prefill = int(prompt_tokens / spec.prefill_tokens_per_s * 1e9 * jitter[1])
    decode = int(completion_tokens / spec.tokens_per_s * 1e9 * jitter[2])
    return load, prefill, decode


def answer_for(
    spec: SimModelSpec,
    key_row: Mapping[str, Any],
    seed: int = 0,
    *,
    prompt_text: str | None = None,
    n_images: int | None = None,
) -> SimAnswer:
    """The reply ``spec`` gives to the answer-key query ``key_row`` (a ``queries`` table row as a dict).

    The answer and its correctness depend only on (seed, model, query); ``prompt_text`` (default: the
    question) and ``n_images`` (default: 1 when the row has an image) only change the token counts.
    """
    qid = str(key_row.get("query_id") or "") or None
    where = f"answer key row {qid or '?'}"
    meta = parse_source_meta(key_row.get("source_meta"), f"{where}: source_meta")
    group = str(key_row.get("task_group") or "")
    if group not in TASK_GROUPS:
        raise ValueError(f"{where}: field 'task_group' = {group!r}; expected one of {', '.join(TASK_GROUPS)}")
    visual = check_visual(meta.get("visual"), f"{where}: source_meta.visual")
    key = query_key(key_row)
    p = p_correct(spec, group, visual, query_difficulty(key, seed))
    rng = stable_rng(seed, spec.name, key)
    correct = bool(rng.random() < p)
    style = (
        "bare" if rng.random() < spec.bare_rate else ("short" if rng.random() < SHORT_SHARE else "verbose")
    )
    if correct:
        core = _core_answer(key_row, meta, rng)
    elif rng.random() < 0.06 * (1.0 + 2.0 * visual["small_text"] * visual["low_contrast"]):
        core, style = str(rng.choice(_REFUSALS)), "refusal"
    else:
        core = _wrong_answer(key_row, meta, rng)
    text = core if style == "refusal" else _dress(core, style, spec, group, rng)
    has_image = bool(key_row.get("image_sha256"))
    images = (1 if has_image else 0) if n_images is None else n_images
    ptoks = prompt_token_count(
        spec, str(key_row.get("question") or "") if prompt_text is None else prompt_text, images
    )
    ctoks = count_tokens(text)
    load, prefill, decode = _durations(spec, ptoks, ctoks, stable_rng(seed, spec.name, key, "timing"))
    return SimAnswer(text, correct, p, qid, ptoks, ctoks, load, prefill, decode, style)


_GENERIC = (
    "The image shows a document with several lines of text.",
    "It appears to be a chart comparing several categories.",
    "The picture shows an everyday scene.",
    "Not enough information is visible to answer precisely.",
)


def answer_unknown(
    spec: SimModelSpec,
    prompt_text: str,
    image_sha256: str = "",
    seed: int = 0,
    *,
    n_images: int = 0,
) -> SimAnswer:
    """A plausible reply to a request that is not in the answer key (no ground truth, so ``correct`` is None)."""
    key = f"unknown:{image_sha256}:{question_hash(prompt_text)}"
    p = p_correct(spec, "general", NEUTRAL_VISUAL, query_difficulty(key, seed))
    rng = stable_rng(seed, spec.name, key)
    low = prompt_text.casefold()
    if re.search(r"\b(options?|choices?)\b|\(a\)|\ba\.", low):
        core = "ABCD"[int(rng.integers(4))]
    elif re.search(r"how (many|much)|what (number|value|percentage)|\bcount\b", low):
        core = str(int(rng.integers(0, 100)))
    else:
        core = str(rng.choice(_GENERIC))
    style = "bare" if rng.random() < spec.bare_rate else "short"
    text = _dress(core, style, spec, "general", rng)
    ptoks = prompt_token_count(spec, prompt_text, n_images)
    ctoks = count_tokens(text)
    load, prefill, decode = _durations(spec, ptoks, ctoks, stable_rng(seed, spec.name, key, "timing"))
    return SimAnswer(text, None, p, None, ptoks, ctoks, load, prefill, decode, style)
