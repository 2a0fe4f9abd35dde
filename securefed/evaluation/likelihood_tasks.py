"""Evaluation tasks scored from log-likelihoods: multiple choice, preference, perplexity."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from securefed.data.convert import DIALOGUE_REPLY, Malformed, split_dialogue
from securefed.errors import DataError, UserError
from securefed.evaluation import metrics as M
from securefed.evaluation.report import summary_line
from securefed.evaluation.rows import check_template, field, fill_template, require_rows, text
from securefed.evaluation.scoring import ContinuationScore, continuation_fits, continuation_logprobs, text_nll

Rows = Sequence[dict[str, Any]]

MULTIPLE_CHOICE_TEMPLATE = "{question}\n{choices}\nAnswer:"
ANSWER_FIELDS = ("answer", "answer_idx", "label", "cop", "gold")
LETTERS = string.ascii_uppercase


def parse_choices(row: dict[str, Any], index: int) -> list[str]:
    """Choices of an MMLU / MedQA / MedMCQA row, in order.

    Accepted layouts: `choices` or `options` as a list; `options` as a {"A": ..., "B": ...} dict;
    letter columns A, B, C, ...; MedMCQA's opa, opb, opc, opd columns.
    """
    for key in ("choices", "options"):
        value = row.get(key)
        if isinstance(value, list):
            return _choice_texts(value, index, key)
        if isinstance(value, dict):
            letters = sorted(value, key=str)
            if letters != list(LETTERS[: len(letters)]):
                raise DataError(
                    f"row {index + 1}: {key!r} keys must be A, B, C, ...; got {letters}"
                )
            return _choice_texts([value[k] for k in letters], index, key)
    for names in (LETTERS, [f"op{c}" for c in string.ascii_lowercase]):
        present = []
        for name in names:
            if name not in row:
                break
            present.append(row[name])
        if present:
            return _choice_texts(present, index, f"{names[0]}..")
    raise DataError(
        f"row {index + 1}: no choices found (expected 'choices' or 'options' list/dict, "
        f"columns A, B, C..., or opa, opb, ...; fields present: {', '.join(sorted(row))})"
    )


def parse_answer(
    row: dict[str, Any], index: int, choices: Sequence[str], answer_field: str | None, base: int
) -> int:
    """0-based index of the gold choice. The answer may be an index (offset by `base`, e.g. 1 for
    1-based datasets), a letter ("B", "(b)"), or the text of a choice."""
    value = field(row, index, [answer_field] if answer_field else ANSWER_FIELDS)
    name = answer_field or next(n for n in ANSWER_FIELDS if row.get(n) is not None)
    if isinstance(value, bool):
        raise DataError(f"row {index + 1}: field {name!r} is a boolean, not an answer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        stripped = value.strip().strip("()").strip()
        if stripped.lstrip("-").isdigit():
            value = int(stripped)
        elif len(stripped) == 1 and stripped.upper() in LETTERS:
            position = LETTERS.index(stripped.upper())  # letters are never offset by `base`
            if position >= len(choices):
                raise DataError(
                    f"row {index + 1}: field {name!r} is {value!r} but there are only "
                    f"{len(choices)} choices"
                )
            return position
        elif value.strip() in choices:
            return list(choices).index(value.strip())
        else:
            raise DataError(
                f"row {index + 1}: field {name!r} is {value!r}: not an index, letter or choice"
            )
    if not isinstance(value, int):
        raise DataError(
            f"row {index + 1}: field {name!r} has unsupported type {type(value).__name__}"
        )
    position = value - base
    if not 0 <= position < len(choices):
        raise DataError(
            f"row {index + 1}: field {name!r} is {value}, outside the {len(choices)} choices "
            f"(answer_base={base})"
        )
    return position


@dataclass(frozen=True)
class MultipleChoiceTask:
    """Pick the choice with the highest log-likelihood (MMLU, MedQA, MedMCQA).

    score="letter" (default, the MMLU convention): the prompt lists lettered choices and we compare
    log P(" A"), log P(" B"), ...; score="text": compare log P(" " + choice text | question).
    accuracy uses summed log-probs; accuracy_norm divides by the continuation's token count.
    """

    name: str = "multiple_choice"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        score: Literal["letter", "text"] = "letter",
        template: str = MULTIPLE_CHOICE_TEMPLATE,
        question_field: str = "question",
        answer_field: str | None = None,
        answer_base: int = 0,
        batch_size: int = 8,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        require_rows(rows)
        if score not in ("letter", "text"):
            raise UserError(f"score must be 'letter' or 'text', got {score!r}")
        check_template(template, "question")
        contexts, continuations, owners, gold = [], [], [], []
        for index, row in enumerate(rows):
            question = text(row, index, [question_field])
            choices = parse_choices(row, index)
            if len(choices) > len(LETTERS):
                raise DataError(
                    f"row {index + 1}: {len(choices)} choices; at most 26 are supported"
                )
            gold.append(parse_answer(row, index, choices, answer_field, answer_base))
            listing = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
            if score == "letter":
                context = fill_template(template, question=question, choices=listing)
                options = [f" {LETTERS[i]}" for i in range(len(choices))]
            else:
                context = fill_template(template, question=question, choices="")
                options = [f" {c.strip()}" for c in choices]
            for option in options:
                contexts.append(context)
                continuations.append(option)
                owners.append(index)
        scores = continuation_logprobs(
            model, tokenizer, contexts, continuations, batch_size=batch_size, max_length=max_length
        )
        grouped: list[list[ContinuationScore]] = [[] for _ in rows]
        for owner, s in zip(owners, scores):
            grouped[owner].append(s)
        # max() keeps the first maximum, so ties resolve to the earliest choice deterministically.
        picked = [max(range(len(g)), key=lambda i: g[i].logprob) for g in grouped]
        picked_norm = [
            max(range(len(g)), key=lambda i: g[i].logprob / g[i].num_tokens) for g in grouped
        ]
        return {
            "n": len(rows),
            "accuracy": M.accuracy(picked, gold),
            "accuracy_norm": M.accuracy(picked_norm, gold),
        }

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return summary_line(self.name, metrics, ["accuracy", "accuracy_norm"])


@dataclass(frozen=True)
class PreferenceTask:
    """DPO implicit-reward evaluation on (prompt, chosen, rejected) rows.

    The reference model is `reference_model` when given; otherwise, for a PEFT model, the same
    model with its adapter disabled (so no second copy of the base weights is needed).
    """

    name: str = "preference"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        beta: float = 0.1,
        reference_model: Any = None,
        prompt_field: str = "prompt",
        chosen_field: str = "chosen",
        rejected_field: str = "rejected",
        batch_size: int = 8,
        max_length: int | None = None,
        skip_malformed: bool = False,
    ) -> dict[str, Any]:
        require_rows(rows)
        if not beta > 0:
            raise UserError(f"beta must be positive, got {beta}")
        can_disable = callable(getattr(model, "disable_adapter", None))
        if reference_model is None and not can_disable:
            raise UserError(
                "preference evaluation needs a reference: pass reference_model=..., or a PEFT "
                "model whose adapter can be disabled"
            )
        prompts, chosen, rejected, kept, skipped = [], [], [], [], []
        for index, row in enumerate(rows):
            try:
                prompt, good, bad = _preference_texts(row, index, prompt_field, chosen_field, rejected_field)
            except DataError:
                if not skip_malformed:
                    raise
                skipped.append(index + 1)
                continue
            if skip_malformed and not all(continuation_fits(model, tokenizer, a, max_length) for a in (good, bad)):
                skipped.append(index + 1)  # an answer longer than the model's context cannot be scored
                continue
            prompts.append(prompt)
            chosen.append(good)
            rejected.append(bad)
            kept.append(index + 1)
        if not kept:
            raise DataError(f"no usable rows ({len(skipped)} malformed rows skipped)")
        contexts = prompts + prompts
        continuations = chosen + rejected
        # Errors name the data row and which answer, not the position in the chosen+rejected list.
        names = [f"row {r}'s {which} answer" for which in ("chosen", "rejected") for r in kept]

        def score(scorer: Any) -> list[float]:
            results = continuation_logprobs(
                scorer,
                tokenizer,
                contexts,
                continuations,
                batch_size=batch_size,
                max_length=max_length,
                names=names,
            )
            return [r.logprob for r in results]

        policy = score(model)
        if reference_model is not None:
            reference = score(reference_model)
        else:
            with model.disable_adapter():
                reference = score(model)
        n = len(kept)
        result = M.preference_scores(policy[:n], policy[n:], reference[:n], reference[n:], beta)
        return {
            "n": n,
            "skipped": len(skipped),
            "skipped_rows": skipped[:20],
            "beta": beta,
            "preference_accuracy": result.accuracy,
            "reward_margin": result.mean_margin,
            "chosen_reward": result.mean_chosen_reward,
            "rejected_reward": result.mean_rejected_reward,
        }

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return summary_line(self.name, metrics, ["preference_accuracy", "reward_margin", "beta"])


def _preference_texts(row: dict[str, Any], index: int, prompt_field: str, chosen_field: str,
                      rejected_field: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of one row. Rows without a prompt whose answers are whole
    "Human: ... Assistant: ..." dialogues (Anthropic HH-RLHF) are split at the last Assistant turn,
    as the training loader does, so only the final replies are scored."""
    good = text(row, index, [chosen_field])
    bad = text(row, index, [rejected_field])
    if prompt_field in row:
        return text(row, index, [prompt_field], allow_empty=True), good, bad
    if DIALOGUE_REPLY not in good:
        return "", good, bad  # no dialogue: score each answer from an empty context (BOS)
    try:
        return split_dialogue(good, bad, chosen_field, rejected_field)
    except Malformed as problem:
        raise DataError(f"row {index + 1}: {problem} (pass --option skip_malformed=true to skip such rows)") from None


