"""`securefed eval --judge-url URL --judge-model NAME`: LLM-as-judge evaluation of a run or model
(securefed.evaluation.judge), single-answer grading or, with --against, pairwise against another run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from rich.console import Console


def run_judge(target: Path, judge_url: str, judge_model: str, *, against: Optional[Path], questions: Optional[Path],
              out: Optional[Path], limit: Optional[int], adapter: Optional[Path], device: str, timeout: float,
              max_new_tokens: int, err: Console) -> dict:
    """Answers from `target` (a run or export folder; against: a second one), graded by the judge."""
    import gc

    from securefed.atomic import atomic_write_text
    from securefed.evaluation.judge import JudgeClient, answer_questions, grade_pairwise, grade_single
    from securefed.evaluation.judge_questions import load_questions
    from securefed.inference.load import load_for_inference

    qs = load_questions(questions)[: limit or None]

    def answers_of(where: Path, extra_adapter: Optional[Path]) -> list[str]:
        loaded = load_for_inference(where, extra_adapter, device)
        err.print(f"answering {len(qs)} questions with {loaded.source}", highlight=False)
        answers = answer_questions(loaded.model, loaded.tokenizer, loaded.device, qs, max_new_tokens)
        del loaded
        gc.collect()  # two models need not be in memory at once
        return answers

    mine = answers_of(target, adapter)
    client = JudgeClient(judge_url, judge_model, timeout=timeout)

    def show(row: dict) -> None:
        verdict = row.get("score", row.get("verdict", f"bad reply ({row.get('error')})"))
        err.print(f"  {row['id']}: {verdict}", highlight=False)

    if against is not None:
        result = grade_pairwise(client, qs, mine, answers_of(against, None), on_row=show)
        result["other"] = str(against)
    else:
        result = grade_single(client, qs, mine, on_row=show)
    result["target"] = str(target)
    if out is not None:
        atomic_write_text(out / f"judge_{result['mode']}.json", json.dumps(result, indent=2))
    return result
