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


class OptionError(TvmcompressError):
    """A bad option, worded by the names the caller used: the Python API's field names (`calibration=`), or
    the CLI's flags (`--calibration`), which cli.py renders with `render(flags)`.

    The template marks each option as `{field}` (the name alone) or `{field=}` (the name before its value), e.g.
    "{quantize=}int8 needs {calibration=}FILE.npz" reads "quantize=int8 needs calibration=FILE.npz" in Python
    and "--quantize int8 needs --calibration FILE.npz" on the command line.
    """

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.render(None))

    def render(self, flags: "dict[str, str] | None") -> str:
        """The message with each field named as in Python (flags None) or as its flag (`flags` maps a field to
        its flag; a field not in it is `--field-name`). `{python text|field}` reads `python text` in Python and
        the field's flag on the command line (`{verify=False|no_verify}`)."""
        import re

        def flag(field: str) -> str:
            return (flags or {}).get(field, "--" + field.replace("_", "-"))

        def name(match: "re.Match[str]") -> str:
            python, cli_field, field, value_follows = match.groups()
            if python is not None:
                return python if flags is None else flag(cli_field)
            if flags is None:
                return f"{field}=" if value_follows else field
            return f"{flag(field)} " if value_follows else flag(field)

        return " ".join(re.sub(r"\{([^{}|]+)\|([\w.]+)\}|\{([\w.]+)(=?)\}", name, self.template).split())
