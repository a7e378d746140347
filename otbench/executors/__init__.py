"""Executors: where the chunks of a run plan are computed. The unit of work is the runner's chunk; an executor
only computes chunks and hands back their rows, and the driver (the process that owns the results store)
commits each one in one transaction (`dispatch`), so resume, provenance and the store's guarantees do not
depend on the executor.

- `local` (default): in this process, one chunk after the other: otbench's behaviour before executors.
- `ray`: Ray actors, each building (or loading from the checkpoint cache) a defense once, on this machine, a
  multi-GPU box or a cluster (`pip install 'otbench[ray]'`); see otbench/executors/ray.py.

Ray is imported only inside the ray backend, so `import otbench` and the local executor work without it."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from tqdm import tqdm

from ..runner import ChunkResult, OpenCell, close_cell, commit_chunk
from ..store import ResultStore
from .options import EXECUTORS, ExecutorOptions, ray_available

Work = tuple[OpenCell, int, list[int]]  # (cell, chunk, sample ids)


class Executor(Protocol):
    name: str
    workers: int

    def map(self, work: list[Work], progress: bool = False) -> Iterator[tuple[Work, ChunkResult]]:
        """Compute every chunk of `work` (in any order), yielding each with its result as soon as it is done;
        `progress`: show what the executor can see of a chunk while it computes (local: the defense's queries)."""

    def close(self) -> None:
        """Release the workers (a Ray started for the run is shut down)."""


def open_executor(options: ExecutorOptions | None = None, device: str = "auto") -> Executor:
    """Start the executor `options` names (checked first); close it with `.close()` when the command is done."""
    options = options or ExecutorOptions()
    options.check()
    if options.name == "local":
        from .local import LocalExecutor

        return LocalExecutor(options.threads)
    from .ray import RayExecutor

    return RayExecutor(options.workers, options.ray_address, options.gpus_per_worker, options.threads, device)


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
        for (cell, chunk, ids), result in executor.map(work, progress):
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


__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "dispatch", "open_executor", "ray_available"]
