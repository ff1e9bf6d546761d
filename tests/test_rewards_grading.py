"""Hand-written grading cases: extraction, normalization, math_reward in both modes, the registry.

Each case is (completion, gold, expected reward). The expectations are what a
careful human grader says, not what any library happens to return; where
math-verify alone gets a case wrong (GSM8K-style units, trailing periods,
thin-space thousands, e-notation), `normalize.py` has a rule for it.
"""

from __future__ import annotations

import pytest

from hicra_jax import rewards
from hicra_jax.rewards import (Grade, extract_boxed, extract_gsm8k_answer, extract_tagged,
                               grade_math, math_reward, normalize_answer, parse_plain_number,
                               quick_equal)


def box(answer: str) -> str:
  """A realistic completion ending in a boxed answer."""
  return (f"Let me work through this step by step.\nFirst, we compute the value.\n"
          f"Therefore, the final answer is $\\boxed{{{answer}}}$.")


# ------------------------------------------------------------- strict cases

FRACTIONS = [
    (box("\\frac{1}{2}"), "\\frac{1}{2}", 1),
    (box("\\dfrac{1}{2}"), "\\frac12", 1),
    (box("1/2"), "\\frac{1}{2}", 1),
    (box("0.5"), "\\frac{1}{2}", 1),
    (box("\\frac{2}{4}"), "\\frac{1}{2}", 1),
    (box("\\frac{1}{3}"), "\\frac{1}{2}", 0),
    (box("-\\frac{3}{4}"), "-\\frac34", 1),
    (box("\\frac{-3}{4}"), "-\\frac{3}{4}", 1),
    (box("\\tfrac{7}{2}"), "3.5", 1),
    (box("0.333"), "\\frac{1}{3}", 0),
    (box("\\frac{11}{36}"), "\\frac{11}{36}", 1),
    (box("\\frac{13}{4}"), "3.25", 1),
    (box("\\frac{13}{4}"), "\\frac{11}{4}", 0),
]
RADICALS = [
    (box("2\\sqrt{2}"), "\\sqrt{8}", 1),
    (box("\\sqrt{2}"), "\\sqrt{3}", 0),
    (box("3\\sqrt{3}"), "\\sqrt{27}", 1),
    (box("\\frac{\\sqrt{2}}{2}"), "\\frac{1}{\\sqrt{2}}", 1),
    (box("\\sqrt[3]{8}"), "2", 1),
    (box("2+\\sqrt{3}"), "\\sqrt{3}+2", 1),
    (box("\\sqrt{2}/2"), "\\frac{\\sqrt2}{2}", 1),
    (box("1.414"), "\\sqrt{2}", 0),
    (box("2\\sqrt5"), "2 \\sqrt{5}", 1),
    (box("1+2\\sqrt{3}"), "1+2\\sqrt{3}", 1),
    (box("16\\sqrt{3}"), "16 \\sqrt{3}", 1),
    (box("\\frac{\\sqrt{3}}{2}"), "\\frac{\\sqrt3}{2}", 1),
]
INTERVALS = [
    (box("[1,2)"), "[1, 2)", 1),
    (box("(-\\infty, 3]"), "(-\\infty,3]", 1),
    (box("(-\\infty, 3)"), "(-\\infty,3]", 0),
    (box("[0,1]\\cup[2,3]"), "[0,1] \\cup [2,3]", 1),
    (box("(0, \\infty)"), "(0,\\infty)", 1),
    (box("(1, 5]"), "(1,5]", 1),
    (box("[1,5]"), "(1,5]", 0),
    (box("(2,12) \\cup (12,102)"), "(2,12) \\cup (12,102)", 1),
    (box("(2,102)"), "(2,12) \\cup (12,102)", 0),
]
TUPLES = [
    (box("(3, \\frac{\\pi}{2})"), "\\left( 3, \\frac{\\pi}{2} \\right)", 1),
    (box("(2, -1)"), "(2,-1)", 1),
    (box("(-1, 2)"), "(2,-1)", 0),
    (box("(1,2,3)"), "(1, 2, 3)", 1),
    (box("\\left(1, 2\\right)"), "(1,2)", 1),
    (box("(15,-29)"), "(15,-29)", 1),
    (box("(\\frac{1}{4}, \\frac{1}{27})"), "(\\frac{1}{4}, \\frac{1}{27})", 1),
    (box("(0.25, \\frac{1}{27})"), "(\\frac{1}{4}, \\frac{1}{27})", 1),
]
SETS = [
    (box("\\{1, 2\\}"), "\\{2, 1\\}", 1),
    (box("\\{1,2,3\\}"), "\\{1,2\\}", 0),
    (box("1, 2"), "2, 1", 1),
    (box("-2, 1"), "-2,1", 1),
    (box("1, -2"), "-2,1", 1),
    (box("-2"), "-2,1", 0),
]
UNITS = [
    (box("10 \\text{ cm}"), "10", 1),
    (box("18 \\text{ dollars}"), "18", 1),
    (box("\\$18"), "18", 1),
    (box("\\$18.00"), "18", 1),
    (box("18 dollars"), "18", 1),
    (box("\\text{18 dollars}"), "18", 1),
    (box("5 apples"), "5", 1),
    (box("6 \\text{ apples}"), "5", 0),
    (box("90^\\circ"), "90", 1),
    (box("76^{\\circ}"), "76^\\circ", 1),
    (box("3 \\mathrm{~m}"), "3", 1),
    (box("12 \\text{ hours}"), "12", 1),
    (box("1.6 \\mathrm{~cm}"), "1.6", 1),
    (box("1.7 \\text{ cm}"), "1.6", 0),
    (box("4xy"), "4", 0),
]
GSM8K_NUMBERS = [
    (box("1,234"), "1234", 1),
    (box("1{,}234"), "1234", 1),
    (box("\\$1,234.50"), "1234.5", 1),
    (box("1\\,000"), "1000", 1),
    (box("1 000"), "1000", 1),
    (box("18."), "18", 1),
    (box("018"), "18", 1),
    (box("18.0"), "18", 1),
    (box("17"), "18", 0),
    (box("1,000,000"), "1000000", 1),
    (box("1000000"), "1,000,000", 1),
    (box("27648"), "27648", 1),
    (box("27,648"), "27648", 1),
    (box("2764"), "27648", 0),
    ("Janet makes 9 * 2 = $18 every day.\n\\boxed{\\$18}", "18", 1),
    (box("10080"), "10,\\!080", 1),  # MATH's thousands separator in the gold
    (box("11111111100"), "11,\\! 111,\\! 111,\\! 100", 1),
    (box("32,348"), "\\$32,\\!348", 1),
    (box("32,349"), "\\$32,\\!348", 0),
]
PERCENT = [
    (box("50\\%"), "50", 1),
    (box("50\\%"), "50\\%", 1),
    (box("50%"), "0.5", 1),
    (box("25\\%"), "50", 0),
    (box("12.5\\%"), "12.5", 1),
    (box("50 \\text{ percent}"), "50", 1),
]
NEGATIVES = [
    (box("-3"), "-3", 1),
    (box("-3"), "3", 0),
    (box("\u22123"), "-3", 1),
    (box("-0.5"), "-\\frac{1}{2}", 1),
    (box("- 3"), "-3", 1),
    (box("-7"), "-7", 1),
]
SCIENTIFIC = [
    (box("1.5 \\times 10^{3}"), "1500", 1),
    (box("1.5e3"), "1500", 1),
    (box("6.02 \\times 10^{23}"), "6.02\\times10^{23}", 1),
    (box("3 \\times 10^{-2}"), "0.03", 1),
    (box("2.5E-3"), "0.0025", 1),
    (box("1.5 \\times 10^{4}"), "1500", 0),
    (box("10^{10}"), "10000000000", 1),
    (box("2 \\times 10^{27}"), "2e27", 1),
    (box("3.21 \\times 10^{13}"), "3.21e13", 1),
    (box("3.2 \\times 10^{13}"), "3.21e13", 0),
]
MULTIPLE_BOXES = [
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", 1),
    ("First \\boxed{4}, then corrected: \\boxed{3}", "4", 0),
    ("\\boxed{4} and finally \\fbox{5}", "5", 1),
    ("\\fbox{5} and finally \\boxed{4}", "5", 0),
    ("\\boxed{\\boxed{7}}", "7", 1),
    ("$\\boxed{1}$ or maybe $\\boxed{2}$ ... no: $\\boxed{1}$", "1", 1),
]
NO_BOX = [
    ("The answer is 18.", "18", 0),
    ("", "18", 0),
    ("#### 18", "18", 0),
    ("\\boxed{}", "18", 0),
    ("The answer is **18**", "18", 0),
    ("I think it is 18 (boxed would be 18)", "18", 0),
]
MALFORMED = [
    ("\\boxed{18", "18", 0),
    ("\\boxed{\\frac{1}{2}", "\\frac12", 0),
    ("\\boxed{18} and then \\boxed{18", "18", 0),
    (box("\\sqrt{"), "2", 0),
    ("\\boxed 5", "5", 1),
    ("so the answer is \\boxed 18.", "18", 1),
    (box("2^"), "2", 0),
    (box("\\frac{}{}"), "1", 0),
    (box("1/0"), "1", 0),
    (box("}{"), "1", 0),
    ("\\boxed{\\frac{1}{2}}}}", "\\frac{1}{2}", 1),
    ("\\boxedx{5}", "5", 0),
    (box("\\left( 1, 2"), "(1,2)", 0),
]
TEXT_ANSWERS = [
    (box("\\text{Monday}"), "\\text{Monday}", 1),
    (box("Monday"), "\\text{Monday}", 1),
    (box("\\text{Tuesday}"), "\\text{Monday}", 0),
    (box("\\text{(B)}"), "B", 1),
    (box("\\textbf{(C)}"), "\\text{(C)}", 1),
    (box("C"), "B", 0),
    (box("\\text{even}"), "\\text{even}", 1),
    (box("\\text{odd}"), "\\text{even}", 0),
    (box("\\text{Evelyn}"), "\\text{Evelyn}", 1),
    (box("2516_8"), "2516_8", 1),
]
EXPRESSIONS = [
    (box("x^2+2x+1"), "(x+1)^2", 1),
    (box("2x+1"), "1+2x", 1),
    (box("y = 2x + 1"), "2x+1", 1),
    (box("x = 3"), "3", 1),
    (box("3"), "x=3", 1),
    (box("1"), "k=1", 1),
    (box("\\pi"), "\\pi", 1),
    (box("2\\pi"), "6.28", 0),
    (box("\\frac{\\pi}{2}"), "\\frac{\\pi}{2}", 1),
    (box("\\infty"), "\\infty", 1),
    (box("6+9i"), "6+9i", 1),
    (box("9i+6"), "6+9i", 1),
    (box("1-2i"), "1+2i", 0),
    (box("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}"),
     "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", 1),
    (box("\\begin{pmatrix} 1 & 0 \\\\ 0 & -1 \\end{pmatrix}"),
     "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", 0),
    (box("2^{k}"), "2^{k}", 1),
    (box("2^{k+1}"), "2^{k}", 0),
    (box("\\frac{1}{2n+2}"), "\\frac{1}{2 n+2}", 1),
    (box("p-q"), "p - q", 1),
    (box("q-p"), "p - q", 0),
]
STRICT_CASES = (FRACTIONS + RADICALS + INTERVALS + TUPLES + SETS + UNITS + GSM8K_NUMBERS + PERCENT
                + NEGATIVES + SCIENTIFIC + MULTIPLE_BOXES + NO_BOX + MALFORMED + TEXT_ANSWERS
                + EXPRESSIONS)

