"""Server side of threshold `he`: sum the uploads, collect every contributor's signed attestation
of the c1 sum (dropping and re-attesting without anyone who does not answer or lies), hand the
checked sum to the contributors for partial decryption, recover the missing parties' key shares
from t Shamir shares (dropouts at decryption), and decode. The server holds no key share; it can
add ciphertexts, check attestations against the uploads it has, and nothing else.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from securefed.protocols.base import Message, ProtocolAbort, ProtocolError, RoundContext, VectorSum
from securefed.protocols.encoding import WEIGHT_FRAC_BITS, to_ring
from securefed.protocols.he import framing, rlwe
from securefed.protocols.he.threshold import layout as tr
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.threshold.keys import ThresholdPublic
from securefed.protocols.he.threshold.party import ATTEST_STAGE, DECRYPT_STAGE, INPUT_STAGE, RECOVER_STAGE


class ThresholdServer:
    def __init__(self, ctx: RoundContext, material: ThresholdPublic, config: HEConfig) -> None:
        if not isinstance(material, ThresholdPublic):
            raise TypeError("threshold he server material must be a ThresholdPublic")
        self.ctx, self.public, self.config = ctx, material, config
        self.layout = tr.TLayout.for_round(ctx, config, material)
        self._stage = "input"
        self._uploads: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # pid -> (c0, c1)
        self._ids: tuple[str, ...] = ()
        self._c1_packed = b""
        self._c0_sum: np.ndarray | None = None
        self._partials: dict[str, np.ndarray] = {}
        self._result: VectorSum | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def result(self) -> VectorSum:
        if self._result is None:
            raise ProtocolAbort("round not finished")
        return self._result

    def max_reply_bytes(self) -> int:
        """The largest well-formed reply to the current stage (transport hook: anything bigger is
        dropped before it is buffered)."""
        lay, slack = self.layout, 1024
        if self._stage == "input":
            return 2 * lay.elems_bytes + slack
        if self._stage == "attest":
            return lay.evals_bytes + tr.SIG_LEN + slack
        return lay.elems_bytes + slack  # he/decrypt, he/recover: one ring element per ciphertext

    def start(self) -> dict[str, Message]:
        return {pid: Message(INPUT_STAGE, b"") for pid in self.ctx.party_ids}

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        handler = {"input": self._collect_inputs, "attest": self._collect_attests,
                   "decrypt": self._collect_partials, "recover": self._collect_recovery}.get(self._stage)
        if handler is None:
            raise ProtocolAbort("round already finished")
        return handler(replies)

    def _body(self, msg: Message | None, stage: str, kind: int) -> framing.Reader:
        if msg is None or msg.stage != stage:
            raise ProtocolError("unexpected stage")
        return framing.Reader(msg.payload, kind, self.public.key_id, self.ctx.round)

    # -- he/input, he/attest -----------------------------------------------------------------

    def _collect_inputs(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        lay = self.layout
        for pid in self.ctx.party_ids:
            try:
                r = self._body(replies.get(pid), INPUT_STAGE, tr.KIND_TINPUT)
                c0, c1 = lay.unpack(r.take(lay.elems_bytes)), lay.unpack(r.take(lay.elems_bytes))
                r.end()
            except ProtocolError:
                continue  # treated as dropped
            self._uploads[pid] = (c0, c1)
        return self._ask_attest(tuple(sorted(self._uploads)))

    def _ask_attest(self, ids: tuple[str, ...]) -> dict[str, Message]:
        if len(ids) < self.config.min_contributors:
            raise ProtocolAbort(f"{len(ids)} parties contributed, he needs min_contributors={self.config.min_contributors}")
        ring = self.layout.ring
        c0, c1 = (x.copy() for x in self._uploads[ids[0]])
        for pid in ids[1:]:
            ring.add_to(c0, self._uploads[pid][0])
            ring.add_to(c1, self._uploads[pid][1])
        self._ids, self._c0_sum, self._c1_packed = ids, c0, self.layout.pack(c1)
        self._stage = "attest"
        body = framing.header(tr.KIND_ATTEST, self.public.key_id, self.ctx.round) + framing.encode_ids(ids) + tr.sum_hash(self._c1_packed)
        return {pid: Message(ATTEST_STAGE, body) for pid in ids}

    def _collect_attests(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        lay, ring = self.layout, self.layout.ring
        script = tr.transcript(self.public, self.ctx, self._ids, tr.sum_hash(self._c1_packed))
        alpha, beta = rlwe.challenge(ring, script, lay.n_ct)
        good = {}
        for pid in self._ids:
            try:
                r = self._body(replies.get(pid), ATTEST_STAGE, tr.KIND_ATTESTED)
                evals, sig = bytes(r.take(lay.evals_bytes)), bytes(r.take(tr.SIG_LEN))
                r.end()
                Ed25519PublicKey.from_public_bytes(self.public.sign_pub(pid)).verify(sig, script + evals)
                # The server holds c1_j: an attestation that is not of it would fail every check.
                if not np.array_equal(tr.evals_from(lay, evals), rlwe.linear_hash(ring, self._uploads[pid][1], alpha, beta)):
                    raise ProtocolError("attestation does not match the upload")
            except (ProtocolError, InvalidSignature, ValueError):
                continue
            good[pid] = evals + sig
        if set(good) != set(self._ids):
            # Drop the silent or lying contributors and ask the rest again for the new sum.
            for pid in set(self._ids) - set(good):
                self._uploads.pop(pid, None)
            return self._ask_attest(tuple(sorted(good)))
        self._stage = "decrypt"
        body = b"".join([framing.header(tr.KIND_TDECRYPT, self.public.key_id, self.ctx.round),
                         framing.encode_ids(self._ids), self._c1_packed, *(good[pid] for pid in self._ids)])
        return {pid: Message(DECRYPT_STAGE, body) for pid in self._ids}

    # -- he/decrypt, he/recover ---------------------------------------------------------------

    def _read_share(self, msg: Message | None, stage: str, kind: int) -> np.ndarray:
        r = self._body(msg, stage, kind)
        x = self.layout.unpack(r.take(self.layout.elems_bytes))
        r.end()
        return x

    def _collect_partials(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        for pid in self._ids:
            try:
                self._partials[pid] = self._read_share(replies.get(pid), DECRYPT_STAGE, tr.KIND_PARTIAL)
            except ProtocolError:
                continue
        answered = tuple(sorted(self._partials))
        if len(answered) < self.public.threshold:
            raise ProtocolAbort(f"{len(answered)} partial decryptions, the key needs t={self.public.threshold}")
        missing = tuple(p for p in self.public.roster if p not in self._partials)
        if not missing:
            self._finish(list(self._partials.values()))
            return {}
        self._stage = "recover"
        body = (framing.header(tr.KIND_RECOVER, self.public.key_id, self.ctx.round)
                + framing.encode_ids(answered) + framing.encode_ids(missing))
        return {pid: Message(RECOVER_STAGE, body) for pid in answered}

    def _collect_recovery(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        shares = []
        for pid in sorted(self._partials):
            try:
                shares.append(self._read_share(replies.get(pid), RECOVER_STAGE, tr.KIND_RECOVERED))
            except ProtocolError:
                raise ProtocolAbort(f"party {pid!r} dropped during key recovery") from None
        self._finish(list(self._partials.values()) + shares)
        return {}

    def _finish(self, shares: list[np.ndarray]) -> None:
        lay, ring = self.layout, self.layout.ring
        x = self._c0_sum.copy()
        for d in shares:
            ring.add_to(x, d)
        digits = rlwe.decode_message(ring, x, lay.codec.bits, lay.k, lay.budget.delta_bits, lay.noise_bound)
        if digits is None:
            raise ProtocolAbort("the aggregate failed to decode (a corrupt upload or partial decryption)")
        dec = lay.codec.decode_sum(to_ring(digits[: lay.codec.length], lay.codec.bits))
        if not dec.total_weight > 0:
            raise ProtocolAbort("aggregate has no weight")
        n, m = len(self._ids), lay.codec.vector_len
        coords = n * m * (2 if lay.codec.has_control else 1)
        stats = {
            "protocol": "he", "mode": "threshold",
            "decryptors": tuple(sorted(self._partials)),
            "ciphertexts_per_party": lay.n_ct, "values_per_coeff": lay.k, "value_bits": lay.codec.bits,
            "clipped_fraction": (dec.clipped + dec.control_clipped) / coords,
            "error_bound": {"delta_sum": lay.codec.error_bound(n), "control_sum": n * lay.codec.control_step,
                            "total_weight": n * 0.5 / 2**WEIGHT_FRAC_BITS},
            "flood_bits": lay.budget.flood_bits, "stat_security": self.config.stat_security,
        }
        self._stage = "done"
        self._result = VectorSum(dec.delta_sum, dec.control_sum, dec.total_weight, self._ids, stats)
