"""The one exception type for user errors.

A `TvmcompressError` means the user can fix it: the message says what went wrong and what to do, on one line.
The CLI prints it to stderr and exits with code 2. Anything else is an internal error and keeps its traceback.
"""


class TvmcompressError(Exception):
    """A user error: bad input, missing toolchain, unsupported model. The message tells the user what to do."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split("\n")).strip())
