"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class OTBenchError(Exception):
    """A mistake in what the user asked for (bad name, bad option, missing data)."""


class ThreatModelViolation(OTBenchError):
    """An attack returned inputs outside its declared threat model; never stored as a result."""


# Ctrl-C and `kill` (SIGTERM) unwind the run like KeyboardInterrupt. The flag survives a library that swallows
# the KeyboardInterrupt raised inside its own C code (Ray's wait can), so the executor checks it between waits.
_interrupted = False


def interrupt(signum: int, frame: object) -> None:
    """Signal handler: remember the interrupt, then raise it."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt when a handled signal came in, even if whatever was running swallowed it."""
    if _interrupted:
        raise KeyboardInterrupt


def clear_interrupt() -> None:
    """Forget a handled interrupt (a new command in the same process starts clean)."""
    global _interrupted
    _interrupted = False
