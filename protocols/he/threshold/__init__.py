"""The threshold `he` design: key-homomorphic RLWE with t-of-n decryption (see protocols/he/__init__.py)."""
