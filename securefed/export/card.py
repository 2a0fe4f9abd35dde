"""The model card (README.md with Hugging Face YAML metadata) of an exported run.

It states what a reader needs to trust the model, each figure copied from what the run recorded,
never recomputed or rounded into something nicer: the FL algorithm, the aggregation protocol and its
threat model in one line, parties and rounds, the DP guarantee exactly as the accountant reported it
(or "no formal privacy guarantee"), the held-out figures with the rows they were scored on, and the
securefed version with the resolved config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from securefed.export.run import RunRecord

THREAT_LINE = {
    "plain": "plain aggregation: the server sees every party's update in the clear (no protection of "
             "individual updates; a reference for testing).",
    "secagg": "secure aggregation by pairwise masking (SecAgg/SecAgg+): the server learns only the sum of "
              "each round's updates, against a server that deviates arbitrarily and colludes with fewer than "
              "t of a party's neighbours.",
    "he": "homomorphic encryption (multiparty RLWE, t-of-n threshold decryption): the server aggregates "
          "ciphertexts and learns only the decrypted sum, against a server colluding with fewer than t parties.",
    "he-single_key": "homomorphic encryption with one shared CKKS key: the server learns only the sum, but any "
                     "key holder colluding with the server can decrypt individual updates.",
}
UNIT = {"example": "example (one training record of a party)",
        "user-central": "user (a party's whole dataset), noise added by the server",
        "user-distributed": "user (a party's whole dataset), noise added by the parties before secure aggregation"}
MECHANISM = {"example": "DP-SGD in each party's local training (Opacus), Gaussian noise",
             "user-central": "DP-FedAvg: per-party update clipping, Gaussian noise on the sum",
             "user-distributed": "per-party update clipping, distributed Skellam noise summed under secure aggregation"}
_NOT_HELDOUT = {"round", "algorithm", "lr", "selected", "protocol", "contributors", "seconds", "train_loss"}


def _protocol_key(cfg: Any) -> str:
    protocol = cfg.aggregation.protocol
    return "he-single_key" if protocol == "he" and cfg.aggregation.he.mode == "single_key" else protocol


def privacy_lines(run: RunRecord) -> list[str]:
    """The DP statement: the accountant's last report, verbatim, per party where the figures differ."""
    p = run.config.privacy
    if not p.enabled:
        protocol = ("Under `plain` the server also saw every party's update." if run.config.aggregation.protocol
                    == "plain" else "The aggregation protocol hides individual updates, not what the final "
                    "model memorised.")
        return ["**No formal privacy guarantee.** The run used no differential privacy "
                "(privacy.mechanism = \"none\"): the released weights may reveal information about the "
                f"parties' training data. {protocol}"]
    reported = next((row for row in reversed(run.metrics) if "dp_epsilon" in row), None)
    lines = [f"- mechanism: `{p.mechanism}` ({MECHANISM[p.mechanism]})",
             f"- privacy unit: {UNIT[p.mechanism]}",
             f"- accountant: `{p.accountant}`"]
    if reported is None:
        lines.append("- epsilon: **not reported** (no accountant figures in this run directory; the configured "
                     f"target was {p.target_epsilon}, which is a budget, not a guarantee)")
        return lines
    eps: Mapping[str, float] = reported["dp_epsilon"]
    lines.append(f"- delta: {reported['dp_delta']!r}")
    values = set(eps.values())
    if len(values) == 1:
        lines.append(f"- epsilon: {next(iter(values))!r} (every party; after round {reported['round']})")
    else:
        lines.append(f"- epsilon (max over parties): {reported['dp_epsilon_max']!r} (after round {reported['round']})")
        lines.extend(f"  - {pid}: {value!r}" for pid, value in sorted(eps.items()))
    if "dp_epsilon_vs_server_max" in reported:
        lines.append(f"- epsilon of one share against the server (distributed over plain): "
                     f"{reported['dp_epsilon_vs_server_max']!r}")
    if p.sampling_amplification:
        lines.append("- parties sampled by secret Poisson sampling: the guarantee holds against observers of the "
                     "released model, not the coordinator")
    return lines


