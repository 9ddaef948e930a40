"""Domain errors. The CLI turns any CuratorError into one line and exit code 1."""


class CuratorError(Exception):
    """A problem the user can fix: bad card, missing folder, bad flag."""


class CardError(CuratorError):
    """A source card is missing, unreadable or invalid."""


class RecipeError(CuratorError):
    """A build recipe is missing, unreadable or invalid."""


class UnknownSourceError(CuratorError):
    """A source id names no card in the registry."""


class UnknownAdapterError(CuratorError):
    """An adapter name is not registered."""


class CorpusError(CuratorError):
    """The corpus directory is missing a table or a stage has not run yet."""


class ReadError(Exception):
    """A single input cannot be read. Carries a reject reason code.

    Not a CuratorError: adapters catch it and record a reject, the run goes on.
    """

    def __init__(self, reason: str, message: str, identity: dict | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.identity = identity or {}
