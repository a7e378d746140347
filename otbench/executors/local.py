"""The local executor: every chunk in this process, in grid order, on the defenses the driver built."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from ..runner import ChunkResult, compute_chunk


class LocalExecutor:
    name = "local"
    workers = 1

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads  # torch CPU threads while computing (None: leave torch's setting alone)

    def map(self, work: list) -> Iterator[tuple[tuple, ChunkResult]]:
        for item in work:
            cell, chunk, ids = item
            if not self.threads:
                yield item, compute_chunk(cell.defense, cell.attack, ids, cell.chunk_seed(chunk))
                continue
            old = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                result = compute_chunk(cell.defense, cell.attack, ids, cell.chunk_seed(chunk))
            finally:
                torch.set_num_threads(old)
            yield item, result

    def close(self) -> None:
        pass
