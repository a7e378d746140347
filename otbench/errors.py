"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class OTBenchError(Exception):
    """A mistake in what the user asked for (bad name, bad option, missing data)."""


class ThreatModelViolation(OTBenchError):
    """An attack returned inputs outside its declared threat model; never stored as a result."""
