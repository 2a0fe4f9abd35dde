"""Server side of single-key `he`: check the parties' signed ciphertexts (stage he/input), forward the
contributors' signed uploads to the round's one decryptor (roster[round % n], stage he/decrypt;
it re-sums them itself), and end with plaintext sums only. If that decryptor did not contribute
or does not answer, the round aborts: nobody else may decrypt it.

The server never holds a secret key: it can add ciphertexts and nothing else. Parties whose input
does not parse, is not ours (key id, SEAL parameters), or has the wrong number or size of
ciphertexts are treated as dropped; the round continues without them.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tenseal.sealapi as seal

from securefed.protocols.base import Message, ProtocolAbort, ProtocolError, RoundContext, VectorSum
from securefed.protocols.he import framing
from securefed.protocols.he.config import HEConfig
from securefed.protocols.he.single_key.context import HEPublic
from securefed.protocols.he.single_key.packing import Layout, dequantize, unpack
from securefed.protocols.he.single_key.party import DECRYPT_STAGE, INPUT_STAGE, read_signed_upload


class HEServer:
    def __init__(self, ctx: RoundContext, material: HEPublic, config: HEConfig) -> None:
        if not isinstance(material, HEPublic):
            raise TypeError("he server material must be an HEPublic (from provision)")
        self.ctx, self.public, self.config = ctx, material, config
        self.layout = Layout.for_round(ctx, config, material)
        self._stage = "input"
        self._contributors: tuple[str, ...] = ()
        self._request: bytes = b""
        self._asked: list[str] = []  # decryptors asked so far, in order
        self._pending: tuple[str, ...] = ()  # decryptors asked in the current step
        self._result: VectorSum | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def start(self) -> dict[str, Message]:
        return {pid: Message(INPUT_STAGE, b"") for pid in self.ctx.party_ids}

    def step(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        if self._stage == "input":
            return self._sum(replies)
        if self._stage == "decrypt":
            return self._collect(replies)
        raise ProtocolAbort("round already finished")

    def result(self) -> VectorSum:
        if self._result is None:
            raise ProtocolAbort("round not finished")
        return self._result

    # -- stage he/input: check the uploads ----------------------------------------------------

    def _load_party(self, pid: str, msg: Message) -> list[seal.Ciphertext]:
        """All of one party's ciphertexts, or ProtocolError: a party is taken all or nothing."""
        if msg.stage != INPUT_STAGE:
            raise ProtocolError("unexpected stage")
        return read_signed_upload(self.public, self.ctx, pid, msg.payload, self.layout.n_ct)

    def _sum(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        contributors, uploads = [], []
        for pid in self.ctx.party_ids:
            msg = replies.get(pid)
            if msg is None:
                continue
            try:
                self._load_party(pid, msg)  # checked here; the decryptor adds them itself
            except ProtocolError:
                continue  # treated as dropped
            contributors.append(pid)
            uploads.append(msg.payload)
        if not contributors or len(contributors) < self.config.min_contributors:
            raise ProtocolAbort(
                f"{len(contributors)} parties contributed, he needs min_contributors="
                f"{self.config.min_contributors}"
            )
        self._contributors = tuple(contributors)
        # The decryptor gets the signed uploads, not our sum: it checks and adds them itself.
        self._request = b"".join([
            framing.header(framing.KIND_DECRYPT, self.public.key_id, self.ctx.round),
            framing.encode_ids(self._contributors),
            *framing.blobs(uploads),
        ])
        self._stage = "decrypt"
        return self._ask(self._next_decryptors())

    # -- stage he/decrypt: the round's one decryptor ----------------------------------------------

    def _next_decryptors(self) -> tuple[str, ...]:
        pid = self.public.decryptor(self.ctx.round)
        return (pid,) if pid in self._contributors and pid not in self._asked else ()

    def _ask(self, pids: tuple[str, ...]) -> dict[str, Message]:
        if not pids:
            raise ProtocolAbort("the round's decryptor did not contribute or did not answer")
        self._asked += pids
        self._pending = pids
        return {pid: Message(DECRYPT_STAGE, self._request) for pid in pids}

    def _collect(self, replies: Mapping[str, Message]) -> dict[str, Message]:
        expected = self.layout.n_ct * self.public.slots
        results: dict[str, np.ndarray] = {}
        for pid in self._pending:
            msg = replies.get(pid)
            if msg is None or msg.stage != DECRYPT_STAGE:
                continue
            try:
                packed = framing.read_result(msg.payload, self.public.key_id, self.ctx.round, expected)
                if packed is None:
                    raise ProtocolAbort("the aggregate failed the decryptor's integrity check")
                results[pid] = unpack(self.layout, packed, len(self._contributors))
            except ProtocolError:
                continue  # a bad decryption reply: that decryptor is dropped
        if not results:
            return self._ask(self._next_decryptors())
        first = next(iter(results.values()))
        if any(not np.array_equal(first, v) for v in results.values()):
            raise ProtocolAbort("decryptors disagree on the aggregate")
        self._finish(first, tuple(results))
        return {}

    def _finish(self, values: np.ndarray, decryptors: tuple[str, ...]) -> None:
        delta_sum, control_sum, total_weight, clipped = dequantize(self.layout, values)
        n = len(self._contributors)
        if not total_weight > 0:
            raise ProtocolAbort("aggregate has no weight")
        coords = n * self.layout.m * (2 if self.layout.has_control else 1)
        stats = {
            "protocol": "he",
            "decryptors": decryptors,
            "ciphertexts_per_party": self.layout.n_ct,
            "values_per_slot": self.layout.k,
            "clipped_fraction": clipped / coords,
            "error_bound": self.layout.error_bounds(n),  # per coordinate, inputs within clip
            "ckks_error_bound_quanta": self.public.error_bound,
            "ckks_measured_error_quanta": self.public.measured_error,
        }
        self._stage = "done"
        self._result = VectorSum(delta_sum, control_sum, total_weight, self._contributors, stats)
