"""Aggregation protocols: how parties' updates become one sum the server may see.

Each protocol is a party side (`PartySession`) and a server side (`ServerSession`) that exchange
`Message`s (stage name + opaque bytes). The same sessions run in the in-process simulation
(`securefed.protocols.driver`) and over gRPC; only the carrier of the bytes differs.
"""
