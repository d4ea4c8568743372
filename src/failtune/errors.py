"""One exception type for mistakes a user can fix; the CLI prints it as one sentence."""


class FailtuneError(Exception):
    """A user-facing error: bad input, missing file, unknown category, unusable model."""
