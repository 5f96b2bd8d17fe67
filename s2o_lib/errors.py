"""The one exception type the library raises for bad input.

`S2OError` subclasses `ValueError`, so ``except ValueError`` keeps working, and its message always says
what to do next rather than where inside torch something broke.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "S2OError", "unknown_name",
]



class S2OError(ValueError):
    """Bad input to the S²O library: the message says what was wrong and how to fix it."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> S2OError:
    """Build the error for an unknown option name, listing the valid ones.

    Args:
        kind: what was being chosen, e.g. ``"architecture"``.
        name: the name the user gave.
        valid: the names that would have worked.
    """
    choices = ", ".join(sorted(valid))
    return S2OError(f"unknown {kind} {name!r}; choose one of: {choices}")
