"""Errors meant for people: each message is one line naming the file, row or key and what to do."""


class NichetuneError(Exception):
    """A problem the user can fix; the CLI prints the message alone and exits non-zero."""


class ParamsError(NichetuneError):
    """A bad params.yaml key or value, found before any work starts."""


class DataError(NichetuneError):
    """Labeled data that cannot be read or lacks what params name."""


class ValidationFailed(NichetuneError):
    """The Great Expectations suite failed; the message names the failed checks, `result` holds every check."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class ModelLoadError(NichetuneError):
    """A model folder that cannot be loaded (a missing or truncated file); retrying will not help."""


class GateFailed(NichetuneError):
    """A version that does not pass the promotion gate against the champion of this moment."""
