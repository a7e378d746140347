"""The local executor: every chunk in this process, in grid order, on the defenses the driver built; with a bar
over the defense's queries inside each chunk (a chunk of Square on OTAD takes minutes)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from ..progress import QueryProgress
from ..runner import ChunkResult, compute_chunk


class LocalExecutor:
    name = "local"
    workers = 1

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads  # torch CPU threads while computing (None: leave torch's setting alone)

    def map(self, work: list, progress: bool = False) -> Iterator[tuple[tuple, ChunkResult]]:
        for item in work:
            cell, chunk, ids = item
            old = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
            try:
                with QueryProgress(cell.defense, cell.attack.expected_calls(), 1, cell.label, progress):
                    result = compute_chunk(cell.defense, cell.attack, ids, cell.chunk_seed(chunk))
            finally:
                torch.set_num_threads(old)
            yield item, result

    def close(self) -> None:
        pass
