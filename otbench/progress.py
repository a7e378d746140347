"""Progress a person can read while an attack runs: a bar over the defense's queries (every batched call of the
defense, attack steps and the harness's own predictions alike) with the rate and the time left, where a bar over
chunks would sit at `0/1 chunk` for minutes. The total is the attack's declared budget, so the bar may finish early
(Square stops querying samples it has broken) but never runs past an honest estimate."""
from __future__ import annotations

from types import TracebackType
from typing import Any

from tqdm import tqdm


class QueryProgress:
    """Counts a defense's `logits` calls for as long as it is entered, on a tqdm bar."""

    def __init__(self, defense: Any, calls_per_chunk: int | None, chunks: int, desc: str, enabled: bool) -> None:
        self.defense, self.chunks = defense, chunks
        total = None if calls_per_chunk is None else chunks * (calls_per_chunk + 2)  # + the clean and adv predictions
        self.bar = tqdm(total=total, desc=desc, unit="query", disable=not enabled or chunks == 0, leave=False,
                        dynamic_ncols=True)

    def __enter__(self) -> "QueryProgress":
        logits = self.defense.logits  # the bound method; an instance attribute shadows it while entered

        def counted(x: Any) -> Any:
            self.bar.update(1)
            return logits(x)

        self.defense.logits = counted
        return self

    def chunk_done(self, done: int) -> None:
        self.bar.set_postfix(chunk=f"{done}/{self.chunks}", refresh=False)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        del self.defense.logits
        self.bar.close()
