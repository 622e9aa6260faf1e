"""The one exception type for bad user input.

Messages name the input, what was found and what was expected; the CLI prints them as one line
and exits with code 2. A library error about a parameter names it as the library spells it
(`lr`, `batch_size`) and records it in `parameter`; the CLI shows it under its flag
(`--lr`, `--batch-size`) with `for_option`.

>>> error = LinearCNNInputError("lr must be a positive number, got -1", parameter="lr")
>>> error.for_option("--lr")
'--lr must be a positive number, got -1'
"""

from __future__ import annotations

import re


class LinearCNNInputError(ValueError):
    """Bad user input: a path, a data spec, a checkpoint, a parameter value."""

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def for_option(self, option: str) -> str:
        """The message with the parameter's name (its first mention as a whole word) replaced by `option`."""
        message = str(self)
        if self.parameter is None:
            return message
        pattern = rf"(?<![\w\-.]){re.escape(self.parameter)}(?![\w\-])"
        return re.sub(pattern, option, message, count=1)


def option_name(parameter: str) -> str:
    """The CLI flag of a library parameter: `batch_size` -> `--batch-size`."""
    return "--" + parameter.replace("_", "-")


__all__ = ["LinearCNNInputError", "option_name"]
