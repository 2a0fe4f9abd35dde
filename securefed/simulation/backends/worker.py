"""The body of one Ray actor: one copy of the base model that trains the parties handed to it and
then plays their side of the aggregation protocol.

A party's life on an actor, for round r (the driver calls these in order):

    train(shared, job)     the seeded train_party from the global adapter -> TrainReply
                           (client state and loss only; the update stays here as the PartyInput)
    open(ctx)              protocol.party(ctx, ...) for every party held, as the in-process round does
    stage({pid: Message})  each held session answers its message: the bytes the network would carry
    held(r)                the parties whose update/session this incarnation holds (a restarted
                           actor holds none: the driver retries or drops them)

The class is plain Python so that it can be tested without Ray; the pool wraps it with ray.remote.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from securefed.algorithms.base import ClientContext, ClientState
from securefed.protocols.base import Message, PartyInput, ProtocolError, RoundContext

# What a party's session answered to a stage message (a Message or None), or that it refused it.
REFUSED = "refused"


@dataclass(frozen=True)
class RoundShared:
    """What every party of a round receives: put in Ray's object store once per round."""

    round: int
    lr: float
    global_params: Mapping[str, Any]  # the server's adapter x (float32 tensors)
    server_control: Mapping[str, Any] | None  # SCAFFOLD's c
    privacy: Any  # a PrivacyEngine snapshot after admit_round: user-level clipping / distributed encoding


@dataclass(frozen=True)
class PartyJob:
    """One party's job in one round: its data and state travel with it, its key material as the
    bytes of its kit (decoded on the actor, never pickled as objects)."""

    party_id: str
    items: list  # the party's tokenized records
    weight: float  # the protocol weight: algorithm.weighting of the sample count (1.0 when uniform)
    state: ClientState  # its c_i (SCAFFOLD) or own adapter (local)
    material: bytes  # encode_material(protocol, party_material)
    dp_sgd: Any = None  # training.dp_sgd.DPSGDParams under example-level DP, else None
    crash: bool = False  # test hook: the actor's process exits when it starts this job


@dataclass(frozen=True)
class TrainReply:
    party_id: str
    state: ClientState
    train_loss: float
    dp_spend: tuple[float, float, int] | None  # example-level DP: (noise multiplier, sample rate, steps)
    node_id: str  # the Ray node that trained it (placement is visible in the metrics)
    incarnation: str  # differs after a restart


def _quiet_libraries() -> None:
    # An actor's stdout/stderr is forwarded to the driver's terminal: no download/loading bars there.
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "no 4-bit CPU kernel": every actor, every start
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _node_id() -> str:
    try:
        import ray
    except ImportError:
        return "local"
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


class PartyWorker:
    def __init__(self, cfg_json: str, threads: int) -> None:
        import uuid

        import torch

        from securefed import algorithms
        from securefed.aggregate import FlatLayout
        from securefed.config import from_dict
        from securefed.models.adapter import get_adapter_state
        from securefed.models.loading import attach_lora, load_base
        from securefed.protocols import registry as protocols
        from securefed.training.tasks import task_functions

        _quiet_libraries()
        torch.set_num_threads(threads)
        cfg = from_dict(json.loads(cfg_json))
        self.cfg = cfg
        self.task = task_functions(cfg)
        base, tokenizer, self.device = load_base(cfg.model)
        # The same seeded LoRA init as build_world; every job overwrites it with the round's adapter.
        self.model = attach_lora(base, cfg.lora, seed=cfg.seed,
                                 gradient_checkpointing=cfg.training.gradient_checkpointing)
        self.pad_id = tokenizer.pad_token_id
        self.layout = FlatLayout.of(get_adapter_state(self.model))
        self.algorithm = algorithms.create(cfg.algorithm, cfg.parties, cfg.rounds)
        self.protocol = protocols.create(cfg.aggregation.protocol, cfg.aggregation.section())
        self.node_id = _node_id()
        self.incarnation = uuid.uuid4().hex
        self.round: int | None = None
        self.inputs: dict[str, tuple[PartyInput, Any]] = {}  # pid -> (its input, its material), this round
        self.sessions: dict[str, Any] = {}  # pid -> PartySession, once the round's protocol opened

    def ready(self) -> tuple[str, str]:
        return self.node_id, self.incarnation

    def _enter(self, r: int) -> None:
        if self.round != r:  # a new round: whatever an earlier one left (an aborted protocol) goes
            self.round, self.inputs, self.sessions = r, {}, {}

    def train(self, shared: RoundShared, job: PartyJob) -> TrainReply:
        from securefed.deploy.material import decode_material
        from securefed.simulation.steps import party_input, train_party, train_party_dp

        if job.crash:
            os._exit(1)  # noqa: SLF001 - the fault-injection hook: die like a lost machine would
        self._enter(shared.round)
        cfg, pid = self.cfg, job.party_id
        start = shared.global_params if self.algorithm.aggregates else job.state.own_params
        ctx = ClientContext(global_params=start, server_control=shared.server_control)
        common = (self.task, self.model, self.pad_id, job.items, cfg, shared.round, pid, shared.lr,
                  self.algorithm, ctx, job.state, self.device)
        spend = None
        if job.dp_sgd is not None:
            out = train_party_dp(*common, job.dp_sgd)
            result, spend = out.result, (out.noise_multiplier, out.sample_rate, out.steps)
        else:
            result = train_party(*common)
        if self.algorithm.aggregates:
            plain = party_input(result, self.layout, job.weight)
            data = shared.privacy.party_input(plain.delta, plain.control_delta, plain.weight)
            self.inputs[pid] = (data, decode_material(self.protocol, job.material))
        return TrainReply(pid, result.client_state, result.train_loss, spend, self.node_id, self.incarnation)

    def held(self, r: int) -> list[str]:
        return sorted(self.inputs) if self.round == r else []

    def open(self, ctx: RoundContext) -> None:
        self._enter(ctx.round)
        self.sessions = {pid: self.protocol.party(ctx, pid, data, material)
                         for pid, (data, material) in self.inputs.items()}

    def stage(self, r: int, messages: Mapping[str, Message], crash: bool = False) -> dict[str, Message | None | str]:
        """Every addressed party's answer; a party whose session is gone (restart) or that refuses
        the message (ProtocolError) is REFUSED: a dropout, exactly as over the network."""
        if crash:
            os._exit(1)  # the fault-injection hook, mid-protocol
        out: dict[str, Message | None | str] = {}
        for pid, msg in messages.items():
            session = self.sessions.get(pid) if self.round == r else None
            if session is None:
                out[pid] = REFUSED
                continue
            try:
                out[pid] = session.handle(msg)
            except ProtocolError:
                out[pid] = REFUSED
        return out

    def close(self, r: int) -> None:
        if self.round == r:
            self.inputs, self.sessions = {}, {}
