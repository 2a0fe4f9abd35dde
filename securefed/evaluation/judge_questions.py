"""A small built-in MT-Bench-style question set (our own wording), one or two per MT-Bench category.

Questions with a `reference` have one known short answer: `reference_check` marks an answer right
when it contains it, the rule-based check the judge's scores are compared against (a weak judge, such
as a 135M model, shows up as low agreement). Use --questions FILE for your own set (JSONL rows with
"question" and optionally "category" and "reference").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from securefed.errors import DataError


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    question: str
    reference: str | None = None


BUILTIN = (
    Question("writing-1", "writing", "Write a four-sentence note to a colleague thanking them for covering your shift."),
    Question("roleplay-1", "roleplay", "You are a museum guide. Describe a bronze age sword to a group of children in three sentences."),
    Question("reasoning-1", "reasoning", "Anna is taller than Ben, and Ben is taller than Carl. Who is the shortest? "
             "Answer with the name.", "Carl"),
    Question("reasoning-2", "reasoning", "If today is Monday, what day of the week will it be in 10 days? Answer with the day.",
             "Thursday"),
    Question("math-1", "math", "What is 17 multiplied by 6? Answer with the number.", "102"),
    Question("math-2", "math", "A shirt costs 40 dollars and is sold at a 25 percent discount. What is the new price "
             "in dollars? Answer with the number.", "30"),
    Question("coding-1", "coding", "Write a Python function that returns the largest of three numbers."),
    Question("extraction-1", "extraction", "From the sentence 'The meeting with Acme Corp is on 12 March in Oslo', "
             "extract the city. Answer with the city name.", "Oslo"),
    Question("stem-1", "stem", "What is the chemical symbol of gold? Answer with the symbol.", "Au"),
    Question("humanities-1", "humanities", "In two sentences, explain why the printing press mattered for the spread of ideas."),
)


def reference_check(answer: str, reference: str) -> bool:
    """Right when the reference appears in the answer as a whole word/number (case-insensitive)."""
    return re.search(rf"(?<![\w.]){re.escape(reference)}(?![\w])", answer, re.IGNORECASE) is not None


def load_questions(path: str | Path | None) -> tuple[Question, ...]:
    if path is None:
        return BUILTIN
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"--questions {path}: cannot read ({e.strerror})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"--questions {path} line {n}: not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise DataError(f"--questions {path} line {n}: needs a non-empty string \"question\"")
        ref = row.get("reference")
        out.append(Question(str(row.get("id", f"q{n}")), str(row.get("category", "general")), row["question"],
                            None if ref is None else str(ref)))
    if not out:
        raise DataError(f"--questions {path}: no questions")
    return tuple(out)
