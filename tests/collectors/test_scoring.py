"""Benchmark-compatible answer scorers on the tricky cases free-text model replies produce."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collectors.scoring import (
    anls,
    choice_match,
    exact_match,
    extract_choice,
    extract_number,
    final_answer_segment,
    is_correct,
    levenshtein,
    normalise_text,
    numeric_match,
    parse_choice_letter,
    score_answer,
)
from warehouse.vocabulary import ANSWER_KINDS

# ------------------------------------------------------------------------------------------ normalise


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Hello, World!", "hello world"),
        ("  The   Cat  ", "cat"),
        ("an apple a day", "apple day"),
        ("1,234,567 people", "1234567 people"),
        ("3.14", "3.14"),
        ("end.", "end"),
        ("-5 degrees", "-5 degrees"),
        ("e-mail", "e mail"),
        ("don't", "dont"),
        ("Seven", "7"),
        ("twenty two", "20 2"),
        ("ＨＥＬＬＯ １２", "hello 12"),  # full-width letters and digits
        ("Straße", "strasse"),
        ("\u201ccafé\u201d", "café"),  # curly quotes are punctuation, accents are kept
        ("**B**", "b"),
        ("", ""),
    ],
)
def test_normalise_text(raw: str, norm: str) -> None:
    assert normalise_text(raw) == norm


def test_final_answer_segment() -> None:
    assert final_answer_segment("Reading it. Therefore, the answer is harbor. It is clear.") == "harbor"
    assert final_answer_segment("Answer: B. red") == "B"
    assert final_answer_segment("The answer is 12.5.") == "12.5"
    assert final_answer_segment("no marker here") is None
    # the LAST marker wins: reasoning may mention an earlier candidate
    assert final_answer_segment("The answer is not cat. Final answer: dog") == "dog"


# ---------------------------------------------------------------------------------------------- exact


@pytest.mark.parametrize(
    ("pred", "answer", "score"),
    [
        ("harbor", "harbor", 1.0),
        ("HARBOR", "harbor", 1.0),
        ("The answer is Harbor.", "harbor", 1.0),
        ("Let me look. Therefore, the answer is harbor.", "harbor", 1.0),
        ("harbour", "harbor", 0.0),
        ("the cat", "Cat", 1.0),  # articles ignored
        ("1,250", "1250", 1.0),
        ("two", "2", 1.0),
        ("K7X-42B", "k7x 42b", 1.0),
        ("ＨＥＬＬＯ", "hello", 1.0),
        ("Yes, the triangle is on the left.", "yes", 1.0),
        ("No.", "yes", 0.0),
        ("yesterday", "yes", 0.0),
        ("-5", "5", 0.0),  # a sign is not punctuation
        ("", "harbor", 0.0),
        (None, "harbor", 0.0),
        ("harbor market", "harbor", 0.0),  # extra words are wrong for exact
    ],
)
def test_exact_match(pred: str | None, answer: str, score: float) -> None:
    assert exact_match(pred, answer) == score


# --------------------------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is 1,234.5", 1234.5),
        ("42", 42.0),
        ("The answer is -5.", -5.0),
        ("x = \u22123", -3.0),  # unicode minus
        ("45%", 45.0),
        ("It is 45 percent", 45.0),
        ("3/4", 0.75),
        ("from 2019-2020", 2020.0),  # a range, not a negative number
        ("First 3 apples, then 7 pears", 7.0),  # last number without a marker
        ("The answer is 42 (because 6 x 7)", 42.0),  # first number after the marker
        ("area 84cm\u00b2", 84.0),  # superscript 2 is not a second number
        (".5", 0.5),
        ("＄１２", 12.0),  # full-width digits
        ("seven", 7.0),
        ("A1 grade", None),  # digits glued to a word are not a number
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, value: float | None) -> None:
    got = extract_number(text)
    assert (got is None and value is None) or got == pytest.approx(value)


@pytest.mark.parametrize(
    ("pred", "answer", "score"),
    [
        ("The answer is 1,234.5", "1234.5", 1.0),
        ("1234.5", "1,234.5", 1.0),
        ("45%", "45", 1.0),
        ("45", "45%", 1.0),
        ("-5", "5", 0.0),
        ("3/4", "0.75", 1.0),
        ("101", "100", 1.0),  # exactly 1% off: inside the default tolerance
        ("99", "100", 1.0),
        ("101.5", "100", 0.0),
        ("98.9", "100", 0.0),
        ("0", "0", 1.0),
        ("0.001", "0", 0.0),  # relative tolerance of zero is zero: only abs_tol applies
        ("", "12", 0.0),
        ("I cannot read the chart.", "12", 0.0),
        ("Therefore, the answer is 17.5.", "17.5", 1.0),
    ],
)
def test_numeric_match(pred: str, answer: str, score: float) -> None:
    assert numeric_match(pred, answer) == score


def test_numeric_tolerances() -> None:
    assert numeric_match("105", "100", rel_tol=0.05) == 1.0
    assert numeric_match("105.1", "100", rel_tol=0.05) == 0.0
    assert numeric_match("0.4", "0", abs_tol=0.5) == 1.0
    with pytest.raises(ValueError, match="tolerances"):
        numeric_match("1", "1", rel_tol=-0.1)


def test_numeric_answer_without_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="'banana' contains no number"):
        numeric_match("12", "banana")


# ---------------------------------------------------------------------------------------------- choice


@pytest.mark.parametrize(
    ("pred", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("[c]", "C"),
        ("C.", "C"),
        ("B. red", "B"),
        ("(B) red", "B"),
        ("Answer: b", "B"),
        ("the answer is C because the bar is tallest", "C"),
        ("The correct option is (D).", "D"),
        ("I think it is B.", "B"),
        ("**C**", "C"),
        ("Ｂ", "B"),  # full-width letter
        ("Therefore, the answer is B.", "B"),
        ("The answer is A.", "A"),
        ("A car", None),  # an article, not option A
        ("the answer is a car", None),
        ("I am not sure", None),  # "I" is a pronoun
        ("", None),
        ("Looking at the chart carefully", None),
    ],
)
def test_extract_choice(pred: str, letter: str | None) -> None:
    assert extract_choice(pred) == letter


def test_choice_match_with_options() -> None:
    opts = ["red", "green", "blue", "pink"]
    assert choice_match("green", "B", opts) == 1.0  # option text maps to its letter
    assert choice_match("It is clearly green.", "B", opts) == 1.0
    assert choice_match("green", "B") == 0.0  # without options there is no letter
    assert choice_match("E", "A", opts) == 0.0  # letters beyond the options are ignored
    assert extract_choice("E", opts) is None
    assert choice_match("(b)", "B") == 1.0
    assert choice_match("B. red", "A") == 0.0
    assert choice_match("A car", "A") == 0.0


def test_parse_choice_letter() -> None:
    assert parse_choice_letter("(c)") == "C"
    assert parse_choice_letter("green", ["red", "green"]) == "B"
    with pytest.raises(ValueError, match="not an option letter"):
        parse_choice_letter("maybe")


# ------------------------------------------------------------------------------------------------ ANLS


def test_levenshtein() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0
    assert levenshtein("ab", "ba") == 2


def test_anls() -> None:
    assert anls("open daily until nine", "open daily until nine") == 1.0
    assert anls("Open Daily  until nine.", "open daily until nine") == 1.0  # case, spaces, final period
    assert anls("opem daily", "open daily") == pytest.approx(0.9)
    assert anls("xyz", "abc") == 0.0
    assert anls("The answer is hello world.", "hello world") == 1.0
    assert anls("", "abc") == 0.0
    assert anls("", "") == 1.0
    assert anls("helo", ["goodbye", "hello"]) == pytest.approx(0.8)  # best of several answers
    # threshold edge: NL == 0.5 scores 0, just below scores 1 - NL
    assert anls("abcd", "abxy") == 0.0
    assert anls("abcde", "abcxy") == pytest.approx(0.6)
    assert anls("abcd", "abxy", threshold=0.6) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no ground-truth"):
        anls("x", [])


# -------------------------------------------------------------------------------------------- dispatch


def test_score_answer_dispatch() -> None:
    assert score_answer("The answer is Harbor.", "harbor", "exact") == 1.0
    assert score_answer("about 1,000", "1000", "numeric") == 1.0
    assert score_answer("Answer: (c)", "C", "choice") == 1.0
    assert score_answer("helo world", "hello world", "text") == pytest.approx(1 - 1 / 11)
    assert score_answer(None, "C", "choice") == 0.0
    with pytest.raises(ValueError, match="unknown answer_kind 'fuzzy'"):
        score_answer("x", "x", "fuzzy")


def test_is_correct() -> None:
    assert is_correct(1.0, "exact") and is_correct(1.0, "numeric") and is_correct(1.0, "choice")
    assert not is_correct(0.99, "exact")
    assert is_correct(0.5, "text") and not is_correct(0.49, "text")
    assert not is_correct(None, "text") and not is_correct(math.nan, "numeric")
    with pytest.raises(ValueError, match="unknown answer_kind 'free'"):
        is_correct(1.0, "free")


def test_scores_stay_in_unit_interval() -> None:
    rng = np.random.default_rng(0)
    alphabet = list("abcAB C12.,-%()/: ") + ["é", "ß", "１"]
    answers = {"exact": "harbor", "numeric": "12.5", "choice": "B", "text": "open daily"}
    for _ in range(300):
        pred = "".join(rng.choice(alphabet, size=int(rng.integers(0, 30))))
        for kind in ANSWER_KINDS:
            s = score_answer(pred, answers[kind], kind)
            assert 0.0 <= s <= 1.0, (pred, kind, s)
