"""The protocol every report table follows, whatever it holds: `collect` reads its values from the results
store, `fill` computes what the store lacks (through the run plan, the runner and its guard), `render` writes
it beside the paper's values (Markdown and CSV; LaTeX and figures where the kind has them). `otbench report`
calls these three and nothing else.

Two kinds cover the papers: `TableSpec` (rows of defenses x columns of attack cells, spec.py) and
`AnalysisTable` (sections of rows x metrics that may be attack cells, stored analyses or training records,
analysis.py). A table of another kind subclasses `Table` and implements the three methods."""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from ..executors.options import ExecutorOptions


@dataclass(frozen=True)
class ReportContext:
    """What a report run asks of every table: the preset its rows are read at (and the one a row may fall back
    to), and, when filling, the samples, seeds, chunk size, device and data root of the runs."""

    preset: str = "paper"
    fallback: tuple[str, ...] = ()  # presets a row with no result at `preset` is taken from, first found first
    n: int = 1000
    seed: int = 0
    subset_seed: int = 0
    chunk: int = 100
    device: str = "auto"
    data_root: str | None = None
    progress: bool = True
    # where filled chunks are computed, and the executor the command opened for all tables
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    backend: Any = field(default=None, compare=False, repr=False)

    def plan_options(self) -> dict[str, Any]:
        """The RunPlan keywords a table's fill uses."""
        return {"n": self.n, "subset_seed": self.subset_seed, "seed": self.seed, "chunk": self.chunk,
                "device": self.device, "data_root": self.data_root, "executor": self.executor}


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    paper: str  # the paper whose values stand beside the measured ones (otbench.report.paper)
    paper_table: str
    dataset: str
    _: KW_ONLY
    note: str = ""
    # the dataset the paper's values are filed under, when the table measures another variant of it
    paper_dataset: str | None = None

    def datasets(self) -> tuple[str, ...]:
        """The datasets `fill` loads (a table whose data are not on this machine is skipped)."""
        return (self.dataset,)

    def collect(self, store: Any, ctx: ReportContext) -> list[Any]:
        raise NotImplementedError

    def fill(self, store: Any, ctx: ReportContext) -> None:
        raise NotImplementedError

    def render(self, store: Any, out_dir: Path, ctx: ReportContext) -> list[Path]:
        raise NotImplementedError
