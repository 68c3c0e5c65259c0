"""How a simulated model behaves: whether it answers correctly, what it says, and how many tokens and how
much time the reply takes.

The chance that a model answers a query correctly is

    p = sigmoid(base + group_skill[task_group] - sum_f sensitivity[f] * visual[f] + difficulty(query))

where ``visual`` holds the five hidden rendering factors of the query image (``source_meta["visual"]``) and
``difficulty`` is a per-query term shared by all models (so models' outcomes are correlated, as real ones
are).

Everything is deterministic per (seed, model, query): `answer_for` derives its random generator from a
hash of those, so a collector run is reproducible and a retry returns the same answer. Wrong answers are
plausible (a distractor, a perturbed number, another option letter, an OCR-style misreading) and answers
come bare ("42") or wrapped ("The answer is 42.", reasoning text ending in "Therefore, the answer is 42.");
no sentence appears twice in a reply, however long.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from collectors.simulator.specs import SimModelSpec
from warehouse.vocabulary import TASK_GROUPS, VISUAL_FACTORS

# Factors used when a query's image is not in the answer key (or it has no "visual" metadata).
NEUTRAL_VISUAL: dict[str, float] = dict.fromkeys(VISUAL_FACTORS, 0.3)
DIFFICULTY_STD = 1.1  # std of the shared per-query logit shift
CHARS_PER_TOKEN = 4.0  # crude tokenizer used for prompt/completion token counts
TEMPLATE_TOKENS = 12  # chat-template overhead added to every prompt
OVERHEAD_NS = 2_000_000  # request handling time outside load / prompt eval / eval, part of total_duration


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
# Further reasoning steps for long replies, once the group's filler is used up: a verb and an object per
# sentence, each (verb, object) pair at most once in a reply, so a long reply never repeats a sentence or
# loops over the same few; same rules as the filler (no digits, no one-letter words).
_STEP_VERBS = {
    "ocr": ("Rereading", "Tracing", "Comparing", "Checking", "Isolating", "Matching", "Separating", "Confirming"),
    "chart": ("Rereading", "Comparing", "Checking", "Tracing", "Inspecting", "Matching", "Locating", "Confirming"),
    "math": ("Rewriting", "Checking", "Simplifying", "Comparing", "Expanding", "Estimating", "Tracing",
             "Confirming"),
    "general": ("Examining", "Comparing", "Checking", "Considering", "Locating", "Matching", "Describing",
                "Confirming"),
}
_STEP_OBJECTS = {
    "ocr": ("the first word of the line", "the letters near the border", "the spacing between the words",
            "the capital letters", "the punctuation marks", "the thin strokes", "the shape of each glyph",
            "the word that the question names", "the last word of the line", "the faint characters"),
    "chart": ("the tallest bar", "the axis ticks", "the legend entries", "the colour of each series",
              "the gridlines", "the category labels", "the title of the chart", "the smallest value shown",
              "the gap between neighbouring bars", "the scale of the vertical axis"),
    "math": ("the given relation", "each side of the equation", "the known lengths", "the marked angle",
             "the ratio between the quantities", "the units involved", "the intermediate result",
             "the labelled quantities", "the constraint from the figure", "the sign of each term"),
    "general": ("the objects in the foreground", "the colours in the scene", "the position of the subject",
                "the lighting of the picture", "the edges of the frame", "the details the question names",
                "the background", "the relation between the objects", "the most likely reading",
                "the overall layout"),
}
_STEP_ENDS = ("once more.", "against the image.", "with care.", "before going on.", "for consistency.",
              "to rule out any misreading.", "one more time.", "in turn.")


def _steps(group: str, rng: np.random.Generator):
    """Distinct reasoning sentences for ``group`` in a seeded order: each (verb, object) once, in rounds that
    use every verb once, never the same verb twice in a row."""
    verbs = _STEP_VERBS.get(group, _STEP_VERBS["general"])
    objects = _STEP_OBJECTS.get(group, _STEP_OBJECTS["general"])
    queues = {v: [objects[int(k)] for k in rng.permutation(len(objects))] for v in verbs}
    last = ""
    for _ in objects:
        order = [verbs[int(k)] for k in rng.permutation(len(verbs))]
        if order[0] == last:
            order.append(order.pop(0))
        for verb in order:
            yield f"{verb} {queues[verb].pop()} {_STEP_ENDS[int(rng.integers(len(_STEP_ENDS)))]}"
        last = order[-1]


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
    order = [int(i) for i in rng.permutation(len(filler))]
    steps = _steps(group, rng)  # after the filler: no sentence twice, so a long reply never loops
    while count_tokens(" ".join(parts)) < budget:
        sentence = filler[order.pop()] if order else next(steps, None)
        if sentence is None:  # every distinct sentence used: a shorter reply rather than a repeat
            break
        parts.append(sentence)
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
_GENERIC_TEXT = (  # replies to a request without an image never describe one
    "I can only give a general answer to that question.",
    "Here is a short answer based on what the question says.",
    "That depends on details the question does not give.",
    "I am not certain; a precise answer needs more context.",
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
        core = str(rng.choice(_GENERIC if (n_images or image_sha256) else _GENERIC_TEXT))
    style = "bare" if rng.random() < spec.bare_rate else "short"
    text = _dress(core, style, spec, "general", rng)
    ptoks = prompt_token_count(spec, prompt_text, n_images)
    ctoks = count_tokens(text)
    load, prefill, decode = _durations(spec, ptoks, ctoks, stable_rng(seed, spec.name, key, "timing"))
    return SimAnswer(text, None, p, None, ptoks, ctoks, load, prefill, decode, style)
