"""Tests for the GSM8K numeric grader: real model-style outputs, each with a reason to audit."""

import random
import time

import pytest

from failtune.grading import Grade
from failtune.grading.numeric import extract_number, grade_numeric

JANET = (
    "Janet's ducks lay 16 eggs per day.\n"
    "She eats 3 for breakfast and uses 4 for muffins, so she uses 3 + 4 = 7 eggs.\n"
    "That leaves 16 - 7 = 9 eggs to sell.\n"
    "She sells each egg for $2, so she makes 9 * 2 = $18 every day.\n"
)

# (completion, gold, finish_reason, correct, reason, extracted)
GRADE_CASES = [
    pytest.param(
        "Answer: Janet makes $18 a day. Let me know if you have 2 more questions.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="bare-answer-then-chatty-number",
    ),
    # --- explicit markers -------------------------------------------------------------------
    pytest.param(
        JANET + "The answer is 18.", "18", "stop", True, "correct", "18", id="answer-is-plain"
    ),
    pytest.param(JANET + "#### 18", "18", None, True, "correct", "18", id="gsm8k-hash-marker"),
    pytest.param(
        JANET + "\n**Final Answer:** $18", "18", "stop", True, "correct", "18", id="md-bold-final"
    ),
    pytest.param(
        JANET + "\n**Answer:** 18 dollars", "18", "stop", True, "correct", "18", id="md-bold-answer"
    ),
    pytest.param(
        JANET + "Final answer: 18", "18", "stop", True, "correct", "18", id="final-answer-colon"
    ),
    pytest.param(
        JANET + "Therefore, the final answer is $\\boxed{18}$. I hope it is correct.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="minerva-boxed",
    ),
    pytest.param(
        "Let's compute step by step.\n16 - 3 - 4 = 9 eggs remain.\n"
        "Revenue: $9 \\times 2 = 18$.\n\n\\[\n\\boxed{\\$18}\n\\]",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="boxed-escaped-dollar",
    ),
    pytest.param(
        "Each basket holds 6 apples and there are 3 baskets.\nTotal: \\boxed{18\\text{ apples}}",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="boxed-with-text-unit",
    ),
    pytest.param(
        "So the total is \\fbox{42} marbles.", "42", "stop", True, "correct", "42", id="fbox"
    ),
    pytest.param(
        "She has 16 eggs and uses 7.\nThe answer is 16 - 3 - 4 = 9 eggs.",
        "9",
        "stop",
        True,
        "correct",
        "9",
        id="marker-then-equation",
    ),
    pytest.param(
        "First, 16 - 3 - 4 = 9 eggs are left.\nThen 9 x 2 = 18.\n"
        "The answer is: Janet makes $18 per day at the farmers' market.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="words-between-marker-and-number",
    ),
    pytest.param(
        "A robe takes 2 bolts of blue fiber and 2 / 2 = 1 bolt of white fiber.\n"
        "So it takes 2 + 1 = 3 bolts.\nanswer is: 3",
        "3",
        "stop",
        True,
        "correct",
        "3",
        id="answer-is-colon-lowercase",
    ),
    pytest.param(
        "THE ANSWER IS 540.", "540", "stop", True, "correct", "540", id="marker-uppercase"
    ),
    pytest.param(
        "James runs 3 sprints 3 times a week, each 60 meters.\n"
        "That is 3 * 3 = 9 sprints, and 9 * 60 = 540 meters.\n\n## Final Answer\n\n**540**",
        "540",
        "stop",
        True,
        "correct",
        "540",
        id="heading-then-next-line",
    ),
    pytest.param(
        "Wendi feeds each chicken 3 cups a day, 20 chickens, so 60 cups in total.\n"
        "She already gave 15 + 25 = 40 cups.\nFinal Answer:\n\n20",
        "20",
        "stop",
        True,
        "correct",
        "20",
        id="final-answer-colon-next-line",
    ),
    # --- numbers after the final answer do not count -----------------------------------------
    pytest.param(
        JANET + "The answer is 18. Note: if she sold 2 more she'd make 22.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="note-after-marker-same-line",
    ),
    pytest.param(
        JANET + "Final answer: 18\n\nI hope this helps! Let me know if you have 2 more questions.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="chatty-ending-after-marker",
    ),
    pytest.param(
        JANET + "The answer is 18.\n\nTo double-check: 9 eggs at $2 each is 9 * 2 = 18, and "
        "a week would be 7 * 18 = 126.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="verification-after-marker",
    ),
    pytest.param(
        "The answer is 18, 20 if you count the extra eggs.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="list-after-marker-takes-first",
    ),
    # --- self-corrections --------------------------------------------------------------------
    pytest.param(
        "3 + 2 = 5, so the answer is 5. Wait, I forgot the 2 apples from Tom: 5 + 2 = 7.\n"
        "The answer is 7.",
        "7",
        "stop",
        True,
        "correct",
        "7",
        id="self-correction-last-marker",
    ),
    pytest.param(
        "The answer is 12.\n\nHmm, let me re-read the question. She bakes with 4, not 3.\n"
        "16 - 3 - 4 = 9, 9 * 2 = 18.\n\nFinal Answer: 18",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="self-correction-different-markers",
    ),
    pytest.param(
        "The answer is 18.\n\nLet me verify: 9 * 2 = 18. Yes, the answer is correct.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="later-marker-without-number-ignored",
    ),
    pytest.param(
        JANET + "The answer is 9.\nWait, that is the number of eggs, not dollars. "
        "The answer is $18.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="self-correction-same-line",
    ),
    # --- a bare "Answer:" that labels a whole worked solution is not a final-answer marker ---
    pytest.param(
        "Answer: Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer's market.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="answer-label-few-shot",
    ),
    pytest.param(
        "**Answer:**\n\nJanet's ducks lay 16 eggs per day. She eats 3 and bakes with 4.\n"
        "So 16 - 3 - 4 = 9 eggs are sold at $2 each: 9 * 2 = $18.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="answer-label-bold-heading",
    ),
    pytest.param(
        "Answer: Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
        "72",
        "stop",
        True,
        "correct",
        "72",
        id="answer-label-then-hash",
    ),
    pytest.param(
        "Answer: 18\n\nLet me know if you have 2 more questions!",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="short-answer-then-chatty",
    ),
    pytest.param(
        "Answer: Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 =",
        "18",
        "length",
        False,
        "truncated",
        None,
        id="answer-label-truncated",
    ),
    # --- hallucinated follow-up turns --------------------------------------------------------
    pytest.param(
        JANET + "The answer is 18.\n\nQuestion: Tom has 4 apples and eats 1. How many are left?\n"
        "Answer: Tom has 4 - 1 = 3 apples. The answer is 3.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="followup-question",
    ),
    pytest.param(
        JANET + "#### 18\n\nQ: A farmer has 5 cows. How many legs?\nA: 5 * 4 = 20. #### 20",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="followup-q-colon",
    ),
    pytest.param(
        "9 * 2 = 18 dollars per day.\nHuman: Thanks! What about 7 days?\nAssistant: 18 * 7 = 126",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="followup-human-no-marker",
    ),
    pytest.param(
        "She makes 18 dollars.<|im_end|>\n<|im_start|>user\nAnd in 3 days?<|im_end|>",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="followup-chat-tokens",
    ),
    pytest.param(
        "The answer is 64.\n\n### Instruction:\nSolve: 2 + 2\n\n### Response:\nThe answer is 4.",
        "64",
        "stop",
        True,
        "correct",
        "64",
        id="followup-instruction",
    ),
    pytest.param(
        "Problem: Kylar buys 16 glasses; every second one costs 60% of $5.\n"
        "8 glasses cost $5 and 8 cost $3, so 8 * 5 + 8 * 3 = 40 + 24 = 64.\n"
        "The answer is 64.\n\nProblem: A new one. The answer is 7.",
        "64",
        "stop",
        True,
        "correct",
        "64",
        id="leading-problem-kept-later-cut",
    ),
    pytest.param(
        "Question: Janet's ducks lay 16 eggs...\nLet's think step by step.\n"
        + JANET
        + "The answer is 18.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="leading-question-restated",
    ),
    # --- no marker: last number ----------------------------------------------------------------
    pytest.param(JANET, "18", "stop", True, "correct", "18", id="fallback-last-number"),
    pytest.param(
        JANET + "\nNote: this assumes she sells every egg; if she sold 2 more she'd make 22.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="fallback-cuts-trailing-note",
    ),
    pytest.param(
        JANET + "\n**Notes:**\n- Prices may vary, e.g. $3 per egg.\n",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="fallback-cuts-bold-notes",
    ),
    pytest.param(
        "Toulouse has 2 * 20 = 40 sheep... wait, Charleston has 4 * 20 = 80 sheep.\n"
        "Note that Toulouse has twice as many: 2 * 80 = 160.\n"
        "Together: 160 + 80 + 20 = 260 sheep.",
        "260",
        "stop",
        True,
        "correct",
        "260",
        id="fallback-note-mid-solution-kept",
    ),
    pytest.param(
        "She makes **$18** every day.", "18", "stop", True, "correct", "18", id="fallback-bold"
    ),
    pytest.param(
        JANET.replace("$18", "$17"),
        "18",
        "stop",
        False,
        "wrong_answer",
        "17",
        id="fallback-wrong",
    ),
    # --- wrong answers -------------------------------------------------------------------------
    pytest.param(
        "16 - 3 = 13, 13 * 2 = 26.\nThe answer is 26.",
        "18",
        "stop",
        False,
        "wrong_answer",
        "26",
        id="wrong-with-marker",
    ),
    pytest.param(
        "The answer is 1,000,001.",
        "1,000,000",
        "stop",
        False,
        "wrong_answer",
        "1000001",
        id="no-tolerance-for-integers",
    ),
    pytest.param(
        "The answer is 0.33.",
        "1/3",
        "stop",
        False,
        "wrong_answer",
        "0.33",
        id="rounded-fraction-is-wrong",
    ),
    # --- truncation ----------------------------------------------------------------------------
    pytest.param(
        "Janet's ducks lay 16 eggs. She eats 3 and bakes with 4: 16 - 3 - 4 = 9.\n"
        "She sells them for $2 each: 9 * 2 = 18",
        "18",
        "length",
        False,
        "truncated",
        None,
        id="truncated-last-number-equals-gold",
    ),
    pytest.param(
        "Let me think about this carefully. First we need to figure out how many",
        "18",
        "length",
        False,
        "truncated",
        None,
        id="truncated-no-number",
    ),
    pytest.param(
        JANET + "The answer is 18.\n\nLet me double check this by computing the weekly total: 7 *",
        "18",
        "length",
        True,
        "correct",
        "18",
        id="truncated-after-marker-graded",
    ),
    pytest.param(
        "16 - 3 - 4 = 9. The answer is 9.\nWait, dollars: 9 * 2 = 18. So the answer is",
        "18",
        "length",
        False,
        "wrong_answer",
        "9",
        id="truncated-mid-correction-uses-marker",
    ),
    pytest.param(
        JANET + "The answer is 18.", "18", "stop", True, "correct", "18", id="stop-is-not-truncated"
    ),
    # --- no answer -----------------------------------------------------------------------------
    pytest.param(
        "I cannot solve this problem.", "18", "stop", False, "no_answer", None, id="refusal"
    ),
    pytest.param(
        "I'm sorry, but I can't help with that request.",
        "18",
        "stop",
        False,
        "no_answer",
        None,
        id="refusal-apology",
    ),
    pytest.param("", "18", "stop", False, "no_answer", None, id="empty"),
    pytest.param(
        "The answer is unknown because the question is ambiguous.",
        "18",
        None,
        False,
        "no_answer",
        None,
        id="marker-without-number",
    ),
    # --- spelled-out answers -------------------------------------------------------------------
    pytest.param(
        "She has nine eggs left and sells them at two dollars each.\nThe answer is eighteen.",
        "18",
        "stop",
        True,
        "correct",
        "18",
        id="words-eighteen",
    ),
    pytest.param(
        "The answer is twenty-five", "25", "stop", True, "correct", "25", id="words-hyphenated"
    ),
    pytest.param(
        "Final answer: one hundred and twenty cupcakes",
        "120",
        "stop",
        True,
        "correct",
        "120",
        id="words-hundred-and",
    ),
    pytest.param(
        "The answer is seventy thousand dollars.",
        70000,
        "stop",
        True,
        "correct",
        "70000",
        id="words-thousand-int-gold",
    ),
    # --- negative and decimal answers -----------------------------------------------------------
    pytest.param(
        "The temperature drops from 5 to 2, then falls 6 more: 2 - 6 = -4.\nThe answer is −4.",
        "-4",
        "stop",
        True,
        "correct",
        "-4",
        id="unicode-minus",
    ),
    pytest.param(
        "The balance is $12 - $15 = -$3.",
        "-3",
        "stop",
        True,
        "correct",
        "-3",
        id="negative-dollars",
    ),
    pytest.param(
        "Each friend gets 5 / 2 = 2.5 pizzas.\n#### 2.5",
        "2.5",
        "stop",
        True,
        "correct",
        "2.5",
        id="decimal",
    ),
    pytest.param(
        "The answer is 2.50", "5/2", "stop", True, "correct", "2.5", id="decimal-vs-fraction-gold"
    ),
    pytest.param(
        "The answer is $\\frac{5}{2}$.", "2.5", "stop", True, "correct", "2.5", id="latex-frac"
    ),
    pytest.param(
        "She drinks 3/4 of the bottle.\nThe answer is \\dfrac{3}{4}",
        "0.75",
        "stop",
        True,
        "correct",
        "0.75",
        id="latex-dfrac",
    ),
    pytest.param(
        "Each slice costs .5 dollars, i.e. $.50.", 0.5, None, True, "correct", "0.5", id="dot-five"
    ),
    pytest.param(
        "The recipe needs 2 1/2 cups.\nFinal answer: 2 1/2",
        "2.5",
        "stop",
        True,
        "correct",
        "2.5",
        id="mixed-number",
    ),
    pytest.param(
        "The discount is 25%.\nThe answer is 25%.", "25", "stop", True, "correct", "25", id="pct"
    ),
    # --- thousands and money ---------------------------------------------------------------------
    pytest.param(
        "The answer is 1,080.", "1,080", "stop", True, "correct", "1080", id="gold-with-comma"
    ),
    pytest.param(
        "He spent 80,000 + 50,000 = 130,000 and sold for 200,000.\n"
        "Profit: 200,000 - 130,000 = $70,000.00\n#### 70,000",
        70000,
        "stop",
        True,
        "correct",
        "70000",
        id="thousands-int-gold",
    ),
    pytest.param(
        "The answer is $1{,}080$.", "1080", "stop", True, "correct", "1080", id="latex-comma"
    ),
    pytest.param(
        "Total cost: \\$1,000.00", "1000", "stop", True, "correct", "1000", id="money-with-cents"
    ),
    pytest.param(
        "The answer is \\( 18 \\)", "18", "stop", True, "correct", "18", id="latex-inline-parens"
    ),
    pytest.param(
        "Carla downloads 200 * 0.4 = 80 GB, restarts, then downloads 200 GB.\n"
        "Time: 80 / 2 = 40 + 20 + 200 / 2 = 100, so 40 + 20 + 100 = 160 minutes.\n"
        "The answer is 160 minutes.",
        "160",
        "stop",
        True,
        "correct",
        "160",
        id="units-after-number",
    ),
    pytest.param(
        "She finished in 3rd place.", "3", None, True, "correct", "3", id="ordinal-glued-letters"
    ),
    # --- found by the human-labelled audit (tests/data/gsm8k_human_labels.jsonl) --------------
    pytest.param(
        "It is 8 years old.\n[INST] And in 3 years? [/INST] 11",
        "8",
        None,
        True,
        "correct",
        "8",
        id="followup-mistral-inst",
    ),
    pytest.param(
        "It is 8 years old.\n<|user|>\nAnd in 3 years?\n<|assistant|>\n11",
        "8",
        None,
        True,
        "correct",
        "8",
        id="followup-phi3-user",
    ),
    pytest.param(
        "每个 5 美元，共 75 美元。\n答案是 75 美元。\n如果你还有其他 2 个问题，欢迎继续提问！",
        "75",
        None,
        True,
        "correct",
        "75",
        id="marker-chinese",
    ),
    pytest.param(
        "Die Antwort ist 460 Dollar. Bei 50 Stunden wären es 520 Dollar.",
        "460",
        None,
        True,
        "correct",
        "460",
        id="marker-german",
    ),
    pytest.param(
        "The answer is $1.45 million.", "1,450,000", None, True, "correct", "1450000", id="million"
    ),
    pytest.param(
        "There is 32 - 28 = $4 million left.",
        "4",
        None,
        True,
        "correct",
        "4000000",
        id="gold-in-millions",
    ),
    pytest.param(
        "The average is 10 degrees below zero.",
        "-10",
        None,
        True,
        "correct",
        "-10",
        id="below-zero",
    ),
    pytest.param(
        "The answer is either 12 or 13.",
        "12",
        None,
        False,
        "no_answer",
        None,
        id="either-or-marker",
    ),
    pytest.param(
        "The answer is between 40 and 50 miles.", "40", None, False, "no_answer", None, id="between"
    ),
    pytest.param(
        "The answer is 0.6 or 60%.", "0.6", None, True, "correct", "0.6", id="or-same-in-percent"
    ),
    pytest.param(
        "So Janet makes either $18 or $26 per day.",
        "18",
        None,
        False,
        "no_answer",
        None,
        id="either-unmarked",
    ),
    pytest.param(
        "Janet makes $18 a day.\n\nI hope this helps! Let me know if you have 2 more questions.",
        "18",
        None,
        True,
        "correct",
        "18",
        id="fallback-cuts-sign-off",
    ),
    pytest.param(
        "Answer: Janet makes $18 per day.\n\nExplanation:\n1. Eggs used: 3 + 4 = 7\n"
        "2. Eggs sold: 16 - 7 = 9, at $2 each.",
        "18",
        None,
        True,
        "correct",
        "18",
        id="answer-sentence-then-explanation",
    ),
    pytest.param(
        "The answer is 16.\n\nWait, I made a mistake: 16 - 3 - 4 = 9 eggs, so she makes $18.",
        "18",
        None,
        True,
        "correct",
        "18",
        id="correction-after-marker",
    ),
    pytest.param(
        "The answer is 243.\n\nActually, I think it asks for one set, so she spent $81.",
        "243",
        None,
        False,
        "wrong_answer",
        "81",
        id="retraction-after-marker",
    ),
    pytest.param(
        "The answer is 20.\n\nWait, let me double-check: 60 - 40 = 20 cups, and 15 + 25 = 40. Yes.",
        "20",
        None,
        True,
        "correct",
        "20",
        id="verification-is-not-correction",
    ),
    pytest.param(
        "So Jim spends 36 hours on TV and reading in 4 weeks.",
        "36",
        None,
        True,
        "correct",
        "36",
        id="fallback-skips-restated-span",
    ),
    pytest.param(
        "So John is 45 miles from home at the end of those 4 hours.",
        "45",
        None,
        True,
        "correct",
        "45",
        id="fallback-skips-restated-of-those",
    ),
    pytest.param(
        "So Gerald can now run the 400-meter hurdles in 36 seconds (40 - 4).",
        "36",
        None,
        True,
        "correct",
        "36",
        id="fallback-parens-and-compound",
    ),
    pytest.param(
        "In total, it takes 40 + 20 + 100 = 160 minutes, or 2 hours and 40 minutes.",
        "160",
        None,
        True,
        "correct",
        "160",
        id="fallback-comma-or-restatement",
    ),
    pytest.param(
        "It will be 8 centimeters shorter after burning from 1:00 PM to 5:00 PM.",
        "8",
        None,
        True,
        "correct",
        "8",
        id="fallback-clock-times",
    ),
    pytest.param(
        "She makes $18 every day, since she sells 9 eggs at $2 each.",
        "18",
        None,
        True,
        "correct",
        "18",
        id="fallback-justifying-clause",
    ),
    pytest.param(
        "Artie makes $88 from 12 marigolds, 9 petunias and 17 begonias.",
        "88",
        None,
        True,
        "correct",
        "88",
        id="fallback-restated-list",
    ),
    pytest.param(
        "The alarm rang 22 times in all: 4 + 12 + 6.",
        "22",
        None,
        True,
        "correct",
        "22",
        id="fallback-unevaluated-sum",
    ),
    pytest.param(
        "It takes 120 / 24 = 5 hours to read 120 pages.",
        "5",
        None,
        True,
        "correct",
        "5",
        id="fallback-purpose-after-result",
    ),
    pytest.param(
        "As 80 / 2 = 40 and 40 + 80 = 120, we confirm that 80 is the answer",
        "80",
        None,
        True,
        "correct",
        "80",
        id="fallback-named-answer",
    ),
    pytest.param(
        "The robe needs 2 bolts of blue fiber and one of white, so three bolts in total.",
        "3",
        None,
        True,
        "correct",
        "3",
        id="fallback-spelled-final",
    ),
    pytest.param(
        "Lucas will be 5 + 3 = 8 years old three years from now.",
        "8",
        None,
        True,
        "correct",
        "8",
        id="fallback-spelled-restatement-ignored",
    ),
    pytest.param(
        "There are 160 + 32 = 192 cows after Mr. Sylas adds four to each stall.",
        "192",
        None,
        True,
        "correct",
        "192",
        id="fallback-mr-is-not-a-sentence-end",
    ),
]