VERIFY_CASES = [
    ("The answer is 18.", "18", 1),
    ("The answer is 17.", "18", 0),
    ("Therefore, the final answer is $\\frac{3}{4}$.", "0.75", 1),
    ("So we get $x = 5$.", "5", 1),
    ("blah blah", "18", 0),
    ("", "18", 0),
    ("First \\boxed{3}, then \\boxed{4}", "4", 1),
    ("Final answer: \\(2\\sqrt{2}\\)", "\\sqrt{8}", 1),
]

GSM8K_REWARD_CASES = [
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", 1),
    ("#### 1,080", "1080", 1),
    ("The answer is $1,080.", "1080", 1),
    ("so she makes 18 dollars every day.", "18", 1),
    ("so she makes 18 dollars every day, 126 a week.", "18", 0),
    ("\\boxed{18} (and 20 more words with 7)", "18", 1),
    ("no numbers here", "18", 0),
    ("The answer is: 72", 72, 1),
]


def test_case_count():
  assert len(STRICT_CASES) + len(VERIFY_CASES) + len(GSM8K_REWARD_CASES) >= 100


@pytest.mark.parametrize("completion,gold,expected", STRICT_CASES)
def test_strict(completion, gold, expected):
  grade = grade_math(completion, gold, mode="strict")
  assert grade.reward == expected, grade
  # Ordinary answers never time out or error; a wrong one is "incorrect" or "no_answer".
  assert grade.status == "correct" if expected else grade.status in ("incorrect", "no_answer")


