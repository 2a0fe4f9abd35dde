"""Threshold `he` (issue #21): a server with fewer than t colluding parties must recover neither a
key nor an honest upload. Every attack drives real honest party sessions; each is first shown to
pay off against a deliberately weakened variant (kept here, never in the shipped code path), then
shown to recover nothing against the real protocol.

- a colluder's malformed upload, and a server-chosen element presented for decryption: the weakened
  variant is the previous design (an honest decryptor multiplies the presented c1 sum by its key);
- the Lagrange leak: two honest decryptors' answers, with the t - 1 colluders' shares, solve a
  2-dimensional lattice problem for a_tau * S_C; the weakened variant drops the zero sharing;
- t - 1 colluders pooling their Shamir shares learn nothing of an honest upload; t do.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from _he_harness import IDS, M, Session, federation, refuses
from securefed.protocols.base import PartyInput
from securefed.protocols.he import rlwe
from securefed.protocols.he.threshold import scheme


@pytest.fixture(scope="module")
def fed():
    return federation()


def _centered(ring, x: np.ndarray) -> np.ndarray:
    """(L, N) residues -> object array of ints in (-Q/2, Q/2]."""
    return ring.to_centered_ints(x)


def _div_round(v: int, k: int) -> int:
    return (2 * v + k) // (2 * k)


def _all_signed(s: Session, ids=IDS) -> dict[str, bytes]:
    return {p: s.sign(p, ids) for p in ids}


# -- a malformed upload / a server-chosen element ------------------------------------------------


def test_malformed_upload_recovers_a_key_in_the_weakened_variant_and_nothing_in_the_protocol(fed):
    he, public, mats = fed
    s = Session(fed, 1)
    ring, flood = s.ring, s.lay.budget.flood_bits
    c0 = {p: s.upload(p) for p in IDS}
    K = 1 << (flood + 4)  # the colluder e's public constant: K*s_i towers over the flooding
    k_elem = np.array([[K % p] * ring.n for p in ring.primes], dtype=np.uint64)[None]  # NTT of the constant K
    # Weakened (the previous design): e uploads (c0, c1) = (0, K); every attestation check passes and
    # honest a answers c1_sum * s_a + flooding. The server divides by K and reads s_a.
    weak = rlwe.partial_decrypt(ring, k_elem, mats["a"].s_ntt, flood, np.random.default_rng(1).bytes)[0]
    guess = np.array([_div_round(int(v), K) for v in _centered(ring, weak)], dtype=np.int64)
    true_s = np.array([int(v) for v in _centered(ring, ring.intt(mats["a"].s_ntt))], dtype=np.int64)
    assert np.array_equal(guess, true_s)  # the key share, every coefficient
    # ... and with it a's upload of the real protocol is read: c0_a - INTT(a_tau * s_a)
    key_ntt = ring.ntt(ring.from_int64(guess))
    leaked = s.digits(ring.sub(c0["a"], ring.intt(ring.mul(s.crs(), key_ntt))[None]))
    assert np.max(np.abs(leaked[:M] - s.quantized("a"))) <= 1.0
    # The protocol: e's upload is the constant K; the decryptors never see it. Nothing in a decrypt
    # request is a ring element, and one with an element appended is refused.
    c0["e"] = k_elem.copy()
    sigs = _all_signed(s)
    d = ("a", "b", "c")
    assert refuses(s.parties["a"], s.decrypt_msg(IDS, sigs, d, extra=s.lay.pack(k_elem)))
    y = {p: s.answer(p, s.decrypt_msg(IDS, sigs, d)) for p in d}
    for p in d:  # the same estimator on each answer, and on their sum: no key coefficient
        est = np.array([_div_round(int(v), K) for v in _centered(ring, y[p][0])], dtype=object)
        assert np.mean(est == true_s) < 0.01
    total = ring.add(ring.add(y["a"], y["b"]), y["c"])[0]
    est = np.array([_div_round(int(v), K) for v in _centered(ring, total)], dtype=object)
    assert np.mean(est == true_s) < 0.01
    # An answer is a function of (tau, C, D) and the key shares only: asked again, it differs by flooding.
    again = s.answer("a", s.decrypt_msg(IDS, sigs, d))
    diff = np.array([abs(int(v)) for v in _centered(ring, ring.sub(again, y["a"])[0])])
    assert diff.max() <= 2 ** (s.lay.budget.flood_bits + 1)


# -- the Lagrange leak (why the zero sharing) ----------------------------------------------------


def _lagrange(x: int, nodes, at: int = 0) -> Fraction:
    out = Fraction(1)
    for y in nodes:
        if y != x:
            out *= Fraction(at - y, x - y)
    return out


def _mod_frac(ring, f: Fraction) -> np.ndarray:
    """A rational as one residue per prime (L,)."""
    return np.array([f.numerator * pow(f.denominator, -1, p) % p for p in ring.primes], dtype=np.uint64)


def _lagrange_leak(s: Session, c0_sum: np.ndarray, sets, colluders, answer, masked: bool):
    """The server's recovery of u = INTT(a_tau * S_C), per coefficient, from answer sets D of two
    honest decryptors and colluders. With kappa_h = lambda_h^D * L_0(x_h) = n_h / d_h (a small
    rational), y_h - known_h = kappa_h u + f_h, so n_2 d_1 Y_1 - n_1 d_2 Y_2 = A f_1 - B f_2 exactly
    (small); the decrypted sum gives g = f_1 + f_2 - E (E: the encryption noise of the sum, the
    same in every set). Then (A + B) f_1 = h + B g + B E pins E modulo (A + B); the sets together
    (CRT) give E, then f_1 exactly, then u. `masked`: strip the masks the colluders share with the
    honest pair (what the attacker can do against the real protocol)."""
    ring, pub, q = s.ring, s.public, s.ring.modulus
    a_ntt, delta = s.crs(), 2 ** s.lay.budget.delta_bits
    pc = {c: sum((s.mats[c].shares[i] for i in IDS), np.zeros_like(a_ntt)) % ring._p for c in colluders}
    nodes = (0, *(pub.point(c) for c in colluders))
    residues, first = [], None
    for h1, h2, cs in sets:  # two honest decryptors and some colluders: D
        d = tuple(sorted((h1, h2, *cs)))
        pts = tuple(pub.point(p) for p in d)
        lam = {p: _lagrange(pub.point(p), pts) for p in d}
        y = {h: answer(h, d) for h in (h1, h2)}
        total = c0_sum.copy()
        for p in d:  # the colluders' answers (no flooding), with the masks that cancel the honest ones
            if p in (h1, h2):
                ring.add_to(total, ring._p - y[p][None])
                continue
            w = ring.scalar_mul(pc[p], _mod_frac(ring, lam[p]))
            yc = ring.intt(ring.mul(a_ntt, w))
            if masked:
                for o in d:
                    if o != p:
                        m = s.mask(p, o, IDS, d)
                        yc = ring.add(yc, m) if p < o else ring.sub(yc, m)
            ring.add_to(total, ring._p - yc[None])
        x = ring.to_centered_ints(total[0])
        g = ((x + delta // 2) // delta) * delta - x  # Delta*V - (Delta*V + E - f1 - f2)
        ys, ks = [], []
        for h in (h1, h2):
            xh = pub.point(h)
            known = np.zeros_like(a_ntt)
            for c in colluders:
                known = ring.add(known, ring.scalar_mul(pc[c], _mod_frac(ring, lam[h] * _lagrange(pub.point(c), nodes, xh))))
            val = ring.sub(y[h], ring.intt(ring.mul(a_ntt, known)))
            if masked:
                for c in colluders:
                    m = s.mask(h, c, IDS, d)
                    val = ring.sub(val, m) if h < c else ring.add(val, m)
            ys.append(ring.to_centered_ints(val))
            ks.append(lam[h] * _lagrange(0, nodes, xh))
        (n1, d1), (n2, d2) = ((k.numerator, k.denominator) for k in ks)
        hh = (n2 * d1 * ys[0] - n1 * d2 * ys[1]) % q
        hh = np.where(hh > q // 2, hh - q, hh)
        big_a, big_b = n2 * d1, n1 * d2
        mod = abs(big_a + big_b)
        if mod > 1:
            residues.append(((hh + big_b * g), big_b, mod))
        if first is None:
            first = (ys[0], ks[0], hh, g, big_a, big_b)
    out = np.empty(ring.n, dtype=object)
    y1, k1, hh, g, big_a, big_b = first
    for i in range(ring.n):
        e, m = 0, 1  # E mod m, by CRT over the sets
        for r, b, mod in residues:
            gg = math.gcd(b, mod)
            if int(r[i]) % gg:
                continue
            mm = mod // gg
            ei = (-(int(r[i]) // gg) * pow(b // gg, -1, mm)) % mm
            e, m = _crt2(e, m, ei, mm)
        e = e - m if e > m // 2 else e
        f1 = (int(hh[i]) + big_b * (int(g[i]) + e)) // (big_a + big_b)
        out[i] = (int(y1[i]) - f1) * k1.denominator * pow(k1.numerator, -1, q) % q
    return out


def _crt2(a: int, m: int, b: int, n: int) -> tuple[int, int]:
    g = math.gcd(m, n)
    if (b - a) % g:
        return a, m
    lcm = m // g * n
    k = ((b - a) // g * pow(m // g, -1, n // g)) % (n // g)
    return (a + m * k) % lcm, lcm


@pytest.mark.parametrize("weakened", [True, False])
def test_honest_answers_and_t_minus_1_shares_do_not_give_the_sum_key(fed, weakened, monkeypatch):
    if weakened:  # the variant without the zero sharing (test-only: the party's masks are dropped)
        real = scheme.answer_each
        monkeypatch.setattr(scheme, "answer_each", lambda ring, seed, n, w, fb, rng, masks, emit:
                            real(ring, seed, n, w, fb, rng, [], emit))
    s = Session(fed, 2 if weakened else 3)
    c0 = {p: s.upload(p) for p in IDS}
    c0_sum = c0["a"].copy()
    for p in IDS[1:]:
        s.ring.add_to(c0_sum, c0[p])
    sigs = _all_signed(s)
    colluders = ("d", "e")  # t - 1 = 2 colluders; a, b, c honest and each asked a few times (< the ledger's bound)
    sets = [(h1, h2, cs) for h1, h2 in (("a", "b"), ("a", "c"), ("b", "c")) for cs in (("d",), ("e",), ("d", "e"))]
    got = _lagrange_leak(s, c0_sum, sets, colluders,
                         lambda h, d: s.answer(h, s.decrypt_msg(IDS, sigs, d))[0], masked=not weakened)
    total = sum((m.s_ntt for m in s.mats.values()), np.zeros_like(s.crs())) % s.ring._p
    truth = s.ring.to_centered_ints(s.ring.intt(s.ring.mul(s.crs(), total))) % s.ring.modulus
    hits = float(np.mean(got == truth))
    if weakened:
        # a_tau * S_C on all coefficients but those where |E| exceeds half the CRT modulus the nine
        # sets give (40 here; E has sd ~7): the attack is real (more sets, or a prior on E, finish it)
        assert hits > 0.98
    else:
        assert hits < 0.01


# -- collusion below and at the threshold --------------------------------------------------------


def _pooled_key(s: Session, colluders: tuple[str, ...], target: str) -> np.ndarray:
    """The colluders' best linear guess of s_target from their Shamir shares (a missing point 0)."""
    ring, pub = s.ring, s.public
    xs = tuple(pub.point(c) for c in colluders)
    guess = np.zeros_like(s.mats[colluders[0]].s_ntt)
    for c in colluders:
        guess = ring.add(guess, ring.scalar_mul(s.mats[c].shares[target], rlwe.lagrange_at_zero(ring, pub.point(c), xs)))
    return guess