@pytest.mark.parametrize(
    ("completion", "expected", "finish_reason", "correct", "reason", "extracted"), GRADE_CASES
)
def test_grade_numeric(
    completion: str,
    expected: str | float | int,
    finish_reason: str | None,
    correct: bool,
    reason: str,
    extracted: str | None,
) -> None:
    """Each realistic output gets the verdict, reason and reading a careful human would give."""
    grade = grade_numeric(completion, expected, finish_reason)
    assert grade == Grade(correct=correct, extracted=extracted, reason=reason)


@pytest.mark.parametrize(
    ("text", "number", "via_marker"),
    [
        pytest.param("$18", "18", False, id="dollar"),
        pytest.param("\\$18", "18", False, id="escaped-dollar"),
        pytest.param("18.00", "18", False, id="trailing-zeros"),
        pytest.param("18.0", "18", False, id="point-zero"),
        pytest.param("**18**", "18", False, id="bold"),
        pytest.param("18%", "18", False, id="percent"),
        pytest.param("1,000", "1000", False, id="thousands"),
        pytest.param("1{,}000", "1000", False, id="latex-thousands"),
        pytest.param("1\\,000", "1000", False, id="latex-thin-space"),
        pytest.param("$1,000.00", "1000", False, id="money"),
        pytest.param("18 dollars", "18", False, id="unit-word"),
        pytest.param("\\boxed{18}", "18", True, id="boxed"),
        pytest.param("$18$", "18", False, id="math-dollars"),
        pytest.param("−5", "-5", False, id="unicode-minus"),
        pytest.param("-5", "-5", False, id="minus"),
        pytest.param("+5", "5", False, id="plus"),
        pytest.param("3/4", "0.75", False, id="slash-fraction"),
        pytest.param("\\frac{3}{4}", "0.75", False, id="frac"),
        pytest.param("\\boxed{\\frac{3}{4}}", "0.75", True, id="boxed-frac"),
        pytest.param("2\\frac{1}{2}", "2.5", False, id="latex-mixed"),
        pytest.param(".5", "0.5", False, id="leading-dot"),
        pytest.param("The answer is 18.", "18", True, id="sentence-period"),
        pytest.param("It is 16 - 3 - 4", "4", False, id="binary-minus-not-sign"),
        pytest.param("COVID-19", "19", False, id="hyphen-not-sign"),
        pytest.param("x = -3", "-3", False, id="sign-after-equals"),
        pytest.param("In 2023 she had 7.", "7", False, id="year-then-number"),
        pytest.param("The answer is one.", "1", True, id="lone-one-word"),
        pytest.param("The answer is: each one costs $4", "4", True, id="lone-one-yields-to-digit"),
        pytest.param("The answer is negative five.", "-5", True, id="negative-word"),
        pytest.param("The answer is nineteen hundred.", "1900", True, id="nineteen-hundred"),
        pytest.param("1/3", "0.3333333333333333", False, id="repeating-decimal"),
        pytest.param("No numbers here.", None, False, id="none"),
        pytest.param("#### Step 1: count eggs\n16 - 3 = 13", "13", False, id="md-h4-not-marker"),
    ],
)
def test_extract_number(text: str, number: str | None, via_marker: bool) -> None:
    """Notations a model uses for a number all normalise to the same plain string."""
    assert extract_number(text) == (number, via_marker)


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("18", "18"),
        ("1,080", "1080"),
        ("-3", "-3"),
        ("2.5", "5/2"),
        ("2.5", "2.50"),
        (70000, "70,000"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        ("$1,000", "1000"),
        ("#### 72", "72"),
    ],
)
def test_gold_forms_compare_exactly(gold: str | float | int, answer: str) -> None:
    """Golds arrive as strings with commas, ints and floats; all compare as exact Fractions."""
    assert grade_numeric(f"The answer is {answer}.", gold).reason == "correct"


