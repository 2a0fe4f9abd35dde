"""secagg end to end: exact sums under dropouts, agreement with plain, tampering, aborts, guards."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import chisquare

from securefed.protocols import registry
from securefed.protocols.base import Message, PartyInput, ProtocolAbort, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.encoding import unpack_ring
from securefed.protocols.secagg import SecAgg, SecAggConfig, frames
from securefed.protocols.secagg.frames import Direction, Stage
from securefed.protocols.secagg.party import KIND_PAIRWISE, KIND_SELF_MASK
from securefed.protocols.secagg.plan import build_plan
from securefed.protocols.secagg.primitives import ed25519_private, roster_seed

from _protocol_helpers import TestRng

ADV, SHARE, MASKED, CONS, UNMASK = (frames.STAGE_NAMES[s] for s in Stage)


def make_round(n: int, m: int = 48, control: bool = False, cfg: SecAggConfig | None = None, seed: bytes = b"r",
               round_: int = 1, grid: bool = True):
    """Inputs on the fixed-point grid (multiples of clip / 2^p) make stochastic rounding exact, so
    the secagg sum must equal the exact sum bit for bit."""
    cfg = cfg or SecAggConfig(precision_bits=10)
    ids = tuple(f"p{i:02d}" for i in range(n))
    ctx = RoundContext("fed-test", round_, ids, m, control, 8)
    rng = TestRng(seed)
    ints = np.frombuffer(rng(8 * n * m), "<u2").astype(np.int64).reshape(n, 4 * m) % 2048 - 1024
    step = cfg.clip / 2**cfg.precision_bits
    cstep = cfg.control_clip / 2**cfg.precision_bits
    inputs = {}
    for i, pid in enumerate(ids):
        d = (ints[i, :m] * step).astype(np.float32)
        c = (ints[i, m : 2 * m] * cstep).astype(np.float32) if control else None
        if not grid:
            d = (d + np.float32(step / 3)).astype(np.float32)
        inputs[pid] = PartyInput(d, c, float(1 + i % 8))
    proto = SecAgg(cfg, rng=TestRng(seed + b"/protocol"))
    sm, pm = proto.provision(ids)
    return proto, ctx, inputs, sm, pm


def exact_sums(inputs, contributors):
    delta = sum(inputs[p].weight * inputs[p].delta.astype(np.float64) for p in contributors)
    control = None
    if inputs[contributors[0]].control_delta is not None:
        control = sum(inputs[p].control_delta.astype(np.float64) for p in contributors)
    return delta, control, float(sum(inputs[p].weight for p in contributors))


Hook = Callable[[str, str, bytes], bytes | None]


def run_manual(proto, ctx, inputs, sm, pm, drop_at=None, to_party: Hook | None = None,
               from_party: Hook | None = None, parties=None):
    """The driver's loop with hooks that rewrite bytes on the wire (None from a hook drops it)."""
    drop_at = drop_at or {}
    server = proto.server(ctx, sm)
    parties = parties or {pid: proto.party(ctx, pid, inputs[pid], pm[pid]) for pid in ctx.party_ids}
    dropped: set[str] = set()
    seen: dict[str, set[str]] = {}
    outbound = server.start()
    while not server.done:
        replies = {}
        for pid, msg in outbound.items():
            seen.setdefault(msg.stage, set()).add(pid)
            if pid in dropped or drop_at.get(pid) == msg.stage:
                dropped.add(pid)
                continue
            payload = to_party(msg.stage, pid, msg.payload) if to_party else msg.payload
            try:
                reply = parties[pid].handle(Message(msg.stage, payload))
            except ProtocolError:
                dropped.add(pid)
                continue
            out = from_party(reply.stage, pid, reply.payload) if from_party else reply.payload
            if out is not None:
                replies[pid] = Message(reply.stage, out)
        outbound = server.step(replies)
    return server.result(), dropped, seen


def assert_exact(result, inputs) -> None:
    delta, control, weight = exact_sums(inputs, result.contributors)
    np.testing.assert_array_equal(result.delta_sum, delta)
    if control is not None:
        np.testing.assert_array_equal(result.control_sum, control)
    assert result.total_weight == weight


