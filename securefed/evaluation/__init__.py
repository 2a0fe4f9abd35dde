"""Evaluation suite: metrics (pure), scoring (model running), sandbox (code execution), tasks,
runner (`evaluate`) and an optional lm-evaluation-harness bridge (harness).

Nothing is imported here so that `securefed.evaluation.metrics` stays importable without torch.
"""