def heldout_lines(run: RunRecord) -> list[str]:
    held = run.summary.get("heldout")
    if held:
        figures, where = held["metrics"], (f"{held['rows']} held-out rows of the {held['split']} split (no party "
                                           f"trained on them), after round {held['round']}")
    elif run.metrics:
        row = run.metrics[-1]
        figures = {k: v for k, v in row.items() if k.startswith("eval_") or k in ("accuracy", "macro_f1")}
        where = f"the held-out split after round {row['round']}; rows scored not recorded by this run"
    else:
        return ["No held-out figures recorded in this run directory (score it with `securefed eval --run`)."]
    lines = [f"Scored on {where}:", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items()]
    return lines


def _yaml_value(v: Any) -> str:
    return json.dumps(v)  # a JSON scalar/list is valid YAML, quoted safely


def model_card(run: RunRecord, *, base_name: str, license_: str | None, merged: bool, gguf_files: list[str],
               chat_template_added: bool, version: str) -> str:
    cfg = run.config
    tags = ["securefed", "federated-learning", "lora", "peft"]
    if cfg.privacy.enabled:
        tags.append("differential-privacy")
    if cfg.aggregation.protocol != "plain":
        tags.append("secure-aggregation")
    if gguf_files:
        tags.append("gguf")
    meta = {"base_model": base_name, "library_name": "transformers" if merged else "peft", "tags": tags}
    if license_:
        meta["license"] = license_
    if cfg.data.source not in ("default",) and not Path(str(cfg.data.source)).suffix:
        meta["datasets"] = [cfg.data.source]  # a hub dataset id; local files are not named in public metadata
    head = ["---", *(f"{k}: {_yaml_value(v)}" for k, v in meta.items()), "---", ""]
    rounds_done = run.metrics[-1]["round"] if run.metrics else cfg.rounds
    body = [
        f"# {run.path.name}: {cfg.algorithm.name} over {cfg.parties} parties (securefed)", "",
        f"A LoRA adapter for `{base_name}` trained by federated learning with securefed {version}: no party's "
        "training data left its owner; " + ("the server saw each party's update in the clear (protocol `plain`)."
                                            if cfg.aggregation.protocol == "plain" else
                                            "the server saw only sums of the parties' updates (see the protocol below)."),
        "",
        "## Federation", "",
        f"- FL algorithm: `{cfg.algorithm.name}`",
        f"- protocol: `{cfg.aggregation.protocol}`: {THREAT_LINE[_protocol_key(cfg)]}",
        f"- parties: {cfg.parties}; rounds: {rounds_done} of {cfg.rounds}",
        f"- task: `{cfg.task}`; data: `{cfg.data.source}`; LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha}",
    ]
    if cfg.model.quantization != "none":
        body.append(f"- base quantization during training: {cfg.model.quantization} (QLoRA); the export merges the "
                    "adapter into the full-precision base")
    body += ["", "## Privacy", "", *privacy_lines(run), "", "## Held-out evaluation", "", *heldout_lines(run), "",
             "## Files", ""]
    if merged:
        body.append("- `model.safetensors`, `config.json`, tokenizer: the base with the adapter merged in "
                    "(`AutoModelForCausalLM.from_pretrained(this_folder)`); `adapter/`: the PEFT adapter alone")
    else:
        body.append("- `adapter_model.safetensors`, `adapter_config.json`: the PEFT adapter "
                    "(`PeftModel.from_pretrained(base, this_folder)`)")
    body += [f"- `{name}`: GGUF for llama.cpp-based runtimes" for name in gguf_files]
    if chat_template_added:
        body.append("- chat template: the base had none; securefed's text chat format (`### User:` / `### Assistant:`), "
                    "the format the run trained on, was added")
    body += ["- `securefed_config.json`: the run's resolved config", "",
             "## Config", "", "<details><summary>resolved securefed config</summary>", "", "```json",
             cfg.to_json(), "```", "", "</details>", ""]
    return "\n".join(head + body)