@pytest.mark.parametrize("completion,gold,expected", VERIFY_CASES)
def test_verify(completion, gold, expected):
  assert math_reward(completion, gold, mode="verify") == expected


@pytest.mark.parametrize("completion,gold,expected", GSM8K_REWARD_CASES)
def test_gsm8k_reward(completion, gold, expected):
  assert rewards.get_reward("gsm8k")(completion, {"answer": gold}) == expected


def test_strict_needs_a_box_but_verify_does_not():
  text = "Adding up, the total is 42."
  assert math_reward(text, "42", mode="strict") == 0.0
  assert math_reward(text, "42", mode="verify") == 1.0


def test_reasons():
  assert grade_math("no box", "1").status == "no_answer"
  assert grade_math("\\boxed{}", "1").status == "no_answer"
  assert grade_math(box("2"), "1") == Grade(0.0, "incorrect", "2")
  assert grade_math(box("1"), "1") == Grade(1.0, "correct", "1")
  assert grade_math(box("1"), None).status == "error"
  assert grade_math(None, "1").status == "error"
  assert grade_math(box("1"), 1).reward == 1.0  # int gold from JSON
  assert grade_math(box("27"), 27.0).reward == 1.0
  with pytest.raises(ValueError, match="mode"):
    math_reward(box("1"), "1", mode="lenient")