def test_float_tolerance_backstop() -> None:
    """A float printed to many places still matches a non-integer gold within 1e-6 relative."""
    assert grade_numeric("The answer is 0.33333333333", "1/3").correct


@pytest.mark.parametrize("gold", ["", "eighteen-ish?", "n/a", float("nan")])
def test_unparseable_gold_raises(gold: str | float) -> None:
    """A gold that is not a number is a dataset bug and must fail loudly, not grade silently."""
    with pytest.raises(ValueError):
        grade_numeric("The answer is 18.", gold)


def test_finish_reason_other_than_length_is_not_truncated() -> None:
    """Only the length limit means "cut off"; a normal stop keeps the last-number fallback."""
    assert grade_numeric(JANET, "18", "stop").reason == "correct"
    assert grade_numeric(JANET, "18", "length").reason == "truncated"


_GARBAGE_ALPHABET = (
    "0123456789,./-+=−{}()[]$\\%*#:_ \n\t.answerisboxedfracQuestion:Note:\u00a0\u202f\ufffd\x00é漢"
)
_GARBAGE_TOKENS = [
    "The answer is ",
    "Final Answer:",
    "####",
    "\\boxed{",
    "\\frac{",
    "}",
    "{,}",
    "\nQuestion:",
    "\nNote:",
    "<|im_end|>",
    "twenty-",
    "one hundred and ",
    "1,000",
    "3/4",
    "-",
    "=",
    " ",
    ".",
    "\n",
    "\\$",
    "2 1/2",
    "0" * 70,
]