def flip(payload: bytes, pos: int = -70) -> bytes:
    b = bytearray(payload)
    b[pos] ^= 0x01
    return bytes(b)


# --- correctness ------------------------------------------------------------------------------


@pytest.mark.parametrize("control", [False, True])
def test_matches_plain_within_quantization_bound(control: bool) -> None:
    cfg = SecAggConfig(clip=0.5, control_clip=0.25, precision_bits=14)
    proto, ctx, inputs, sm, pm = make_round(9, m=200, control=control, cfg=cfg, grid=False)
    secagg = registry.create("secagg", cfg)  # OS CSPRNG for round keys; materials from make_round
    got, traffic = run_round(secagg, ctx, inputs, sm, pm, drop_at={"p03": MASKED, "p05": UNMASK})
    plain = registry.create("plain")
    ps, ppm = plain.provision(ctx.party_ids)
    ref, _ = run_round(plain, ctx, {p: inputs[p] for p in got.contributors}, ps, ppm)
    assert got.contributors == ref.contributors == tuple(p for p in ctx.party_ids if p != "p03")
    bound = build_plan(ctx, cfg, roster_seed(sm.identity_keys)).codec.error_bound(len(got.contributors))
    assert got.stats["error_bound"] == bound
    assert np.max(np.abs(got.delta_sum - ref.delta_sum)) <= bound
    assert got.total_weight == ref.total_weight
    if control:
        assert np.max(np.abs(got.control_sum - ref.control_sum)) <= len(got.contributors) * 0.25 / 2**14
    else:
        assert got.control_sum is None
    assert got.stats["clipped_fraction"] == 0.0 and got.stats["recovered_dropouts"] == 1
    assert got.stats["upload_expansion_vs_fp32"] < 1.0
    assert traffic.stages == [ADV, SHARE, MASKED, CONS, UNMASK]


def test_clipped_fraction_is_reported() -> None:
    proto, ctx, inputs, sm, pm = make_round(4, m=10)
    inputs = dict(inputs)
    inputs["p00"] = replace(inputs["p00"], delta=np.full(10, 5.0, np.float32))  # all beyond clip=1
    got, _ = run_round(proto, ctx, inputs, sm, pm)
    assert got.stats["clipped_fraction"] == pytest.approx(10 / 40)


a_stage = st.sampled_from([ADV, SHARE, MASKED, CONS, UNMASK])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(4, 11), sparse=st.booleans(), control=st.booleans(), frac=st.sampled_from([0.51, 0.51, 2 / 3, 1.0]),
       drops=st.lists(st.tuples(st.integers(0, 10), a_stage), max_size=4), seed=st.binary(min_size=1, max_size=4))
def test_exact_sum_under_random_dropouts(n, sparse, control, frac, drops, seed) -> None:
    cfg = SecAggConfig(graph="sparse" if sparse else "complete", neighbours=4 if sparse else None,
                       threshold_fraction=frac, precision_bits=10)
    proto, ctx, inputs, sm, pm = make_round(n, m=16, control=control, cfg=cfg, seed=seed)
    plan = build_plan(ctx, cfg, roster_seed(sm.identity_keys))
    drop_at = {ctx.party_ids[i % n]: s for i, s in drops}
    try:
        result, _ = run_round(proto, ctx, inputs, sm, pm, drop_at)
    except ProtocolAbort:
        # allowed only if some party could lose more than k - t neighbours
        assert len(drop_at) > plan.k - plan.threshold
        event(f"aborted with {len(drop_at)} dropouts, n={n}, k={plan.k}, t={plan.threshold}")
        return
    event(f"completed with {len(drop_at)} dropouts, n={n}, k={plan.k}, t={plan.threshold}")
    assert_exact(result, inputs)
    sent_input = {p for p in ctx.party_ids if drop_at.get(p) not in (ADV, SHARE, MASKED)}
    assert set(result.contributors) <= sent_input
    if len(drop_at) <= plan.k - plan.threshold:  # nobody can fall below t live neighbours
        assert set(result.contributors) == sent_input


