"""User-facing error types.

`UserError` (and subclasses) mean "the input is wrong": the CLI prints the message on one line and
exits non-zero without a traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: config value, file, path. The message names what is wrong."""


class ConfigError(UserError):
    """A config field has a wrong value; the message names the dotted field."""


class DataError(UserError):
    """A data file is missing or malformed; the message names the file and the row."""


class ModelError(UserError):
    """A model path or hub id cannot be loaded."""


class MaterialError(ConfigError, ValueError):
    """Serialized protocol key material (a kit file) is malformed or does not match its kit. A
    ConfigError (the deploy layer reports a bad kit) and a ValueError (it is a bad value)."""
