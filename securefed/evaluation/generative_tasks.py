"""Evaluation tasks scored from generated text: classification, math, code, harmlessness.

Each task is a frozen dataclass with `run(model, tokenizer, rows, **options) -> dict` and
`summary(metrics) -> str`. Options are keyword-only with defaults that follow OpenFedLLM's setups.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from securefed.errors import DataError, UserError
from securefed.evaluation import metrics as M
from securefed.evaluation.report import summary_line
from securefed.evaluation.rows import check_template, field, fill_template, require_rows, text
from securefed.evaluation.sandbox import SandboxLimits, SandboxResult, check_completion
from securefed.evaluation.scoring import SamplingParams, generate

Rows = Sequence[dict[str, Any]]

FINANCIAL_SENTIMENT_TEMPLATE = (
    "What is the sentiment of this news? Answer positive, neutral or negative.\n"
    "News: {text}\nAnswer:"
)
SENTIMENT_LABELS = ("positive", "neutral", "negative")
MATH_TEMPLATE = "Question: {question}\nAnswer:"
# Where a HumanEval completion stops being the function body (the Codex paper's stop set).
CODE_STOP = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")


def chat_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[str]:
    """Wrap each prompt as a single user turn with the tokenizer's chat template when `chat`."""
    if not chat:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("chat=True but the tokenizer has no chat template")
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


@dataclass(frozen=True)
class ClassificationTask:
    """Generate a short answer and parse it into one of `labels` (e.g. FPB/FiQA/TFNS sentiment)."""

    name: str = "classification"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        labels: Sequence[str] = SENTIMENT_LABELS,
        template: str = FINANCIAL_SENTIMENT_TEMPLATE,
        text_field: str = "text",
        label_field: str = "label",
        label_map: Mapping[str, str] | None = None,
        max_new_tokens: int = 8,
        batch_size: int = 8,
        chat: bool = False,
    ) -> dict[str, Any]:
        require_rows(rows)
        check_template(template, "text")
        label_list = [str(label).strip().lower() for label in labels]
        if len(set(label_list)) < 2:
            raise UserError(f"classification needs at least two distinct labels, got {labels}")
        # label_map turns dataset-specific gold values (0/1/2, "pos") into label names.
        mapping = {str(k): str(v).strip().lower() for k, v in (label_map or {}).items()}
        prompts, gold = [], []
        for index, row in enumerate(rows):
            prompts.append(fill_template(template, text=text(row, index, [text_field])))
            raw = str(field(row, index, [label_field])).strip()
            label = mapping.get(raw, raw.lower())
            if label not in label_list:
                raise DataError(
                    f"row {index + 1}: field {label_field!r} is {raw!r}, not one of {label_list} "
                    "(pass label_map to translate dataset labels)"
                )
            gold.append(label)
        outputs = generate(
            model,
            tokenizer,
            chat_prompts(tokenizer, prompts, chat),
            add_special_tokens=not chat,  # a chat template already holds the BOS text
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        predictions = [M.parse_label(o, label_list) for o in outputs]
        return {
            "n": len(rows),
            "accuracy": M.accuracy(predictions, gold),
            "macro_f1": M.macro_f1(predictions, gold, label_list),
            "unparseable": sum(p is None for p in predictions) / len(rows),
        }

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return summary_line(self.name, metrics, ["accuracy", "macro_f1", "unparseable"])


@dataclass(frozen=True)
class MathTask:
    """GSM8K-style: generate a solution; exact match of its final number with the "#### N"
    answer."""

    name: str = "math"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        template: str = MATH_TEMPLATE,
        question_field: str = "question",
        answer_field: str = "answer",
        max_new_tokens: int = 256,
        batch_size: int = 8,
        stop: Sequence[str] = ("\nQuestion:",),
        chat: bool = False,
    ) -> dict[str, Any]:
        require_rows(rows)
        check_template(template, "question")
        prompts, gold = [], []
        for index, row in enumerate(rows):
            prompts.append(fill_template(template, question=text(row, index, [question_field])))
            answer = M.extract_final_number(str(field(row, index, [answer_field])))
            if answer is None:
                raise DataError(f"row {index + 1}: field {answer_field!r} contains no number")
            gold.append(answer)
        outputs = generate(
            model,
            tokenizer,
            chat_prompts(tokenizer, prompts, chat),
            add_special_tokens=not chat,  # a chat template already holds the BOS text
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            stop=stop,
        )
        predicted = [M.extract_final_number(o) for o in outputs]
        return {
            "n": len(rows),
            "exact_match": M.accuracy(predicted, gold),
            "no_number": sum(p is None for p in predicted) / len(rows),
        }

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return summary_line(self.name, metrics, ["exact_match", "no_number"])


