"""Where a run's chunks are computed, as one value: the executor and its workers. The CLI, the run plan, the
report context and the executors all carry this one object, and it checks itself in one place (`check`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OTBenchError

EXECUTORS = ("local", "ray")
RAY_HINT = "pip install 'otbench[ray]'"


def ray_available() -> bool:
    """Whether Ray imports here (asked only when --executor ray is: importing Ray takes half a second)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def check_address(address: str) -> None:
    """A Ray address is `auto`, HOST:PORT or ray://HOST:PORT (Ray Client)."""
    host, sep, port = address.rpartition(":")
    if address != "auto" and not (sep and host and port.isdigit()):
        raise OTBenchError(f"--ray-address '{address}': expected HOST:PORT (e.g. 10.0.0.1:6379), auto or "
                           f"ray://HOST:PORT")


@dataclass(frozen=True)
class ExecutorOptions:
    """`name`: local (this process, one chunk after the other) or ray (a pool of Ray actors). The numbers do not
    depend on any of these."""

    name: str = "local"
    workers: int | None = None  # ray: default one per GPU when the cluster has GPUs, else one per CPU
    ray_address: str | None = None  # ray: default $RAY_ADDRESS, else a local Ray started for the run
    gpus_per_worker: float | None = None  # ray: default 1 when the cluster has GPUs
    threads: int | None = None  # torch CPU threads per worker (ray: default 1; local: torch's own)

    def check(self) -> None:
        """One-line OTBenchError for an unknown executor, a bad worker count, or Ray asked for but not installed."""
        if self.name not in EXECUTORS:
            raise OTBenchError(f"unknown executor '{self.name}'; valid: {', '.join(EXECUTORS)}")
        for option, value in (("--workers", self.workers), ("--threads", self.threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OTBenchError(f"{option} must be an integer of at least 1, got {value!r}")
        g = self.gpus_per_worker
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0):
            raise OTBenchError(f"--gpus-per-worker must be a number >= 0, got {g!r}")
        if self.name == "local":
            if self.workers not in (None, 1):
                raise OTBenchError(f"--executor local computes one chunk at a time in this process; for --workers "
                                   f"{self.workers} use --executor ray")
            for option, value in (("--ray-address", self.ray_address), ("--gpus-per-worker", g)):
                if value is not None:
                    raise OTBenchError(f"{option} applies to --executor ray only")
            return
        if self.ray_address is not None:
            check_address(self.ray_address)
        if not ray_available():
            raise OTBenchError(f"--executor ray needs Ray, which is not installed: {RAY_HINT}")

    @property
    def distributed(self) -> bool:
        """Whether the chunks may run on other machines (whose GPUs the driver may lack)."""
        return self.name == "ray"

    def describe(self) -> str:
        return (f"executor {self.name}" + (f", {self.workers} workers" if self.workers else "")
                + (f" at {self.ray_address}" if self.ray_address else ""))
