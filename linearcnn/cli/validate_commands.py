"""Commands: validate (being written)."""

from linearcnn.cli._app import app  # noqa: F401
