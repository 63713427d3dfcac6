"""The one exception type users see: a clear sentence naming the input and what was expected."""


class LeadrrgError(Exception):
    """An error caused by user input (a file, a flag, a config value). The CLI prints it without a
    traceback and exits non-zero."""
