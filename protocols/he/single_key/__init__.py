"""The single-key `he` design: shared-key CKKS on SEAL, an explicit option (see protocols/he/__init__.py)."""