@dataclass(frozen=True)
class PerplexityTask:
    """Token-level perplexity of a text column: exp(total NLL / total predicted tokens)."""

    name: str = "perplexity"

    def run(
        self,
        model: Any,
        tokenizer: Any,
        rows: Rows,
        *,
        text_field: str = "text",
        batch_size: int = 8,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        require_rows(rows)
        texts = [text(row, index, [text_field]) for index, row in enumerate(rows)]
        nll_sum, tokens = text_nll(
            model, tokenizer, texts, batch_size=batch_size, max_length=max_length
        )
        return {
            "n": len(rows),
            "n_tokens": tokens,
            "nll": nll_sum / tokens,
            "perplexity": M.perplexity(nll_sum, tokens),
        }

    def summary(self, metrics: Mapping[str, Any]) -> str:
        return summary_line(self.name, metrics, ["perplexity", "nll", "n_tokens"])


def _choice_texts(values: Sequence[Any], index: int, key: str) -> list[str]:
    if len(values) < 2:
        raise DataError(f"row {index + 1}: {key!r} has {len(values)} choice(s); need at least 2")
    texts = []
    for value in values:
        if value is None or isinstance(value, (list, dict)):
            raise DataError(f"row {index + 1}: {key!r} contains a non-text choice {value!r}")
        texts.append(str(value))
    return texts