@pytest.mark.parametrize("precision", [26, 30, 36])  # rings of 33, 37 (split masks) and 43 bits
def test_exact_sum_with_wide_rings_and_a_dropout(precision: int) -> None:
    cfg = SecAggConfig(precision_bits=precision)
    proto, ctx, inputs, sm, pm = make_round(5, m=24, cfg=cfg)
    assert build_plan(ctx, cfg, roster_seed(sm.identity_keys)).codec.bits in (33, 37, 43)
    result, _ = run_round(proto, ctx, inputs, sm, pm, {"p02": MASKED})
    assert result.contributors == ("p00", "p01", "p03", "p04")
    assert_exact(result, inputs)


@pytest.mark.parametrize("graph", ["complete", "sparse"])
def test_dropouts_at_every_stage_at_once(graph: str) -> None:
    cfg = (SecAggConfig(graph="sparse", neighbours=8, threshold=5, precision_bits=10) if graph == "sparse"
           else SecAggConfig(graph="complete", threshold_fraction=0.51, precision_bits=10))  # k=13, t=7
    proto, ctx, inputs, sm, pm = make_round(14, m=32, control=True, cfg=cfg)
    drop_at = {"p00": ADV, "p03": SHARE, "p06": MASKED}
    if graph == "complete":  # k = 13 leaves room for two more
        drop_at.update({"p09": CONS, "p12": UNMASK})
    result, traffic = run_round(proto, ctx, inputs, sm, pm, drop_at)
    assert set(result.contributors) == set(ctx.party_ids) - {"p00", "p03", "p06"}
    assert result.stats["recovered_dropouts"] == 1  # p06 shared keys, then vanished
    assert_exact(result, inputs)


def test_deterministic_under_a_fixed_rng() -> None:
    logs = []
    for _ in range(2):
        proto, ctx, inputs, sm, pm = make_round(5)
        log: list[bytes] = []
        run_manual(proto, ctx, inputs, sm, pm, from_party=lambda s, p, b: log.append(b) or b)
        logs.append(log)
    assert logs[0] == logs[1]