# --------------------------------------------------------------- extraction


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{5}", "5"),
    ("\\boxed{ 5 }", "5"),
    ("\\boxed {5}", "5"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{a\\}b}", "a\\}b"),
    ("\\boxed{1} \\boxed{2}", "2"),
    ("\\fbox{3}", "3"),
    ("\\boxed{1} \\fbox{3}", "3"),
    ("\\boxed 7", "7"),
    ("\\boxed 7.", "7"),
    ("\\boxed{}", ""),
    ("no box", None),
    ("\\boxed{5", None),
    ("\\boxed", None),
    ("\\boxed\n5", None),
    ("\\boxedx{5}", None),
    ("\\boxed{1} then \\boxed{", None),
    ("", None),
])
def test_extract_boxed(text, expected):
  assert extract_boxed(text) == expected


def test_extract_boxed_limits():
  assert extract_boxed("\\boxed{" + "1" * 3000 + "}") is None
  assert extract_boxed("\\boxed{" + "1" * 3000 + "}", max_chars=4000) == "1" * 3000
  assert extract_boxed("x" * 1_000_000 + "\\boxed{9}") == "9"
  assert extract_boxed(None) is None  # type: ignore[arg-type]


def test_extract_tagged_and_gsm8k():
  assert extract_tagged("<answer> 42 </answer>") == "42"
  assert extract_tagged("<answer>1</answer> <answer>2</answer>") == "2"
  assert extract_tagged("<answer>1") is None
  with pytest.raises(ValueError):
    extract_tagged("x", tag="a b")
  assert extract_gsm8k_answer("#### 1,234") == "1,234"
  assert extract_gsm8k_answer("the answer is $5.50.") == "$5.50"
  assert extract_gsm8k_answer("3 then 4") == "4"
  assert extract_gsm8k_answer("\\boxed{x} 4") == "x"
  assert extract_gsm8k_answer("none") is None


