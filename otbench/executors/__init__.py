"""Executors: where the chunks of a run plan are computed. The unit of work is the runner's chunk; an executor
only computes chunks and hands back their rows, and the driver (the process that owns the results store)
commits each one in one transaction (`dispatch`), so resume, provenance and the store's guarantees do not
depend on the executor.

- `local` (default): in this process, one chunk after the other: otbench's behaviour before executors.
- `ray`: Ray actors, each building (or loading from the checkpoint cache) a defense once, on this machine, a
  multi-GPU box or a cluster (`pip install 'otbench[ray]'`); see otbench/executors/ray.py.

Ray is imported only inside the ray backend, so `import otbench` and the local executor work without it."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

from tqdm import tqdm

from ..errors import OTBenchError
from ..runner import ChunkResult, OpenCell, close_cell, commit_chunk
from ..store import ResultStore

EXECUTORS = ("local", "ray")
RAY_HINT = "pip install 'otbench[ray]'"

Work = tuple[OpenCell, int, list[int]]  # (cell, chunk, sample ids)


class Executor(Protocol):
    name: str
    workers: int

    def map(self, work: list[Work]) -> Iterator[tuple[Work, ChunkResult]]:
        """Compute every chunk of `work` (in any order), yielding each with its result as soon as it is done."""

    def close(self) -> None:
        """Release the workers (a Ray started for the run is shut down)."""


def ray_available() -> bool:
    """Whether Ray imports here (asked only when --executor ray is: importing Ray takes half a second)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def check_executor(name: str, workers: int | None = None, ray_address: str | None = None,
                   gpus_per_worker: float | None = None, threads: int | None = None) -> None:
    """One-line OTBenchError for an unknown executor, a bad worker count, or Ray asked for but not installed."""
    if name not in EXECUTORS:
        raise OTBenchError(f"unknown executor '{name}'; valid: {', '.join(EXECUTORS)}")
    for option, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OTBenchError(f"{option} must be an integer of at least 1, got {value!r}")
    if gpus_per_worker is not None and (isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float))
                                        or not math.isfinite(gpus_per_worker) or gpus_per_worker < 0):
        raise OTBenchError(f"--gpus-per-worker must be a number >= 0, got {gpus_per_worker!r}")
    if name == "local":
        if workers not in (None, 1):
            raise OTBenchError(f"--executor local computes one chunk at a time in this process; for --workers "
                               f"{workers} use --executor ray")
        for option, value in (("--ray-address", ray_address), ("--gpus-per-worker", gpus_per_worker)):
            if value is not None:
                raise OTBenchError(f"{option} applies to --executor ray only")
        return
    if ray_address is not None:
        check_address(ray_address)
    if not ray_available():
        raise OTBenchError(f"--executor ray needs Ray, which is not installed: {RAY_HINT}")


def check_address(address: str) -> None:
    """A Ray address is `auto`, HOST:PORT or ray://HOST:PORT (Ray Client)."""
    host, sep, port = address.rpartition(":")
    if address != "auto" and not (sep and host and port.isdigit()):
        raise OTBenchError(f"--ray-address '{address}': expected HOST:PORT (e.g. 10.0.0.1:6379), auto or "
                           f"ray://HOST:PORT")


def open_executor(name: str = "local", workers: int | None = None, ray_address: str | None = None,
                  gpus_per_worker: float | None = None, threads: int | None = None,
                  device: str = "auto") -> Executor:
    """Start an executor (checked first); close it with `.close()` when the command is done."""
    check_executor(name, workers, ray_address, gpus_per_worker, threads)
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(threads)
    from .ray import RayExecutor

    return RayExecutor(workers, ray_address, gpus_per_worker, threads, device)


def dispatch(executor: Executor, cells: list[OpenCell], store: ResultStore, progress: bool = True) -> None:
    """Send every missing chunk of `cells` through `executor` and commit each result here, as it arrives, one
    transaction per chunk. One progress bar over all chunks (with ETA). Cells whose chunks are all committed
    are closed as complete; on any exception (Ctrl-C included) the others are closed as interrupted, and every
    committed chunk stays committed."""
    work = [(cell, chunk, ids) for cell in cells for chunk, ids in cell.todo]
    left = {id(cell): len(cell.todo) for cell in cells}
    for cell in cells:
        if not cell.todo:
            close_cell(store, cell, "complete")
    bar = tqdm(total=len(work), desc=f"{len(cells)} cells", unit="chunk", disable=not progress or not work,
               leave=False, smoothing=0.1)
    try:
        for (cell, chunk, ids), result in executor.map(work):
            commit_chunk(store, cell, chunk, ids, result)
            left[id(cell)] -= 1
            if not left[id(cell)]:
                close_cell(store, cell, "complete")
            bar.set_postfix_str(cell.label, refresh=False)
            bar.update()
    finally:
        bar.close()
        for cell in cells:
            close_cell(store, cell, "interrupted")


__all__ = ["EXECUTORS", "Executor", "check_executor", "dispatch", "open_executor", "ray_available"]
