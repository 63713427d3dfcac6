"""The one exception type users see: a clear sentence naming the input and what was expected."""

# torch's DataLoader re-raises a worker's exception as `type(exc)(f"Caught {name} in DataLoader worker process
# N.\nOriginal Traceback ...\n<module>.{name}: <message>")`: the worker's traceback inside the message.
_WORKER_PREFIX = "Caught LeadrrgError in DataLoader worker"
_WORKER_TAIL = "LeadrrgError: "


class LeadrrgError(Exception):
    """An error caused by user input (a file, a flag, a config value). The CLI prints it without a
    traceback and exits non-zero. Raised again by a DataLoader from a worker process, it keeps only the
    worker's own message."""

    def __init__(self, *args: object):
        if (
            args
            and isinstance(args[0], str)
            and args[0].startswith(_WORKER_PREFIX)
            and _WORKER_TAIL in args[0]
        ):
            args = (args[0].rpartition(_WORKER_TAIL)[2].strip(), *args[1:])
        super().__init__(*args)
