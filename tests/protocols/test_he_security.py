"""`he`: the server holds no secret key, and bad ciphertexts drop their sender without stopping the
round."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import tenseal.sealapi as seal

from securefed.protocols.base import Message, PartyInput, ProtocolAbort, ProtocolError, RoundContext
from securefed.protocols.driver import run_round
from securefed.protocols.he import HE, HEConfig, framing
from securefed.protocols.he.single_key import kits
from securefed.protocols.he.single_key.context import Cipher, load_ciphertext
from securefed.protocols.he.sealio import check_blob

from test_he import PIDS, assert_matches_plain, make_inputs, plain_round

CTX = RoundContext("f", 3, PIDS, 2000, True, 100)


@pytest.fixture
def he() -> HE:  # per test: each party's round ledger lives in the protocol object
    return HE(HEConfig(mode="single_key", preset="n4096"))


@pytest.fixture(scope="module")
def kit():
    return HE(HEConfig(mode="single_key", preset="n4096")).provision(PIDS)


# -- the server cannot decrypt -------------------------------------------------------------------


def test_server_context_cannot_decrypt(he, kit):
    public, parties = kit
    cipher = Cipher(public, parties["a"].secret_key)
    ct = load_ciphertext(public, cipher.encrypt(np.arange(public.slots, dtype=np.float64)))
    server_side = kits.server_kit_from_bytes(kits.server_kit_bytes(public))
    # Everything the server has: parameters. A decryptor needs a secret key valid for them.
    with pytest.raises((ValueError, RuntimeError)):
        seal.Decryptor(server_side.context, seal.SecretKey())
    with pytest.raises((ValueError, RuntimeError)):
        seal.Decryptor(server_side.context, seal.KeyGenerator(server_side.context).secret_key()).decrypt(
            seal.Ciphertext(), seal.Plaintext()
        )
    # A key the server could make itself is a different key: decrypting yields noise, not data.
    own = Cipher(server_side, seal.KeyGenerator(server_side.context).secret_key())
    garbage = own.decrypt(ct)
    assert np.max(np.abs(garbage - np.arange(public.slots))) > 1e6
    assert not hasattr(server_side, "secret_key") and not hasattr(server_side, "secret_key_bytes")


def test_server_artefacts_hold_no_secret_key(kit, tmp_path):
    public, parties = kit
    sk = parties["a"].secret_key_bytes
    server_bytes = kits.write_server_kit(public, tmp_path / "server.hekit").read_bytes()
    # A secret key is N coefficients (here 4096 x 8 bytes); the whole server file is tiny.
    assert len(sk) > 16_000 and len(server_bytes) < 1024
    assert all(sk[i : i + 32] not in server_bytes for i in range(0, len(sk) - 32, 32))
    # And the server reader refuses a party kit dropped into its folder.
    with pytest.raises(ValueError, match="server kit"):
        kits.server_kit_from_bytes(kits.party_kit_bytes(parties["a"]))
    forged = kits._pack(kits.ROLE_SERVER, public, sk)
    with pytest.raises(ValueError, match="secret key"):
        kits.server_kit_from_bytes(forged)


def test_what_travels_to_the_server_is_not_the_secret(he, kit):
    """No message the server receives in a round contains the secret key bytes."""
    public, parties = kit
    sk = parties["a"].secret_key_bytes
    server = he.server(CTX, public)
    inputs = make_inputs(CTX)
    sessions = {p: he.party(CTX, p, inputs[p], parties[p]) for p in PIDS}
    replies = {p: sessions[p].handle(m) for p, m in server.start().items()}
    blob = b"".join(r.payload for r in replies.values())
    assert all(sk[i : i + 32] not in blob for i in range(0, len(sk) - 32, 256))


# -- bad input: dropped, round continues -----------------------------------------------------------


@dataclass
class Tamper:
    """Wraps a protocol so that `victim`'s he/input reply is rewritten by `edit`."""

    inner: HE
    victim: str
    edit: Callable[[bytes], bytes]

    def provision(self, party_ids):
        return self.inner.provision(party_ids)

    def server(self, ctx, material):
        return self.inner.server(ctx, material)

    def party(self, ctx, pid, data, material):
        session = self.inner.party(ctx, pid, data, material)
        if pid != self.victim:
            return session
        edit = self.edit

        class Edited:
            def handle(self, message: Message):
                reply = session.handle(message)
                if message.stage == "he/input":
                    return Message(reply.stage, edit(reply.payload))
                return reply

        return Edited()