@dataclass(frozen=True)
class CodeTask:
    """HumanEval-style: sample `n_samples` completions per prompt, run the tests in the sandbox,
    report unbiased pass@k for every k in `ks` (default: 1, 10, 100 where k <= n_samples)."""

    name: str = "code"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        n_samples: int = 1,
        ks: Sequence[int] | None = None,
        temperature: float | None = None,
        top_p: float = 0.95,
        seed: int | None = 0,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        stop: Sequence[str] = CODE_STOP,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        workers: int = 1,
    ) -> dict[str, Any]:
        require_rows(rows)
        if n_samples < 1:
            raise UserError(f"n_samples must be >= 1, got {n_samples}")
        k_values = (
            sorted(set(ks)) if ks is not None else [k for k in (1, 10, 100) if k <= n_samples]
        )
        if not k_values or any(not 1 <= k <= n_samples for k in k_values):
            raise UserError(f"every k must be in 1..n_samples={n_samples}, got {list(ks or [])}")
        if workers < 1:
            raise UserError(f"workers must be >= 1, got {workers}")
        # Greedy decoding gives n identical samples, so sampling is the default when n > 1.
        temp = temperature if temperature is not None else (0.0 if n_samples == 1 else 0.8)
        problems = []
        for index, row in enumerate(rows):
            entry_point = text(row, index, ["entry_point"]).strip()
            if not entry_point.isidentifier():
                raise DataError(
                    f"row {index + 1}: entry_point {entry_point!r} is not an identifier"
                )
            problems.append((text(row, index, ["prompt"]), text(row, index, ["test"]), entry_point))
        # Each prompt repeated n_samples times, consecutively: sample j of problem i is at i*n + j.
        expanded = [prompt for prompt, _, _ in problems for _ in range(n_samples)]
        completions = generate(
            model,
            tokenizer,
            expanded,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            sampling=SamplingParams(temperature=temp, top_p=top_p, seed=seed),
            stop=stop,
        )
        limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)

        def check(position: int) -> SandboxResult:
            prompt, test, entry_point = problems[position // n_samples]
            return check_completion(prompt, completions[position], test, entry_point, limits)

        # Threads suffice: each check waits on its own subprocess.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check, range(len(completions))))
        statuses = {s: 0 for s in ("passed", "failed", "timeout", "memory", "error")}
        for result in results:
            statuses[result.status] += 1
        correct = [
            sum(r.passed for r in results[i * n_samples : (i + 1) * n_samples])
            for i in range(len(problems))
        ]
        scores: dict[str, Any] = {"n": len(problems), "n_samples": n_samples}
        for k in k_values:
            scores[f"pass@{k}"] = sum(M.pass_at_k(n_samples, c, k) for c in correct) / len(problems)
        scores["status_counts"] = statuses
        return scores

    def summary(self, metrics: Mapping[str, Any]) -> str:
        keys = sorted((k for k in metrics if k.startswith("pass@")), key=lambda k: int(k[5:]))
        return summary_line(self.name, metrics, keys + ["n_samples"])


@dataclass(frozen=True)
class HarmlessnessTask:
    """AdvBench-style: generate a response to each harmful request; report the refusal rate."""

    name: str = "harmlessness"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        prompt_fields: Sequence[str] = ("prompt", "goal"),
        template: str = "{prompt}",
        max_new_tokens: int = 64,
        batch_size: int = 8,
        chat: bool = False,
        markers: Sequence[str] = M.REFUSAL_MARKERS,
    ) -> dict[str, Any]:
        require_rows(rows)
        check_template(template, "prompt")
        prompts = [
            fill_template(template, prompt=text(row, index, list(prompt_fields)))
            for index, row in enumerate(rows)
        ]
        outputs = generate(
            model,
            tokenizer,
            chat_prompts(tokenizer, prompts, chat),
            add_special_tokens=not chat,  # a chat template already holds the BOS text
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        return {"n": len(rows), "refusal_rate": M.refusal_rate(outputs, markers)}

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return summary_line(self.name, metrics, ["refusal_rate"])
