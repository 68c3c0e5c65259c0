"""Benchmark-compatible answer scoring: every scorer maps (free-text prediction, ground truth) to [0, 1].

Models rarely answer with the bare ground truth: they write "The answer is 1,234.5.", "(B) red" or a
paragraph of reasoning ending in "Therefore, the answer is harbor." The scorers therefore first pull the
final answer out of the reply, then compare it the way the public benchmarks do:

* ``exact``   -- VQA-style normalised exact match (case, punctuation, articles, number words);
* ``numeric`` -- the number the reply commits to, within a relative / absolute tolerance (ChartQA-style);
* ``choice``  -- the option letter the reply commits to, without reading "A car" as option A;
* ``text``    -- ANLS, the Average Normalised Levenshtein Similarity of DocVQA.

`is_correct` turns a score into the boolean ``correct`` column of the traces table.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

from warehouse.vocabulary import ANSWER_KINDS

ANLS_CORRECT = 0.5  # a ``text`` answer counts as correct from this ANLS on

_NUMBER_WORDS: dict[str, str] = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_ARTICLES = frozenset({"a", "an", "the"})
_DASHES = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u2012": "-", "\u2010": "-"})

# "the answer is", "Answer:", "final answer =" ... ; the reply's answer follows the last such marker.
_MARKER_RE = re.compile(
    r"(?i)\b(?:final\s+answer|answer|option|choice)\b"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?\s*(?:[:=]|-(?=\s))?\s*"
)
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\n")


def _unicode_clean(s: object) -> str:
    """NFKC-fold (full-width digits, ligatures), unify dashes, drop markdown emphasis."""
    text = unicodedata.normalize("NFKC", "" if s is None else str(s)).translate(_DASHES)
    return text.replace("**", " ").replace("__", " ").replace("`", " ")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def normalise_text(s: object) -> str:
    """VQA-style normalisation: casefold, thousands separators and punctuation removed (decimal points and
    leading minus signs of numbers kept), articles dropped, number words zero..twenty as digits, single
    spaces.
    """
    text = _unicode_clean(s).casefold()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 -> 1234
    out: list[str] = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch in "'\u2019":  # don't -> dont
            continue
        if ch == "." and 0 < i < n - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
            out.append(ch)
        elif ch == "-" and i < n - 1 and text[i + 1].isdigit() and (i == 0 or text[i - 1].isspace()):
            out.append(ch)
        elif _is_punct(ch):
            out.append(" ")
        else:
            out.append(ch)
    words = [_NUMBER_WORDS.get(w, w) for w in "".join(out).split() if w not in _ARTICLES]
    return " ".join(words)


def final_answer_segment(prediction: object) -> str | None:
    """The text after the reply's last answer marker ("the answer is ...", "Answer: ..."), cut at the end of
    that sentence; None when the reply has no marker."""
    text = _unicode_clean(prediction)
    last = None
    for m in _MARKER_RE.finditer(text):
        last = m
    if last is None:
        return None
    seg = text[last.end() :]
    end = _SENTENCE_END_RE.search(seg)
    seg = seg[: end.start()] if end else seg
    seg = seg.strip().strip("\"'")
    return seg or None


def _candidates(prediction: object) -> list[str]:
    """The whole reply and, when present, the final-answer segment of it."""
    whole = _unicode_clean(prediction).strip()
    out = [whole]
    seg = final_answer_segment(prediction)
    if seg is not None and seg != whole:
        out.append(seg)
    return out


def exact_match(prediction: object, answer: object) -> float:
    """1.0 when the reply (or its final-answer segment) equals ``answer`` after `normalise_text`, else 0.0.

    Yes/no answers also accept a reply that starts with the right word ("Yes, it is left of ...").
    """
    target = normalise_text(answer)
    for cand in _candidates(prediction):
        norm = normalise_text(cand)
        if norm == target:
            return 1.0
        if target in ("yes", "no") and norm.split(" ", 1)[0] == target:
            return 1.0
    return 0.0


# -------------------------------------------------------------------------------------------- numbers

_NUM_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-+]?)"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?!\d)"
    r"(?:/(?P<den>\d+(?:\.\d+)?)(?![\d/]))?"
    r"(?P<pct>\s*(?:%|percent\b))?",
    re.IGNORECASE,
)
_WORD_NUM_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def _numbers(text: str) -> list[float]:
    vals: list[float] = []
    for m in _NUM_RE.finditer(text):
        v = float(m.group("num").replace(",", ""))
        den = m.group("den")
        if den is not None:
            d = float(den)
            if d == 0:
                continue
            v /= d
        vals.append(-v if m.group("sign") == "-" else v)
    return vals


def extract_number(text: object) -> float | None:
    """The number a free-text reply commits to.

    After an answer marker ("The answer is 1,234.5 (from ...)") the first number following the last marker;
    otherwise the LAST number in the text. Handles thousands separators, decimals, signs (a hyphen glued to a
    preceding word or digit is not a minus: "2019-2020"), fractions "3/4" and percentages ("45%" is 45).
    Falls back to number words (zero..twenty) when the text has no digits. None when nothing is found.
    """
    clean = _unicode_clean(text)
    seg = final_answer_segment(clean)
    if seg is not None:
        vals = _numbers(seg)
        if vals:
            return vals[0]
    vals = _numbers(clean)
    if vals:
        return vals[-1]
    words = _WORD_NUM_RE.findall(clean)
    return float(_NUMBER_WORDS[words[-1].lower()]) if words else None


def numeric_match(prediction: object, answer: object, rel_tol: float = 0.01, abs_tol: float = 1e-6) -> float:
    """1.0 when the reply's number is within ``max(rel_tol * |answer|, abs_tol)`` of the answer's, else 0.0.

    Raises ValueError when ``answer`` itself holds no number (bad ground truth, not a wrong prediction).
    """
    if rel_tol < 0 or abs_tol < 0:
        raise ValueError(f"numeric_match: tolerances must be >= 0, got rel_tol={rel_tol}, abs_tol={abs_tol}")
    a = extract_number(answer)
    if a is None:
        raise ValueError(f"numeric_match: answer {answer!r} contains no number")
    p = extract_number(prediction)
    if p is None or math.isnan(p):
        return 0.0
    tol = max(rel_tol * abs(a), abs_tol)
    return 1.0 if abs(p - a) <= tol * (1 + 1e-9) else 0.0


# -------------------------------------------------------------------------------------------- choices

_BARE_LETTER_RE = re.compile(r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:)]?")
_LEAD_LETTER_RE = re.compile(r"[\(\[]\s*([A-Za-z])\s*[\)\]]|([A-Za-z])[.):](?=\s|$)")
_AFTER_MARKER_RE = re.compile(
    r"[\(\[]\s*([A-Za-z])\s*[\)\]]"  # (C)
    r"|([A-Za-z])(?=\s*(?:[.,;:!?)\]]|$))"  # b.  /  b<end>
    r"|([B-HJ-Z])(?=\s)"  # C because ...   (not A / I: "the answer is a car")
)
_BRACKET_LETTER_RE = re.compile(r"[\(\[]\s*([A-Za-z])\s*[\)\]]")
_TAIL_LETTER_RE = re.compile(r"(?<![\w'])([A-Z])(?=\s*(?:[.,;:!?)]|$))")


def parse_choice_letter(answer: object, options: Sequence[str] | None = None) -> str:
    """The ground-truth option letter: "B", "(b)", "B." or, when ``options`` are given, an option's text."""
    s = _unicode_clean(answer).strip()
    m = _BARE_LETTER_RE.fullmatch(s)
    if m:
        return m.group(1).upper()
    if options:
        target = normalise_text(s)
        for i, opt in enumerate(options):
            if normalise_text(opt) == target:
                return chr(65 + i)
    raise ValueError(
        f"choice answer {answer!r} is not an option letter" + (" or option text" if options else "")
    )