def test_random_garbage_never_raises() -> None:
    """Any string (binary noise, marker soup, huge digit runs) grades without raising."""
    rng = random.Random(20240601)
    for _ in range(1500):
        if rng.random() < 0.5:
            text = "".join(rng.choice(_GARBAGE_ALPHABET) for _ in range(rng.randrange(0, 300)))
        else:
            text = "".join(rng.choice(_GARBAGE_TOKENS) for _ in range(rng.randrange(0, 60)))
        number, via_marker = extract_number(text)
        assert number is None or isinstance(number, str)
        assert isinstance(via_marker, bool)
        grade = grade_numeric(text, "18", rng.choice([None, "stop", "length"]))
        assert grade.reason in {"correct", "wrong_answer", "no_answer", "truncated"}
    raw = bytes(rng.randrange(256) for _ in range(5000)).decode("latin-1")
    grade_numeric(raw, 7)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1" * 100_000, id="digit-run"),
        pytest.param("1,000," * 17_000 + "0000", id="thousands-run"),
        pytest.param("\\boxed{" * 14_000, id="unclosed-boxes"),
        pytest.param("The answer is " * 7_000, id="marker-soup"),
        pytest.param("{" * 100_000, id="braces"),
        pytest.param("Note: 5\n" * 12_000, id="notes"),
        pytest.param("answer: " + "one-" * 25_000, id="number-words"),
        pytest.param("1 " * 50_000, id="mixed-number-bait"),
        pytest.param("answer is " + "= " * 50_000, id="equals"),
        pytest.param("1 " + "Note:\n" * 16_000, id="bare-note-headings"),
        pytest.param("answer" + " " * 100_000 + "x", id="spaces-after-answer"),
        pytest.param("a\nQuestion" + " " * 100_000 + "x", id="spaces-after-question"),
        pytest.param("Answer: a\n" + "1 " * 50_000, id="label-lookahead"),
    ],
)
def test_large_adversarial_input_is_fast(text: str) -> None:
    """100 KB of pathological text must not trigger catastrophic regex backtracking."""
    start = time.perf_counter()
    grade_numeric(text, "18", "stop")
    assert time.perf_counter() - start < 2.0
