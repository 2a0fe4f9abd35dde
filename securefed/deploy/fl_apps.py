"""The real federated-learning apps for a deployment: the coordinator holds the global adapter and
the algorithm's server state; each party trains on its own data. The protocol between them is the
same code the simulation runs; these apps only add what the simulation's loop does around it.

Payloads are safetensors bytes (tensors + string metadata), never pickle.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from securefed import algorithms
from securefed.aggregate import FlatLayout
from securefed.atomic import atomic_write_bytes
from securefed.algorithms.base import ClientContext, ClientState, ServerState
from securefed.config import RootConfig, from_dict, protocol_floor, stored
from securefed.deploy import round_report
from securefed.deploy.fl_privacy import PartyPrivacy, ServerPrivacy, deployment_config
from securefed.deploy.keygen import keygen_finish, keygen_party
from securefed.deploy.provision import FederationPaths, provision_federation
from securefed.deploy.roster import membership_of
from securefed.deploy.round_work import Sent, Trained, from_groups, sent_key, to_groups
from securefed.deploy.settings import FederationConfig
from securefed.errors import ConfigError
from securefed.models.adapter import get_adapter_state, save_adapter
from securefed.data.chat import render_loaded
from securefed.models.loading import attach_lora, fit_max_length, load_base
from securefed.protocols.base import PartyInput, RoundContext, VectorSum
from securefed.robust.bounds import party_clip
from securefed.simulation.steps import party_input, to_aggregate, train_party, train_party_dp
from securefed.simulation.world import build_evalset
from securefed.training.schedule import round_lr
from securefed.training.tasks import task_functions

DEFAULT_MAX_WEIGHT = 4096  # public bound on a party's weight; larger datasets are weighted as this


def federation_root_config(fed: FederationConfig) -> RootConfig:
    raw = fed.app.get("config")
    if not isinstance(raw, dict):
        raise ConfigError("federation.json: app.config (the federation's securefed config) is missing")
    return deployment_config(from_dict(stored(raw)))


def provision_fl_federation(out_dir: str | Path, parties: Sequence[str], server_host: str, cfg: RootConfig, *,
                            port: int, max_weight: int = DEFAULT_MAX_WEIGHT,
                            min_parties: int | None = None,
                            requests: Mapping[str, Path] | None = None) -> FederationPaths:
    """Kits for a federation that trains `cfg` with these apps (`securefed provision`): the protocol
    and its settings come from `cfg.aggregation`, and the whole config travels in app.config.
    requests: party id -> its `securefed keygen` request folder (None: make every party's keys here)."""
    deployment_config(cfg)  # refuse what no deployed app would run (secret Poisson selection) before any kit
    cfg = check_deployable(cfg, len(parties), min_parties or len(parties))
    settings: dict[str, Any] = {
        "port": port, "rounds": cfg.rounds, "min_parties": min_parties or len(parties),
        "algorithm": cfg.algorithm.name, "model": cfg.model.name_or_path,
        "app": {"config": cfg.model_dump(mode="json"), "max_weight": max_weight}}
    if cfg.aggregation.protocol in ("plain", "secagg"):  # he ciphertexts are sized by their own codec
        settings["max_message_bytes"] = message_bound(cfg)
    return provision_federation(
        out_dir, list(parties), server_host, cfg.aggregation.protocol, _protocol_config(cfg), settings, requests)


def check_deployable(cfg: RootConfig, n: int, min_parties: int) -> RootConfig:
    """`cfg` for a federation of these n parties, refused before any kit is written when a round could
    only abort: every config check runs again on the real party count (sampling, the protocol's
    minimum), and the quorum a round may start with must be enough for the protocol."""
    if not 1 <= min_parties <= n:
        raise ConfigError(f"--min-parties {min_parties}: must be between 1 and the {n} parties")
    cfg = from_dict({**cfg.model_dump(mode="json"), "parties": n})
    too_few = protocol_floor(cfg, min(min_parties, cfg.sampling.per_round(n)))
    if too_few:
        raise ConfigError(f"--min-parties {min_parties}: a round may start with that many, but {too_few}")
    return cfg


def keygen_fl_party(out_dir: str | Path, party_id: str, cfg: RootConfig) -> Path:
    """`securefed keygen`: this party's keys for a federation that will run `cfg`'s protocol."""
    return keygen_party(out_dir, party_id, cfg.aggregation.protocol, _protocol_config(cfg))


def keygen_fl_finish(out_dir: str | Path, roster_file: str | Path, cfg: RootConfig) -> Path:
    """`securefed keygen --finish`: phase 2 of this party's keys, from the operator's roster."""
    return keygen_finish(out_dir, roster_file, cfg.aggregation.protocol, _protocol_config(cfg))


def _protocol_config(cfg: RootConfig) -> Any:
    """`cfg`'s protocol settings as JSON data (None when the protocol has no section)."""
    section = cfg.aggregation.section()
    return section.model_dump(mode="json") if section is not None else None


def message_bound(cfg: RootConfig) -> int:
    """Max message size sized from the adapter instead of a flat 512 MiB: the global payload (params
    and a control variate, fp32) with 3x headroom plus 16 MiB for metadata. plain and secagg replies
    are at most 1.0x fp32 of the same vectors, so they always fit. Sized from the base's config and
    the LoRA shapes (models.sizing): provisioning reads no weights."""
    from securefed.models.sizing import adapter_numel

    m = adapter_numel(cfg.model, cfg.lora)
    return (16 << 20) + 3 * (2 * 4 * m)


def pack_tensors(groups: Mapping[str, Mapping[str, torch.Tensor] | None], meta: Mapping[str, Any]) -> bytes:
    flat = {f"{g}/{k}": v.contiguous() for g, d in groups.items() if d is not None for k, v in d.items()}
    return st_save(flat, metadata={"meta": json.dumps(dict(meta))})


def unpack_tensors(blob: bytes) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    try:
        flat = st_load(blob)
        meta = json.loads(_metadata(blob).get("meta", "{}"))
    except Exception as e:  # safetensors raises its own error types on malformed bytes
        raise ValueError(f"malformed tensor payload: {e}") from None
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in flat.items():
        g, _, k = name.partition("/")
        groups.setdefault(g, {})[k] = t
    return groups, meta


def _metadata(blob: bytes) -> dict[str, str]:
    # safetensors layout: u64 little-endian header length, then the JSON header (with __metadata__)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    return header.get("__metadata__", {})


def heldout_set(task: Any, data: Any, tokenizer: Any, cfg: RootConfig, max_length: int) -> Any:
    """A party's scored held-out rows (TEST, else its eval share), or None when it has none or does not
    report metrics."""
    if not round_report.enabled(cfg):
        return None
    try:
        return build_evalset(task, data, tokenizer, cfg, max_length)
    except ConfigError:  # no held-out rows on this party: it reports its training loss only
        return None


def _model(cfg: RootConfig):
    base, tokenizer, device = load_base(cfg.model)
    # same seed on every machine: same initial adapter
    model = attach_lora(base, cfg.lora, seed=cfg.seed, gradient_checkpointing=cfg.training.gradient_checkpointing)
    return model, tokenizer, device


class FLServerApp:
    """Global adapter + algorithm state; applies the server step to the protocol's sum only."""

    def __init__(self, fed: FederationConfig, out_dir: Path | None = None) -> None:
        self.fed = fed
        self.cfg = federation_root_config(fed)
        if self.cfg.aggregation.robust.rule != "mean":  # the coordinator applies sums; robust rules need rows
            raise ConfigError(f"aggregation.robust.rule={self.cfg.aggregation.robust.rule!r} runs in simulations "
                              "only: a deployment's coordinator applies the protocol's sum")
        self.model, _, _ = _model(self.cfg)
        initial = get_adapter_state(self.model)
        self.layout = FlatLayout.of(initial)
        self.party_ids = tuple(p.id for p in fed.parties)
        self.algorithm = algorithms.create(self.cfg.algorithm, len(self.party_ids), self.cfg.rounds)
        if not self.algorithm.aggregates:
            raise ConfigError("algorithm.name: 'local' has nothing to aggregate; run parties alone instead")
        self.state: ServerState = self.algorithm.init_server(initial)
        self.max_weight = int(fed.app.get("max_weight", DEFAULT_MAX_WEIGHT))
        self.out_dir = out_dir
        self.privacy = ServerPrivacy(self.cfg, self.party_ids, self.layout.size, membership_of(fed).seed)
        self.sum_bound = round_report.sum_bound(self.cfg)  # the coordinator rejects sums clipped parties cannot produce

    def select(self, round: int, available: tuple[str, ...]) -> tuple[str, ...]:
        """Of the round's invited, connected parties, those to start (the coordinator derives the
        invited set from the roster: securefed.membership)."""
        return self.privacy.admit(round, available)  # user-level DP: parties whose budget is spent sit out

    def round_context(self, round: int, selected: tuple[str, ...]) -> RoundContext:
        # The protected vector: the update, then the parties' report coordinates (round_report.py).
        return RoundContext(self.fed.federation_id, round, tuple(sorted(selected)),
                            self.layout.size + round_report.width(self.cfg), self.algorithm.uses_control,
                            self.max_weight)

    def global_payload(self, round: int) -> bytes:
        lr = round_lr(min(round, self.cfg.rounds - 1), self.cfg.rounds, self.cfg.training.lr,
                      self.cfg.training.min_lr, self.cfg.training.schedule)
        return pack_tensors({"params": self.state.params, "control": self.state.control},
                            {"round": round, "lr": lr, "final": round >= self.cfg.rounds})

    def apply(self, round: int, result: VectorSum) -> dict[str, Any]:
        update, report = round_report.split(self.cfg, result, self.layout.size)  # sums only, as the update
        noised, dp_metrics = self.privacy.finish(round, update)  # central noise / distributed decoding
        self.state = self.algorithm.server_update(self.state, to_aggregate(noised, self.layout))
        if self.out_dir is not None and round + 1 >= self.cfg.rounds:
            save_adapter(self.model, self.state.params, self.out_dir / "adapter", self.cfg.to_json())
        heldout = {k: report.pop(k) for k in list(report) if k != "train_loss"}
        if heldout:  # scored on the global model the parties received: the one after `round` rounds
            report["heldout"] = {"model_round": round, **heldout}
        fp32 = 4 * self.layout.size * (2 if self.algorithm.uses_control else 1)  # the update in the clear
        return {"contributors": len(result.contributors), "total_weight": result.total_weight, **report,
                "fp32_bytes_per_party": fp32, **dp_metrics}

    def state_bytes(self) -> bytes:
        s = self.state
        return pack_tensors({"params": s.params, "control": s.control,
                             **{f"opt.{name}": d for name, d in s.opt.items()}},
                            {"round": s.round, "dp_ledger": self.privacy.ledger()})

    def load_state(self, data: bytes) -> None:
        groups, meta = unpack_tensors(data)
        opt = {g[len("opt."):]: d for g, d in groups.items() if g.startswith("opt.")}
        self.state = ServerState(int(meta["round"]), groups["params"], groups.get("control"), opt)
        self.privacy.restore(meta.get("dp_ledger", "[]"))


class FLClientApp:
    """One party: its private data stays here; it sends only what the protocol makes of its update."""

    def __init__(self, fed: FederationConfig, party_id: str, data_source: str, kit_dir: Path) -> None:
        self.fed, self.party_id, self.kit_dir = fed, party_id, Path(kit_dir)
        cfg = federation_root_config(fed)
        # Held-out rows are carved (eval_fraction, as in the simulation) only when metrics are reported.
        eval_fraction = cfg.data.eval_fraction if round_report.enabled(cfg) else 0.0
        data_cfg = cfg.data.model_copy(update={"source": data_source, "eval_fraction": eval_fraction,
                                               "max_examples": None})
        self.cfg = cfg.model_copy(update={"data": data_cfg})
        self.model, self.tokenizer, self.device = _model(self.cfg)
        self.task = task_functions(self.cfg)  # SFT or DPO
        data = render_loaded(self.task.load(self.cfg.data, seed=self.cfg.seed), self.tokenizer,
                             self.cfg.data.prompt_style)  # TEST rows (data.test_fraction) stay out of train
        max_length = fit_max_length(self.model, self.cfg.training.max_length)
        self.data = self.task.tokenize(self.tokenizer, data.train, max_length)
        self.evalset = heldout_set(self.task, data, self.tokenizer, self.cfg, max_length)
        self.last_report: dict[str, Any] = {}  # this party's own values of the last round, for its log
        self.final_heldout: dict[str, float] = {}  # the final model on this party's held-out rows
        self.algorithm = algorithms.create(self.cfg.algorithm, len(fed.parties), self.cfg.rounds)
        self.state_path = self.kit_dir / "state" / "client_state.safetensors"
        initial = get_adapter_state(self.model)
        self.privacy = PartyPrivacy(self.cfg, [p.id for p in fed.parties], party_id, len(self.data),
                                    FlatLayout.of(initial).size, self.kit_dir / "state", membership_of(fed).seed)
        # This round's work (training result, input sent), on disk with the client state: a retried
        # attempt, or a restarted process, re-sends it instead of training again (round_work says why).
        self._trained: Trained | None = None
        self._sent: Sent | None = None
        if self.state_path.exists():
            groups, meta = unpack_tensors(self.state_path.read_bytes())
            self.state, self._trained, self._sent = from_groups(groups, meta)
            if self._sent is not None:
                self.last_report = self._sent.report
        else:
            self.state = self.algorithm.init_client(initial)

    def _save_state(self) -> None:
        groups, meta = to_groups(self.state, self._trained, self._sent)
        atomic_write_bytes(self.state_path, pack_tensors(groups, meta))

    def local_update(self, round: int, global_payload: bytes, ctx: RoundContext) -> PartyInput:
        groups, meta = unpack_tensors(global_payload)
        digest = hashlib.sha256(global_payload).digest()
        if self._trained is None or (self._trained.round, self._trained.digest) != (round, digest):
            heldout = self._heldout(round, groups)
            result = self._train(round, groups, meta)  # DP ledger on disk first: a crash here over-counts
            self.state = result.client_state
            self._trained, self._sent = Trained(round, digest, result, heldout), None
        key = sent_key(round, digest, ctx.party_ids, ctx.max_weight)
        if self._sent is None or self._sent.key != key:  # else: the same selection, the same input
            result = self._trained.result  # (the same noise share, too)
            weight = self.cfg.algorithm.party_weight(min(len(self.data), ctx.max_weight))  # 1 when uniform
            plain = party_input(result, FlatLayout.of(groups["params"]), weight, party_clip(self.cfg))
            protected = self.privacy.protect(round, ctx, plain)  # user-level DP: clip (+ distributed noise share)
            heldout = self._trained.heldout
            report = {"round": round, "train_loss": result.train_loss, **({"heldout": heldout} if heldout else {})}
            if round_report.width(self.cfg):
                protected = round_report.append(protected, round_report.encode(self.cfg, result.train_loss, heldout))
            self._sent = Sent(key, protected, report)
            # One write: the client state training moved, the result that moved it, the input sent.
            self._save_state()
        self.last_report = self._sent.report
        return self._sent.input

    def _heldout(self, round: int, groups: dict[str, Any]) -> dict[str, float] | None:
        """The global model as received, on rows this party never trains on (when round reports are on)."""
        if not (round_report.width(self.cfg) and self.evalset is not None and round_report.evaluates(self.cfg, round)):
            return None
        ev = self.cfg.evaluation
        return self.task.evaluate(self.model, self.tokenizer, groups["params"], self.evalset, self.device,
                                  ev.batch_size, ev.max_new_tokens)

    def _train(self, round: int, groups: dict[str, Any], meta: dict[str, str]) -> Any:
        cctx = ClientContext(global_params=groups["params"], server_control=groups.get("control"))
        args = (self.task, self.model, self.tokenizer.pad_token_id, self.data, self.cfg, round, self.party_id,
                float(meta["lr"]), self.algorithm, cctx, self.state, self.device)
        if self.privacy.example:  # DP-SGD; raises RoundDeclined when the budget is spent
            out = train_party_dp(*args, self.privacy.admit(round))
            self.privacy.record(round, out.noise_multiplier, out.sample_rate, out.steps)
            return out.result
        return train_party(*args)

    def receive_final(self, payload: bytes) -> None:
        groups, _ = unpack_tensors(payload)
        save_adapter(self.model, groups["params"], self.kit_dir / "final-adapter", self.cfg.to_json())
        if self.evalset is not None:  # the final model on this party's held-out rows: its own log only
            ev = self.cfg.evaluation  # (no round follows to aggregate it; the server's last row is round R-1's)
            self.final_heldout = self.task.evaluate(self.model, self.tokenizer, groups["params"], self.evalset,
                                                    self.device, ev.batch_size, ev.max_new_tokens)
