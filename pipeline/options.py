"""Options as users type them on a bundle command line.

``python -m monai.bundle run ... --resume false`` hands the bundle the *string* ``'false'`` (fire reads only Python
literals such as ``False``), and a string is true in Python. Every yes/no option goes through :func:`flag`, so
the words a user types mean what they say and anything else stops with one line.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def flag(name: str, value) -> bool:
    """A yes/no setting as given on the command line (``--resume true``) or in JSON."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in TRUE + FALSE:
        return str(value).strip().lower() in TRUE
    raise PipelineError(f"{name} must be true or false (--{name}), got {value!r}")