HEADER = struct.calcsize("<4sBB16sQ")


def split(payload: bytes) -> tuple[bytes, list[bytes]]:
    """INPUT message -> (header, ciphertext blobs)."""
    (n,) = struct.unpack_from("<I", payload, HEADER)
    pos, blobs = HEADER + 4, []
    for _ in range(n):
        (ln,) = struct.unpack_from("<I", payload, pos)
        blobs.append(payload[pos + 4 : pos + 4 + ln])
        pos += 4 + ln
    return payload[:HEADER], blobs


def join(head: bytes, blobs: list[bytes]) -> bytes:
    return head + struct.pack("<I", len(blobs)) + b"".join(framing.blobs(blobs))


def foreign_ciphertexts(config: HEConfig, keep_key_id: bytes) -> Callable[[bytes], bytes]:
    """Replace every ciphertext with one from an independently provisioned context."""
    other_he = HE(config)
    other_public, other_parties = other_he.provision(PIDS)
    cipher = Cipher(other_public, other_parties["a"].secret_key)

    def edit(payload: bytes) -> bytes:
        head, blobs = split(payload)
        fresh = [cipher.encrypt(np.ones(other_public.slots)) for _ in blobs]
        return join(head[:6] + keep_key_id + head[22:], fresh)

    return edit


def first_blob(edit_blob: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def edit(payload: bytes) -> bytes:
        head, blobs = split(payload)
        return join(head, [edit_blob(blobs[0])] + blobs[1:])

    return edit


BAD_INPUTS = {
    "truncated message": lambda p: p[:-100],
    "oversized message": lambda p: p + b"\0" * 64,
    "truncated ciphertext": first_blob(lambda b: b[: len(b) // 2]),
    "ciphertext with a byte flipped in its SEAL header": first_blob(lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:]),
    "oversized ciphertext": first_blob(lambda b: b + b"\0" * 200_000),
    "one ciphertext too few": lambda p: (lambda h, bl: join(h, bl[:-1]))(*split(p)),
    "one ciphertext too many": lambda p: (lambda h, bl: join(h, bl + bl[:1]))(*split(p)),
    "wrong key id (another provisioning)": lambda p: p[:6] + bytes(16) + p[22:],
    "wrong round": lambda p: p[:22] + struct.pack("<Q", 99) + p[30:],
    "empty": lambda p: b"",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_drops_sender_round_continues(he, kit, case):
    inputs = make_inputs(CTX, seed=11)
    result, _ = run_round(Tamper(he, "b", BAD_INPUTS[case]), CTX, inputs, *kit)
    assert result.contributors == ("a", "c", "d")
    assert_matches_plain(result, plain_round(CTX, inputs, {"b": ""}))


def test_ciphertexts_from_another_parameter_set_are_dropped(he, kit):
    """Same key id forged, ciphertexts from N=8192: SEAL's parameter check rejects them."""
    public, _ = kit
    inputs = make_inputs(CTX, seed=12)
    edit = foreign_ciphertexts(HEConfig(mode="single_key", preset="n8192"), public.key_id)
    result, _ = run_round(Tamper(he, "b", edit), CTX, inputs, *kit)
    assert result.contributors == ("a", "c", "d")
    assert_matches_plain(result, plain_round(CTX, inputs, {"b": ""}))


def test_party_with_another_kit_is_dropped(he, kit):
    """A party using a kit from another provisioning (honest misconfiguration): key id mismatch."""
    public, parties = kit
    _, stale = he.provision(PIDS)
    inputs = make_inputs(CTX, seed=13)
    result, _ = run_round(he, CTX, inputs, public, {**parties, "b": stale["b"]})
    assert result.contributors == ("a", "c", "d")
    assert_matches_plain(result, plain_round(CTX, inputs, {"b": ""}))


def test_upload_replaced_in_transit_is_dropped(he, kit):
    """Same parameters, another key, forged key id: the upload no longer carries b's signature, so
    the server drops b (and the decryptor would refuse it); the round completes without b."""
    public, _ = kit
    edit = foreign_ciphertexts(HEConfig(mode="single_key", preset="n4096"), public.key_id)
    inputs = make_inputs(CTX)
    result, _ = run_round(Tamper(he, "b", edit), CTX, inputs, *kit)
    assert result.contributors == ("a", "c", "d")
    assert_matches_plain(result, plain_round(CTX, inputs, {"b": ""}))


def test_zstd_bomb_header_is_refused():
    """A blob declaring more inflated content than a ciphertext can have never reaches SEAL."""
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0x80]) + struct.pack("<I", 1 << 30) + bytes([1, 0, 0])
    blob = struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 0, 2, 0, 16 + len(frame)) + frame
    with pytest.raises(ProtocolError):
        check_blob(blob, 200_000)


