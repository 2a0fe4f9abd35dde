"""Optional bridge to EleutherAI's lm-evaluation-harness for its standard tasks (MMLU, ...).

`lm_eval` is not a dependency: it is imported only when this is called. Its task definitions
fetch datasets through `datasets`; to run offline, have them in the local HF cache and set
HF_DATASETS_OFFLINE=1, or point `include_path` at task YAMLs that read local files.
"""

from __future__ import annotations

from typing import Any, Sequence

from securefed.errors import UserError


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    limit: int | None = None,
    include_path: str | None = None,
) -> dict[str, Any]:
    """Run lm-eval tasks on an in-memory HF model (a PeftModel works too); returns lm-eval's
    per-task results dict ({task: {metric: value}})."""
    try:
        import lm_eval  # noqa: PLC0415 - optional dependency, imported on use
        from lm_eval.models.huggingface import HFLM  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(
            "the lm-evaluation-harness bridge needs the optional package lm-eval: "
            "run `pip install lm-eval`"
        ) from exc
    if not tasks:
        raise UserError("name at least one lm-eval task")
    task_manager = None
    if include_path is not None:
        from lm_eval.tasks import TaskManager  # noqa: PLC0415

        task_manager = TaskManager(include_path=include_path)
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=wrapped,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=task_manager,
    )
    return dict(output["results"]) if output else {}
