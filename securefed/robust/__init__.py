"""Bounded influence of malicious parties: what every honest party clips its update to (and so what
a decoded sum can honestly be: `bounds`), and Byzantine-robust aggregation rules over the stacked
updates that only the plain protocol can show the server (`rules`, `stacked`)."""