# ------------------------------------------------------------ normalization


@pytest.mark.parametrize("raw,expected", [
    ("18 dollars", "18"),
    ("\\text{18 dollars}", "18"),
    ("\\$1,234.50", "1234.50"),
    ("$18$", "18"),
    ("18.", "18"),
    ("1\\,000", "1000"),
    ("1{,}000", "1000"),
    ("1 000", "1000"),
    ("\u22125", "-5"),
    ("\\dfrac12", "\\frac12"),
    ("1.5e3", "1.5\\times10^{3}"),
    ("2 \\cdot 10^{27}", "2\\times10^{27}"),
    ("10\\text{ cm}", "10"),
    ("4xy", "4xy"),
    ("2 pi", "2 pi"),
    ("3 and 4", "3 and 4"),
    ("1, 2, 3, ...", "1, 2, 3, ..."),
    ("\\text{Monday}", "Monday"),
    ("", ""),
])
def test_normalize_answer(raw, expected):
  assert normalize_answer(raw) == expected


def test_quick_equal_is_exact_and_cautious():
  assert quick_equal("1e999999999", "1e999999999") is True  # compared, never expanded
  assert quick_equal("1e999999999", "1") is None
  assert quick_equal("18", "17") is False
  assert quick_equal("18.5", "18") is None  # math-verify rounds non-integers
  assert quick_equal("50\\%", "0.5") is True  # percent on one side: both readings count
  assert quick_equal("12.5\\%", "12.5") is True
  assert quick_equal("50\\%", "0.4") is None
  assert quick_equal("\\frac12", "0.5") is None
  assert quick_equal("", "1") is None
  assert parse_plain_number("1.5\\times10^{3}").value == 1500
  assert parse_plain_number("x") is None


def test_extract_all_boxed_reads_every_box_in_order():
  text = "\\boxed{1} then \\fbox{\\frac{1}{2}}, a broken \\boxed{3 and \\boxed 4."
  assert rewards.extract.extract_all_boxed(text) == ["1", "\\frac{1}{2}", "4"]
  assert rewards.extract.extract_all_boxed("no box") == []
  assert rewards.extract.extract_all_boxed(None) == []


@pytest.mark.parametrize("completion,gold,verify,strict", [
    # A pair given as two boxes: the last box alone (n = 2) is not the answer.
    ("So \\boxed{k = 45} and \\boxed{n = 2}.", "(45, 2)", 1.0, 0.0),
    # A set of solutions, one box each.
    ("The solutions are $x = 2$ or $x = 3$: \\boxed{2} and \\boxed{3}.", "2, 3", 1.0, 0.0),
    # The last box alone still counts when it is the answer.
    ("\\boxed{3} is wrong; the answer is \\boxed{5}.", "5", 1.0, 1.0),
    # Two wrong parts stay wrong.
    ("\\boxed{k = 44} and \\boxed{n = 2}", "(45, 2)", 0.0, 0.0),
])
def test_verify_reads_an_answer_given_in_several_boxes(completion, gold, verify, strict):
  assert grade_math(completion, gold, mode="verify").reward == verify
  assert grade_math(completion, gold, mode="strict").reward == strict  # the paper's: last box


def test_only_the_final_boxes_are_joined():
  # An intermediate result boxed long before the final answer is not part of it.
  completion = "First \\boxed{3}." + " Then we continue." * 40 + " Finally \\boxed{5}."
  assert grade_math(completion, "3, 5", mode="verify").reward == 0.0
  assert grade_math(completion, "5", mode="verify").reward == 1.0
