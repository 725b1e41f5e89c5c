"""The one exception users see: its message names the file or argument and what is wrong with it.

The command line prints it as a single line instead of a stack trace; library callers can catch it.
It subclasses ValueError so code written against plain Python conventions still catches bad arguments.
"""


class PipelineError(ValueError):
    """Bad input or configuration, explained in the message."""