def test_t_minus_1_colluders_learn_nothing_of_an_upload_t_of_them_do(fed):
    t = fed[1].threshold
    zeros = {p: PartyInput(np.zeros(M, np.float32), None, 16.0) for p in IDS}
    big = {p: PartyInput(np.full(M, 0.9, np.float32), None, 16.0) for p in IDS}
    outs = {}
    for r, (name, inputs) in enumerate((("zeros", zeros), ("big", big))):
        s = Session(fed, 10 + r, inputs=inputs)
        c0 = s.upload("a")
        full = _pooled_key(s, ("c", "d", "e")[:t], "a")  # t colluders: the key share, and a's update
        x = s.ring.sub(c0, s.ring.intt(s.ring.mul(s.crs(), full))[None])
        assert np.max(np.abs(s.digits(x)[:M] - s.quantized("a"))) <= 1.0
        part = _pooled_key(s, ("d", "e")[: t - 1], "a")
        outs[name] = s.digits(s.ring.sub(c0, s.ring.intt(s.ring.mul(s.crs(), part))[None]))[:M].astype(np.float64)
    half = 2.0 ** (s.lay.codec.bits - 1)
    for name, got in outs.items():  # uniform over the digit range whatever the input
        assert abs(got.mean()) < 0.15 * half, name
        assert 0.45 * half < got.std() < 0.7 * half, name
    assert abs(outs["zeros"].mean() - outs["big"].mean()) < 0.2 * half