def extract_choice(prediction: object, options: Sequence[str] | None = None) -> str | None:
    """The option letter a free-text reply commits to, or None.

    In order: a bare letter ("B", "(b)", "C."); a leading "B. red" / "(B) red"; the letter after the last
    answer marker ("Answer: b", "the answer is C because"); the last bracketed letter; the last capital letter
    standing alone before punctuation or the end; finally, when ``options`` are given, the one option whose
    text the reply names. Articles are not letters: "A car" and "the answer is a car" give None.
    """
    text = _unicode_clean(prediction).strip()
    n_opt = len(options) if options else 26
    valid = {chr(65 + i) for i in range(min(n_opt, 26))}

    def ok(letter: str | None) -> str | None:
        return letter.upper() if letter and letter.upper() in valid else None

    if not text:
        return None
    m = _BARE_LETTER_RE.fullmatch(text)
    if m:
        return ok(m.group(1))
    m = _LEAD_LETTER_RE.match(text)
    if m and ok(m.group(1) or m.group(2)):
        return ok(m.group(1) or m.group(2))
    markers = list(_MARKER_RE.finditer(text))
    for mk in reversed(markers):
        m = _AFTER_MARKER_RE.match(text, mk.end())
        if m:
            letter = ok(next(g for g in m.groups() if g))
            if letter:
                return letter
    for pattern in (_BRACKET_LETTER_RE, _TAIL_LETTER_RE):
        found = [ok(x) for x in pattern.findall(text)]
        found = [x for x in found if x]
        if found:
            return found[-1]
    if options:
        norm_opts = [normalise_text(o) for o in options]
        for cand in reversed(_candidates(text)):
            nc = normalise_text(cand)
            if nc in norm_opts:
                return chr(65 + norm_opts.index(nc))
        padded = f" {normalise_text(text)} "
        hits = [i for i, o in enumerate(norm_opts) if o and f" {o} " in padded]
        if len(hits) == 1:
            return chr(65 + hits[0])
    return None


