"""Server side of threshold `he`: hand out the round's nonce, add the uploads, get the contributor
set C signed by a quorum, ask a decryptor set D for answers, decode. The server holds no key
share and never hands a party a ring element.

A decryptor that falls silent is replaced; when the answers of D do not decode (some member
answered garbage), the server asks the leave-one-out sets D \\ {j} in turn (re-decrypting the same
signed C reveals nothing new: docs/threat-model.md) and finishes with the first that decodes; j is
the culprit, named in the result's stats ("excluded") and kept in `suspects` (shared across the
federation's rounds: suspects are asked last from then on). D is the server's choice: any D of >= t
signers reveals the same (a_tau * S_C, smudged), and the parties' ledgers bound how many times.

Retries. Once the SIGN request for C has left, C is the only set the round can ever decrypt: every
party that signed it refuses any other set this round (ledger; a second set would give the server
the difference of two sums). So the set is remembered in `proposed` (round -> C, shared across the
federation's attempts, like `suspects`) and an attempt that fails after it (too few signatures or
decryptors, no decodable set) is retried once with the same C: every member uploads again (the same
pinned input), uploads from outside C are left out. When that retry cannot finish (a member of C
missing, or it fails too), the round is spent (RoundSpent: the coordinator skips it), so neither
churn nor one party can make a round's retries burn every attempt and stop the federation.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from securefed.protocols.base import Message, ProtocolAbort, ProtocolError, RoundContext, RoundSpent, VectorSum
from securefed.protocols.encoding import WEIGHT_FRAC_BITS, to_ring
from securefed.protocols.he import framing, rlwe
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.threshold import layout as tl
from securefed.protocols.he.threshold.keys import ThresholdPublic
from securefed.protocols.he.threshold.party import DECRYPT_STAGE, INPUT_STAGE, SIGN_STAGE


class ThresholdServer:
    def __init__(self, ctx: RoundContext, material: ThresholdPublic, config: HEConfig,
                 suspects: list[str] | None = None, rng=os.urandom,
                 proposed: dict[int, tuple[str, ...]] | None = None) -> None:
        if not isinstance(material, ThresholdPublic):
            raise TypeError("threshold he server material must be a ThresholdPublic")
        self.ctx, self.public, self.config = ctx, material, config
        self.layout = tl.TLayout.for_round(ctx, config, material)
        self.suspects = suspects if suspects is not None else []
        self.proposed = proposed if proposed is not None else {}
        for old in [r for r in self.proposed if r < ctx.round]:  # finished rounds: nothing to retry
            del self.proposed[old]
        self._pinned = self.proposed.get(ctx.round)  # C of an earlier attempt of this round, if one went out
        self._nonce = rng(tl.NONCE_LEN)
        self._stage = "input"
        self._c0_sum: np.ndarray | None = None
        self._ids: tuple[str, ...] = ()
        self._sigs: dict[str, bytes] = {}
        self._avail: list[str] = []  # signers not (yet) found silent, suspects last
        self._asked: tuple[str, ...] = ()
        self._queue: list[tuple[tuple[str, ...], str]] = []  # leave-one-out sets still to try, and who is left out
        self._left_out: str | None = None
        self._result: VectorSum | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def result(self) -> VectorSum:
        if self._result is None:
            raise ProtocolAbort("round not finished")
        return self._result

    def max_reply_bytes(self) -> int:
        """The largest well-formed reply to the current stage (transport hook)."""
        slack = 1024
        return tl.SIG_LEN + slack if self._stage == "sign" else self.layout.elems_bytes + slack

    def _head(self, kind: int) -> bytes:
        return framing.header(kind, self.public.key_id, self.ctx.round)

    def start(self) -> dict[str, Message]:
        return {pid: Message(INPUT_STAGE, self._head(tl.KIND_TINPUT) + self._nonce) for pid in self.ctx.party_ids}

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        handler = {"input": self._collect_uploads, "sign": self._collect_signatures,
                   "decrypt": self._collect_answers}.get(self._stage)
        if handler is None:
            raise ProtocolAbort("round already finished")
        try:
            return handler(replies)
        except RoundSpent:
            raise
        except ProtocolAbort as e:
            if self._pinned is None:
                raise  # retried; if C went out, the retry puts up C again
            raise RoundSpent(f"{e}; the retry of the round's signed contributor set failed too: round spent") from None

    def _body(self, msg: Message | None, stage: str, kind: int) -> framing.Reader:
        if msg is None or msg.stage != stage:
            raise ProtocolError("unexpected stage")
        return framing.Reader(msg.payload, kind, self.public.key_id, self.ctx.round)

    def _read_elems(self, msg: Message | None, stage: str, kind: int) -> np.ndarray:
        """A checked uint32 view of the message's ring elements (no copy)."""
        r = self._body(msg, stage, kind)
        x = self.layout.view(r.take(self.layout.elems_bytes))
        r.end()
        return x

    # -- he/input, he/sign --------------------------------------------------------------------

    def _collect_uploads(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        ids = []
        for pid in self.ctx.party_ids if self._pinned is None else self._pinned:
            try:
                c0 = self._read_elems(replies.get(pid), INPUT_STAGE, tl.KIND_UPLOAD)
            except ProtocolError:
                continue  # treated as dropped
            if self._c0_sum is None:
                self._c0_sum = c0.astype(np.uint64)
            else:
                self.layout.accumulate(self._c0_sum, c0)
            ids.append(pid)
        if self._pinned is not None and len(ids) < len(self._pinned):
            raise RoundSpent(f"{len(self._pinned) - len(ids)} of the {len(self._pinned)} contributors whose set an "
                             "earlier attempt put up for signature did not upload again, and only that set can "
                             "be decrypted this round: round spent")
        need = tl.contributors_floor(self.config, self.public.threshold, self.ctx.min_contributors)
        if len(ids) < need:
            raise ProtocolAbort(f"{len(ids)} parties contributed, threshold he needs {need} "
                                "(he min_contributors, t, sampling.min_round_size)")
        q = tl.quorum(len(self.public.roster), self.public.threshold)
        live = sum(p in replies for p in self.ctx.party_ids)  # a party silent now is a dropout: it will not sign
        if live < q:
            raise ProtocolAbort(f"{live} parties answered the input stage, fewer than the quorum of {q} "
                                "that must sign the contributor set: none put up (the round can be retried)")
        self._ids, self._stage = tuple(sorted(ids)), "sign"
        self.proposed[self.ctx.round] = self._ids  # from here on, the only set this round can decrypt
        body = self._head(tl.KIND_SIGN) + framing.encode_ids(self._ids)
        return {pid: Message(SIGN_STAGE, body) for pid in self.ctx.party_ids}

    def _collect_signatures(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        statement = tl.sign_statement(self.public, self.ctx.federation_id, self.ctx.round, self._ids)
        for pid in self.ctx.party_ids:
            try:
                r = self._body(replies.get(pid), SIGN_STAGE, tl.KIND_SIGNED)
                sig = bytes(r.take(tl.SIG_LEN))
                r.end()
                Ed25519PublicKey.from_public_bytes(self.public.sign_pub(pid)).verify(sig, statement)
            except (ProtocolError, InvalidSignature, ValueError):
                continue
            self._sigs[pid] = sig
        q = tl.quorum(len(self.public.roster), self.public.threshold)
        if len(self._sigs) < q:
            raise ProtocolAbort(f"{len(self._sigs)} parties signed the contributor set, a quorum needs {q}")
        signers = sorted(self._sigs)
        self._avail = [p for p in signers if p not in self.suspects] + [p for p in signers if p in self.suspects]
        self._stage = "decrypt"
        return self._ask(self._first_set())

    # -- he/decrypt -----------------------------------------------------------------------------

    def _first_set(self) -> tuple[str, ...]:
        """t + 1 available signers (one spare makes a leave-one-out possible), or all if fewer."""
        t = self.public.threshold
        if len(self._avail) < t:
            raise ProtocolAbort(f"{len(self._avail)} decryptors answer, the key needs t={t}")
        return tuple(sorted(self._avail[: t + 1]))

    def _ask(self, decryptors: tuple[str, ...]) -> dict[str, Message]:
        self._asked = decryptors
        signers = tuple(sorted(self._sigs))
        body = b"".join([self._head(tl.KIND_TDECRYPT), framing.encode_ids(self._ids), framing.encode_ids(signers),
                         *(self._sigs[p] for p in signers), framing.encode_ids(decryptors)])
        return {pid: Message(DECRYPT_STAGE, body) for pid in decryptors}

    def _collect_answers(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        answers, silent = [], []
        for pid in self._asked:
            try:
                answers.append(self._read_elems(replies.get(pid), DECRYPT_STAGE, tl.KIND_ANSWER))
            except ProtocolError:
                silent.append(pid)
        if silent:  # replace them from who is left, in the set just asked and in those queued
            self._avail = [p for p in self._avail if p not in silent]
            if self._left_out is None:
                return self._ask(self._first_set())
            queue = [(self._asked, self._left_out)] + self._queue
            self._queue = [(r, j) for d, j in queue if (r := self._refill(d, j)) is not None]
            return self._next_leave_one_out()
        if self._decode(answers):
            return {}
        if self._left_out is None:  # the first set failed: someone in it answered garbage
            d = self._asked
            order = [p for p in d if p in self.suspects] + [p for p in d if p not in self.suspects]
            for j in order:
                rest = self._refill(tuple(p for p in d if p != j), j)
                if rest is not None:
                    self._queue.append((rest, j))
        return self._next_leave_one_out()

    def _refill(self, d: tuple[str, ...], left_out: str) -> tuple[str, ...] | None:
        """d without parties found silent, topped up to t from the other available signers (never
        `left_out`); None when too few are left."""
        rest = [p for p in d if p in self._avail]
        spare = [p for p in self._avail if p not in rest and p != left_out]
        while len(rest) < self.public.threshold and spare:
            rest.append(spare.pop(0))
        return tuple(sorted(rest)) if len(rest) >= self.public.threshold else None

    def _next_leave_one_out(self) -> dict[str, Message]:
        if not self._queue:
            raise ProtocolAbort("the aggregate failed to decode with every decryptor set tried "
                                "(a corrupt upload, or more than one corrupt answer)")
        d, self._left_out = self._queue.pop(0)
        return self._ask(d)

    def _decode(self, answers: list[np.ndarray]) -> bool:
        lay, ring = self.layout, self.layout.ring
        x = self._c0_sum.copy()
        for y in answers:
            lay.accumulate(x, y, subtract=True)
        digits = rlwe.decode_message(ring, x, lay.codec.bits, lay.k, lay.budget.delta_bits, lay.noise_bound)
        if digits is None:
            return False
        dec = lay.codec.decode_sum(to_ring(digits[: lay.codec.length], lay.codec.bits))
        if not dec.total_weight > 0:
            raise ProtocolAbort("aggregate has no weight")
        excluded = () if self._left_out is None else (self._left_out,)
        for pid in excluded:
            if pid not in self.suspects:
                self.suspects.append(pid)
        n, m = len(self._ids), lay.codec.vector_len
        coords = n * m * (2 if lay.codec.has_control else 1)
        stats = {
            "protocol": "he", "mode": "threshold",
            "decryptors": self._asked, "excluded": excluded,
            "ciphertexts_per_party": lay.n_ct, "values_per_coeff": lay.k, "value_bits": lay.codec.bits,
            "clipped_fraction": (dec.clipped + dec.control_clipped) / coords,
            "error_bound": {"delta_sum": lay.codec.error_bound(n), "control_sum": n * lay.codec.control_step,
                            "total_weight": n * 0.5 / 2**WEIGHT_FRAC_BITS},
            "flood_bits": lay.budget.flood_bits, "stat_security": self.config.stat_security,
        }
        self._stage = "done"
        self._result = VectorSum(dec.delta_sum, dec.control_sum, dec.total_weight, self._ids, stats)
        return True