def test_bad_decryption_reply_aborts_no_second_decryptor(he, kit):
    public, parties = kit
    inputs = make_inputs(CTX, seed=14)
    server = he.server(CTX, public)
    sessions = {p: he.party(CTX, p, inputs[p], parties[p]) for p in PIDS}
    outbound = server.step({p: sessions[p].handle(m) for p, m in server.start().items()})
    (first, request), = outbound.items()
    assert first == public.decryptor(CTX.round)
    bogus = framing.encode_result(public.key_id, CTX.round, framing.STATUS_OK,
                                  np.full(server.layout.n_ct * public.slots, 1 << 45, dtype=np.int64))
    with pytest.raises(ProtocolAbort, match="decryptor"):
        server.step({first: Message("he/decrypt", bogus)})
    # and every other party refuses to decrypt this round, whatever it is sent
    for pid in PIDS:
        if pid != first:
            with pytest.raises(ProtocolError):
                sessions[pid].handle(request)


def test_decryptor_refuses_a_single_upload_as_a_sum_and_a_sum_without_it(he, kit):
    """The v1 attacks: one party's upload presented as a two-party sum, and a sum that omits the
    decryptor. The decryptor re-sums signed uploads itself and needs its own among them."""
    public, parties = kit
    inputs = make_inputs(CTX, seed=15)
    server = he.server(CTX, public)
    sessions = {p: he.party(CTX, p, inputs[p], parties[p]) for p in PIDS}
    uploads = {p: sessions[p].handle(m).payload for p, m in server.start().items()}
    dec = public.decryptor(CTX.round)
    other = next(p for p in PIDS if p != dec)
    head = framing.header(framing.KIND_DECRYPT, public.key_id, CTX.round)
    fake_pair = tuple(sorted((dec, other)))
    # the other party's upload twice (under both names): the copy under our name is not our upload
    twice = head + framing.encode_ids(fake_pair) + b"".join(framing.blobs([uploads[other], uploads[other]]))
    with pytest.raises(ProtocolError):
        sessions[dec].handle(Message("he/decrypt", twice))
    rest = tuple(p for p in PIDS if p != dec)
    without = head + framing.encode_ids(rest) + b"".join(framing.blobs([uploads[p] for p in rest]))
    session2 = HE(he.config).party(CTX, dec, inputs[dec], parties[dec])
    session2.handle(Message("he/input", b""))
    with pytest.raises(ProtocolError):
        session2.handle(Message("he/decrypt", without))


def test_party_rejects_decrypt_request_for_too_few_contributors(he, kit):
    public, parties = kit
    session = he.party(CTX, "a", make_inputs(CTX)["a"], parties["a"])
    session.handle(Message("he/input", b""))
    request = framing.header(framing.KIND_DECRYPT, public.key_id, CTX.round) + framing.encode_ids(("a",))
    with pytest.raises(ProtocolError):
        session.handle(Message("he/decrypt", request + struct.pack("<I", 0)))