def test_masked_input_is_uniform() -> None:
    """A single party's masked upload of a constant vector: its bytes pass a chi-square test."""
    proto, ctx, inputs, sm, pm = make_round(4, m=40_000)
    inputs = {p: replace(x, delta=np.zeros(40_000, np.float32)) for p, x in inputs.items()}
    captured: dict[str, bytes] = {}

    def grab(stage: str, pid: str, payload: bytes) -> bytes:
        if stage == MASKED and pid == "p01":
            captured["y"] = payload
        return payload

    run_manual(proto, ctx, inputs, sm, pm, from_party=grab)
    codec = build_plan(ctx, proto.config, roster_seed(sm.identity_keys)).codec
    fields = frames.decode(build_plan(ctx, proto.config, roster_seed(sm.identity_keys)).binding, Stage.MASKED, Direction.FROM_PARTY,
                           captured["y"][:-64])
    ring = unpack_ring(fields[1], codec.bits, codec.length)[:40_000]
    low_bytes = (ring & np.uint64(0xFF)).astype(np.int64)  # the low byte of each b-bit element
    assert chisquare(np.bincount(low_bytes, minlength=256)).pvalue > 1e-4
    packed = np.frombuffer(fields[1][: 40_000 * codec.bits // 8], np.uint8)
    assert chisquare(np.bincount(packed, minlength=256)).pvalue > 1e-4
    assert np.unique(codec.encode(inputs["p01"].delta, None, 1.0, TestRng())[:40_000]).size == 1  # unmasked: constant


# --- tampering, replay, wrong round -----------------------------------------------------------


def test_tampered_ciphertext_drops_the_recipient_and_round_completes() -> None:
    proto, ctx, inputs, sm, pm = make_round(7)
    errors: list[str] = []
    party = proto.party(ctx, "p02", inputs["p02"], pm["p02"])
    orig = party.handle

    def handle(msg):
        try:
            return orig(msg)
        except ProtocolError as e:
            errors.append(str(e))
            raise

    party.handle = handle
    parties = {pid: (party if pid == "p02" else proto.party(ctx, pid, inputs[pid], pm[pid])) for pid in ctx.party_ids}
    hook = lambda s, p, b: flip(b, -3) if (s == MASKED and p == "p02") else b  # last sealed share's tag
    result, dropped, _ = run_manual(proto, ctx, inputs, sm, pm, to_party=hook, parties=parties)
    assert dropped == {"p02"} and errors == ["invalid message"]  # one opaque error
    assert "p02" not in result.contributors and len(result.contributors) == 6
    assert_exact(result, inputs)


@pytest.mark.parametrize("stage", [ADV, SHARE, MASKED, CONS, UNMASK])
def test_tampered_reply_is_handled_as_dropped(stage: str) -> None:
    proto, ctx, inputs, sm, pm = make_round(7)
    hook = lambda s, p, b: flip(b, 60) if (s == stage and p == "p04") else b
    result, _, _ = run_manual(proto, ctx, inputs, sm, pm, from_party=hook)
    assert_exact(result, inputs)
    assert ("p04" in result.contributors) == (stage in (CONS, UNMASK))  # dropped after its input was in


def test_tampered_relayed_signature_drops_the_recipient() -> None:
    proto, ctx, inputs, sm, pm = make_round(6)
    result, dropped, _ = run_manual(proto, ctx, inputs, sm, pm,
                                    to_party=lambda s, p, b: flip(b, -1) if (s == SHARE and p == "p01") else b)
    assert dropped == {"p01"} and "p01" not in result.contributors
    assert_exact(result, inputs)


def test_wrong_length_correctly_signed_is_rejected() -> None:
    proto, ctx, inputs, sm, pm = make_round(6)
    plan = build_plan(ctx, proto.config, roster_seed(sm.identity_keys))
    sign = ed25519_private(pm["p03"].signing_key).sign

    def truncate(stage: str, pid: str, payload: bytes) -> bytes:
        if stage != MASKED or pid != "p03":
            return payload
        fields = frames.decode(plan.binding, Stage.MASKED, Direction.FROM_PARTY, payload[:-64])
        frame = frames.encode(plan.binding, Stage.MASKED, Direction.FROM_PARTY, [fields[0], fields[1][:-1]])
        return frames.sign(sign, frame)

    result, _, _ = run_manual(proto, ctx, inputs, sm, pm, from_party=truncate)
    assert "p03" not in result.contributors
    assert_exact(result, inputs)


def test_message_from_another_round_is_rejected() -> None:
    proto, ctx1, inputs, sm, pm = make_round(5, round_=1)
    old: dict[str, bytes] = {}
    run_manual(proto, ctx1, inputs, sm, pm, from_party=lambda s, p, b: old.setdefault(s + p, b))
    ctx2 = replace(ctx1, round=2)
    result, _, _ = run_manual(proto, ctx2, inputs, sm, pm,
                              from_party=lambda s, p, b: old[s + p] if (s == ADV and p == "p00") else b)
    assert "p00" not in result.contributors
    assert_exact(result, inputs)


def test_replayed_messages_are_rejected() -> None:
    proto, ctx, inputs, sm, pm = make_round(5)
    server = proto.server(ctx, sm)
    party = proto.party(ctx, "p00", inputs["p00"], pm["p00"])
    first = server.start()["p00"]
    reply = party.handle(first)
    with pytest.raises(ProtocolError, match="^invalid message$"):
        party.handle(first)  # replay to the party: refused, and the party is finished
    # a party's reply replayed as its answer to a later stage is dropped by the server
    proto2, ctx2, inputs2, sm2, pm2 = make_round(5)
    old: dict[str, bytes] = {}

    def replay(stage: str, pid: str, payload: bytes) -> bytes:
        old.setdefault(stage + pid, payload)
        return old[ADV + pid] if (stage == SHARE and pid == "p02") else payload

    result, _, _ = run_manual(proto2, ctx2, inputs2, sm2, pm2, from_party=replay)
    assert "p02" not in result.contributors and reply.stage == ADV
    assert_exact(result, inputs2)


# --- thresholds and the double-reveal guard ---------------------------------------------------


def test_below_threshold_aborts_before_anything_is_revealed() -> None:
    proto, ctx, inputs, sm, pm = make_round(5)  # complete graph, k = 4, t = 3
    with pytest.raises(ProtocolAbort):
        run_round(proto, ctx, inputs, sm, pm, drop_at={"p00": MASKED, "p01": MASKED, "p02": MASKED})
    seen: dict[str, set[str]] = {}
    with pytest.raises(ProtocolAbort):
        server = proto.server(ctx, sm)
        parties = {pid: proto.party(ctx, pid, inputs[pid], pm[pid]) for pid in ctx.party_ids}
        out = server.start()
        while not server.done:
            seen.setdefault(next(iter(out.values())).stage, set())
            out = server.step({p: parties[p].handle(m) for p, m in out.items()
                               if not (m.stage == CONS and p in ("p00", "p01"))})
    assert UNMASK not in seen  # the abort came before any party was asked for shares


def test_sparse_party_with_too_few_neighbours_aborts() -> None:
    cfg = SecAggConfig(graph="sparse", neighbours=4, threshold=3, precision_bits=10)
    proto, ctx, inputs, sm, pm = make_round(10, cfg=cfg)
    victim = "p00"
    nbrs = sorted(build_plan(ctx, cfg, roster_seed(sm.identity_keys)).neighbours(victim))
    with pytest.raises(ProtocolAbort):  # victim's input is in, but 2 of its 4 holders vanish
        run_round(proto, ctx, inputs, sm, pm, drop_at={nbrs[0]: CONS, nbrs[1]: CONS})


def _through_consistency(n: int = 5):
    proto, ctx, inputs, sm, pm = make_round(n)
    server = proto.server(ctx, sm)
    parties = {pid: proto.party(ctx, pid, inputs[pid], pm[pid]) for pid in ctx.party_ids}
    out = server.start()
    for _ in range(4):  # advertise, share, masked, consistency
        out = server.step({p: parties[p].handle(m) for p, m in out.items()})
    return proto, ctx, parties, out, sm


def test_party_refuses_unmask_for_a_different_survivor_set() -> None:
    proto, ctx, parties, out, sm = _through_consistency()
    plan = build_plan(ctx, proto.config, roster_seed(sm.identity_keys))
    fields = frames.decode(plan.binding, Stage.UNMASK, Direction.TO_PARTY, out["p00"].payload)
    forged = frames.encode(plan.binding, Stage.UNMASK, Direction.TO_PARTY,
                           [fields[0], frames.pack_ids(["p00", "p01", "p02", "p03"]), *fields[2:]])
    with pytest.raises(ProtocolError):  # p04 "dropped": its pairwise share would join its b share
        parties["p00"].handle(Message(UNMASK, forged))


def test_party_never_reveals_both_shares_of_a_peer() -> None:
    proto, ctx, parties, out, _ = _through_consistency()
    party = parties["p00"]
    party.handle(out["p00"])  # reveals b shares of all survivors
    with pytest.raises(ProtocolError):
        party._reveal("p01", KIND_PAIRWISE)
    with pytest.raises(ProtocolError):  # and a replayed unmask request is refused outright
        party.handle(out["p00"])
    assert party._revealed == {p: KIND_SELF_MASK for p in ("p01", "p02", "p03", "p04")}


# --- configuration ----------------------------------------------------------------------------


def test_config_defaults_and_validation_name_the_field() -> None:
    cfg = SecAggConfig()
    assert cfg.graph == "auto" and cfg.threshold is None and cfg.precision_bits == 16
    assert cfg.resolve(1000) == ("sparse", 30, 20)
    assert cfg.resolve(10) == ("complete", 9, 6)
    for bad, field in [({"threshold": 1}, "threshold"), ({"neighbours": 10, "threshold": 5}, "threshold"),
                       ({"threshold_fraction": 0.5}, "threshold_fraction"), ({"clip": 0}, "clip"),
                       ({"clip": float("inf")}, "clip"), ({"precision_bits": 64}, "precision_bits"),
                       ({"graph": "ring"}, "graph"), ({"bogus": 1}, "bogus")]:
        with pytest.raises(ValidationError, match=field):
            SecAggConfig(**bad)
    with pytest.raises(ValueError, match="threshold"):
        SecAggConfig(threshold=9).resolve(5)
    with pytest.raises(ValueError, match="party_ids"):
        SecAggConfig().resolve(2)
    with pytest.raises(ValueError, match="max_parties"):
        SecAggConfig(max_parties=10).resolve(11)
    assert isinstance(registry.create("secagg", {"clip": 2.0}), SecAgg)
    assert "secagg" in registry.names()
