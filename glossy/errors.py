"""The exception types the command line turns into a clear message and a non-zero exit."""


class GlossyError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""

    exit_code = 2


class ConfigError(GlossyError):
    """A value that the schema refuses: one line naming the key, the value given and what is allowed."""

    exit_code = 2
