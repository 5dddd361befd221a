"""The one exception type that the command line turns into a one-line error."""


class PyksmError(Exception):
    """A failure the user can act on; ``str(err)`` is the whole message.

    ``hint`` is the next command or step that fixes it, when there is one.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