def choice_match(prediction: object, answer_letter: object, options: Sequence[str] | None = None) -> float:
    """1.0 when the letter the reply commits to (see `extract_choice`) is ``answer_letter``, else 0.0."""
    target = parse_choice_letter(answer_letter, options)
    return 1.0 if extract_choice(prediction, options) == target else 0.0


# ----------------------------------------------------------------------------------------------- ANLS


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _anls_norm(s: str) -> str:
    return " ".join(_unicode_clean(s).casefold().split()).strip(" .,;:!?\"'")


def anls(prediction: object, answer: object | Sequence[str], threshold: float = 0.5) -> float:
    """DocVQA's ANLS: ``1 - NL`` where NL is the edit distance over the longer length, 0 when NL >= threshold.

    ``answer`` may be one string or several accepted answers (the best one counts). The reply's final-answer
    segment is scored too and the better of the two is kept; case and surrounding punctuation are ignored.
    """
    answers = [answer] if isinstance(answer, str) or not isinstance(answer, Sequence) else list(answer)
    if not answers:
        raise ValueError("anls: no ground-truth answer given")
    best = 0.0
    for cand in _candidates(prediction):
        p = _anls_norm(cand)
        for ans in answers:
            g = _anls_norm(str(ans))
            longest = max(len(p), len(g))
            if longest == 0:
                return 1.0
            nl = levenshtein(p, g) / longest
            best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


# -------------------------------------------------------------------------------------------- dispatch


def score_answer(
    prediction: object, answer: object, answer_kind: str, *, options: Sequence[str] | None = None
) -> float:
    """Score ``prediction`` against ``answer`` with the scorer of ``answer_kind`` (text -> ANLS)."""
    if answer_kind == "exact":
        return exact_match(prediction, answer)
    if answer_kind == "numeric":
        return numeric_match(prediction, answer)
    if answer_kind == "choice":
        return choice_match(prediction, answer, options)
    if answer_kind == "text":
        return anls(prediction, answer)
    raise ValueError(f"unknown answer_kind {answer_kind!r}; expected one of {', '.join(ANSWER_KINDS)}")


def is_correct(score: float | None, answer_kind: str) -> bool:
    """``correct`` column: a perfect score for exact / numeric / choice, ANLS >= 0.5 for text."""
    if answer_kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer_kind {answer_kind!r}; expected one of {', '.join(ANSWER_KINDS)}")
    if score is None or math.isnan(score):
        return False
    if answer_kind == "text":
        return score >= ANLS_CORRECT
    return score >= 1.0 - 1e-9
