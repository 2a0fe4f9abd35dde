"""LLM-as-judge evaluation against any OpenAI-compatible chat-completions endpoint (MT-Bench style).

- single-answer grading: the judge rates each answer 1-10 and explains why; the rationale is kept.
- pairwise: the judge picks the better of two runs' answers, asked in both orders (LLM judges favour a
  position); a verdict that flips with the order counts as a tie, as in MT-Bench.

A judge reply without a parseable verdict, a score outside 1-10, a timeout or an HTTP/transport error is
counted under its kind and reported beside the figures; it never stops the evaluation.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from securefed.evaluation.judge_questions import Question, reference_check

SINGLE_PROMPT = (
    "You are an impartial judge. Rate the assistant's answer to the user's question for helpfulness, "
    "correctness, relevance and detail.{ref} First explain your assessment in a few sentences, then give "
    "the rating on its own line in exactly this form: Rating: [[N]] where N is an integer from 1 to 10.\n\n"
    "[Question]\n{question}\n\n[Answer]\n{answer}\n[End of answer]"
)
PAIR_PROMPT = (
    "You are an impartial judge. Two assistants answered the same question. Decide which answer is better "
    "for helpfulness, correctness, relevance and detail; the order of the answers must not influence you.{ref} "
    "Explain briefly, then give the verdict on its own line in exactly this form: [[A]] if A is better, "
    "[[B]] if B is better, [[C]] for a tie.\n\n[Question]\n{question}\n\n[Answer A]\n{a}\n[End of answer A]\n\n"
    "[Answer B]\n{b}\n[End of answer B]"
)
RATING = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]|Rating:\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
# what small judges write instead of the requested form ("the rating is 4", "7/10", "8 out of 10"); tried
# only when the requested form is absent
LOOSE_RATING = re.compile(r"\brat(?:ing|e it|ed)\s+(?:is\s+|of\s+|at\s+)?(-?\d+(?:\.\d+)?)(?!\s*%)|"
                          r"\b(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE)
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


class JudgeFailure(Exception):
    """One judge call that gave no usable verdict; `kind` is what the report counts."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class JudgeClient:
    url: str  # the API base (…/v1) or the full …/chat/completions address
    model: str
    timeout: float = 60.0
    max_tokens: int = 512
    api_key: str | None = None  # default: OPENAI_API_KEY when set (local servers need none)

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"

    def ask(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except (socket.timeout, TimeoutError):
            raise JudgeFailure("timeout", f"no reply within {self.timeout:g} s") from None
        except urllib.error.HTTPError as e:
            raise JudgeFailure("http_error", f"HTTP {e.code}: {e.read()[:200]!r}") from None
        except urllib.error.URLError as e:
            kind = "timeout" if isinstance(e.reason, (socket.timeout, TimeoutError)) else "http_error"
            raise JudgeFailure(kind, f"{self.endpoint}: {e.reason}") from None
        except (json.JSONDecodeError, ConnectionError, OSError) as e:
            raise JudgeFailure("http_error", f"{self.endpoint}: {e}") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeFailure("malformed", f"not a chat completion: {str(payload)[:200]}") from None
        if not isinstance(content, str):
            raise JudgeFailure("malformed", "the completion has no text content")
        return content


def parse_rating(reply: str) -> float:
    """The judge's 1-10 rating (the last one given; the requested form first, then the loose ones);
    JudgeFailure no_score / out_of_range."""
    found = RATING.findall(reply) or LOOSE_RATING.findall(reply)
    if not found:
        raise JudgeFailure("no_score", "no 'Rating: [[N]]' in the reply")
    value = float(next(v for v in found[-1] if v))
    if not 1 <= value <= 10:
        raise JudgeFailure("out_of_range", f"rating {value:g} outside 1-10")
    return value


def parse_verdict(reply: str) -> str:
    found = VERDICT.findall(reply)
    if not found:
        raise JudgeFailure("no_score", "no [[A]], [[B]] or [[C]] verdict in the reply")
    return found[-1]


def _ref(q: Question) -> str:
    return f" The correct answer is: {q.reference}." if q.reference else ""


def grade_single(client: JudgeClient, questions: Sequence[Question], answers: Sequence[str],
                 on_row: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """MT-Bench single-answer grading. Rows keep the judge's full reply as the rationale."""
    rows, bad = [], {}
    for q, answer in zip(questions, answers):
        row: dict[str, Any] = {"id": q.id, "category": q.category, "question": q.question, "answer": answer}
        try:
            reply = client.ask(SINGLE_PROMPT.format(ref=_ref(q), question=q.question, answer=answer))
            row["rationale"] = reply
            row["score"] = parse_rating(reply)
        except JudgeFailure as e:
            row["error"], row["error_detail"] = e.kind, str(e)
            bad[e.kind] = bad.get(e.kind, 0) + 1
        if q.reference is not None:
            row["reference_correct"] = reference_check(answer, q.reference)
        rows.append(row)
        if on_row:
            on_row(row)
    scores = [r["score"] for r in rows if "score" in r]
    summary: dict[str, Any] = {"questions": len(rows), "scored": len(scores),
                               "mean_score": sum(scores) / len(scores) if scores else None, "bad_replies": bad}
    checked = [r for r in rows if "reference_correct" in r]
    summary["reference_correct"] = sum(r["reference_correct"] for r in checked)
    summary["reference_questions"] = len(checked)
    both = [r for r in checked if "score" in r]
    if both:  # the judge "passes" an answer at >= 6; agreement with the rule-based check
        summary["judge_rule_agreement"] = sum((r["score"] >= 6) == r["reference_correct"] for r in both) / len(both)
        summary["judge_rule_agreement_n"] = len(both)
    return {"mode": "single", "judge": client.model, "summary": summary, "rows": rows}


def grade_pairwise(client: JudgeClient, questions: Sequence[Question], answers: Sequence[str],
                   others: Sequence[str], on_row: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """This run (first) against another (second): win / loss / tie per question, both orders asked."""
    rows, bad = [], {}
    tally = {"win": 0, "loss": 0, "tie": 0}
    for q, mine, theirs in zip(questions, answers, others):
        row: dict[str, Any] = {"id": q.id, "question": q.question, "answer": mine, "other_answer": theirs}
        try:
            first = client.ask(PAIR_PROMPT.format(ref=_ref(q), question=q.question, a=mine, b=theirs))
            second = client.ask(PAIR_PROMPT.format(ref=_ref(q), question=q.question, a=theirs, b=mine))
            row["rationale"], row["rationale_swapped"] = first, second
            v1 = {"A": "win", "B": "loss", "C": "tie"}[parse_verdict(first)]
            v2 = {"A": "loss", "B": "win", "C": "tie"}[parse_verdict(second)]
            row["verdict"] = v1 if v1 == v2 else "tie"  # flips with the order: position bias, not preference
            row["consistent"] = v1 == v2
            tally[row["verdict"]] += 1
        except JudgeFailure as e:
            row["error"], row["error_detail"] = e.kind, str(e)
            bad[e.kind] = bad.get(e.kind, 0) + 1
        rows.append(row)
        if on_row:
            on_row(row)
    judged = sum(tally.values())
    summary = {"questions": len(rows), "judged": judged, **tally,
               "win_rate": (tally["win"] + 0.5 * tally["tie"]) / judged if judged else None, "bad_replies": bad}
    return {"mode": "pairwise", "judge": client.model, "summary": summary, "rows": rows}


def answer_questions(model: Any, tokenizer: Any, device: Any, questions: Sequence[Question],
                     max_new_tokens: int = 256) -> list[str]:
    """Greedy answers of the model under test, one per question, with its chat template."""
    from securefed.inference.generate import generate_reply

    return [generate_reply(model, tokenizer, [{"role": "user", "content": q.question}],
                           max_new_tokens=max_new_tokens, device=device)[0].strip() for q in questions]
