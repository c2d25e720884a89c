"""The project's error and warning base classes.

Every problem a user can cause (a file, a flag, a value in a cfg or a dataset) raises a subclass of
:class:`UserError` with a message that says what is wrong and where. The command lines print it as one
``error: ...`` line and exit non-zero; anything else that escapes is a bug and keeps its traceback. What is
accepted but probably not meant, or skipped, is an :class:`InputWarning`, printed as one ``warning: ...`` line.
"""
from __future__ import annotations

import numbers


class UserError(Exception):
    """Bad input: reported as one line, never as a traceback."""


class InputWarning(UserWarning):
    """Input that is accepted, ignored or skipped, which the user should know of: one line, no source."""


def is_number(value, kind: type = numbers.Real) -> bool:
    """Whether a user's ``value`` is a number of ``kind`` (Real, Integral), and not a bool, which Python counts as
    one: ``max_det=True`` is a mistake to name, not a 1."""
    return isinstance(value, kind) and not isinstance(value, bool)
