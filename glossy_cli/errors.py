"""The one exception type the command line turns into a clear message and a non-zero exit."""


class GlossyError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""

    exit_code = 2
