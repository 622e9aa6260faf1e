"""The one exception type for bad user input.

Messages name the input, what was found and what was expected; the CLI prints them as one line
and exits with code 2.
"""


class LinearCNNInputError(ValueError):
    """Bad user input: a path, a data spec, a checkpoint, a parameter value."""
