"""The lines a deployment's coordinator and parties print per round (their held-out figures)."""

from __future__ import annotations


def heldout_text(metrics: dict) -> list[str]:
    """['eval loss 6.8', 'accuracy 0.61', ...]: the held-out figures a deployment's lines show."""
    keys = ("eval_loss", "accuracy", "macro_f1", "preference_accuracy")
    return [f"{k.replace('_', ' ')} {metrics[k]:.4g}" for k in keys if k in metrics]


def server_round_line(record: dict) -> str:
    """'round 2: 3 contributors, train loss 1.234, held-out accuracy 0.61 (model after round 1)'; names a
    party the protocol left out (he: its decryption answers did not decode)."""
    app_metrics = record.get("app") or {}
    line = f"round {record['round'] + 1}: {len(record['contributors'])} contributors"
    if "train_loss" in app_metrics:
        line += f", train loss {app_metrics['train_loss']:.4g}"
    heldout = app_metrics.get("heldout") or {}
    shown = heldout_text(heldout)
    if shown:
        line += f", held-out {', '.join(shown)} (model after round {heldout['model_round']})"
    if record.get("excluded"):
        line += f"; left out {', '.join(record['excluded'])} (its answers did not decode)"
    return line
