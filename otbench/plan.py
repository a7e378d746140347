"""A run plan: which defenses `otbench run` (or `otbench sweep`, `otbench report --fill`) evaluates under which
attacks and budgets, and where (the executor: `local` or `ray`, its workers). It is built once, validated as a
whole before any data is loaded, any model trained or any file written (`validate`), printed by `--dry-run`
(`describe`), then executed (`execute`, `execute_plans`): every defense is built here (training once), every
cell opened, all their missing chunks sent through the executor, and each finished chunk committed to the
results store by this process."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .config import SECTIONS
from .data import EvalSubset, dataset_meta, eval_subset, load_dataset, resolve_data_root
from .data.base import check_cache_writable
from .defense import Defense, build_config, check_task, create_defense
from .errors import OTBenchError
from .executors.options import ExecutorOptions
from .provenance import resolve_device
from .registry import ATTACKS, DATASETS, DEFENSES
from .runner import (DEFAULT_CHUNK, OpenSuite, SuiteResult, close_cell, close_suite, open_suite,
                     split_attack_config)
from .store import ResultStore, check_results_path, resolve_results_path
from .user_model import resolve as _resolve_user_defense  # noqa: F401  (registers FILE.py:NAME defenses)

if TYPE_CHECKING:
    from .executors import Executor


@dataclass(frozen=True)
class AttackJob:
    name: str
    eps: tuple[float, ...]
    config: dict[str, Any] = field(default_factory=dict)  # this attack's own settings (defaults filled later)


@dataclass(frozen=True)
class DefenseJob:
    name: str
    preset: str
    overrides: dict[str, dict[str, Any]]  # {"train": {...}, "defense": {...}}
    attacks: tuple[AttackJob, ...]


def vacuous_budget(attack: type, settings: dict[str, Any], eps: float, meta: Any) -> str | None:
    """Why a norm budget allows every input of the dataset's domain, or None. From any input of a box of side w
    in d dimensions every other input is within w in Linf, w sqrt(d) in L2 and w in RMS (L2 / sqrt(d))."""
    norms = getattr(attack, "norms", ())
    norm = settings.get("norm") or (norms[0] if len(norms) == 1 else None)
    if not getattr(attack, "bounded", True) or meta.domain is None or norm is None:
        return None
    low, high = meta.domain
    width = high - low
    if norm in ("Linf", "RMS") and eps >= width:
        return f"is at least the width {width:g} of the input domain [{low:g}, {high:g}] in {norm}"
    dim = getattr(meta, "input_dim", None)
    if norm == "L2" and dim and eps >= width * math.sqrt(dim):
        return (f"is at least the L2 diameter {width * math.sqrt(dim):.4g} of the input domain [{low:g}, {high:g}]^"
                f"{dim}")
    return None


@dataclass
class RunPlan:
    dataset: str
    jobs: list[DefenseJob]
    n: int
    subset_seed: int = 0
    seed: int = 0
    chunk: int = DEFAULT_CHUNK
    device: str = "auto"
    data_root: str | None = None
    checks: bool = True
    auto_eot: bool = True  # False: attack settings exactly as given (report tables), no EOT added
    # where the chunks are computed (otbench.executors): the numbers do not depend on it
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)
    allow_vacuous_eps: bool = False  # True: a budget that allows every input in the domain is run anyway

    @classmethod
    def grid(cls, dataset: str, defenses: list[str], attacks: list[str], eps: list[float] | None, preset: str,
             overrides: dict[str, dict[str, Any]], **options: Any) -> "RunPlan":
        """Every defense under every attack, each at `eps` (default: the attack's own `default_eps`). Attack
        settings: `KEY` goes to every attack that has it, `NAME.KEY` to attack NAME only."""
        for name in attacks:
            ATTACKS.get(name)
            if eps is None and not ATTACKS.get(name).default_eps:
                raise OTBenchError(f"attack '{name}' has no default budget; give one with --eps")
        per_attack = split_attack_config(overrides.get("attack"), attacks)
        jobs = [AttackJob(a, tuple(eps) if eps is not None else ATTACKS.get(a).default_eps, per_attack[a])
                for a in attacks]
        methods = {s: overrides.get(s, {}) for s in SECTIONS if s != "attack"}
        return cls(dataset, [DefenseJob(d, preset, methods, tuple(jobs)) for d in defenses], **options)

    # -- checking ---------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Every name, setting, budget and capability of the plan, without loading data or building a model;
        the first problem is a one-line OTBenchError naming the valid choices."""
        DATASETS.get(self.dataset)
        meta = dataset_meta(self.dataset)
        for option in ("n", "chunk"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OTBenchError(f"--{option} must be an integer of at least 1, got {value!r}")
        for option in ("seed", "subset_seed"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise OTBenchError(f"--{option.replace('_', '-')} must be an integer >= 0, got {value!r}")
        if meta.test_size is not None and self.n > meta.test_size:
            raise OTBenchError(f"--n {self.n} is more than the {meta.test_size} test samples of '{self.dataset}'; "
                               f"valid: 1 to {meta.test_size}")
        self.executor.check()
        if not self.jobs or not all(job.attacks for job in self.jobs):
            raise OTBenchError("the run plan is empty: give at least one defense (--defense) and one attack (--attack)")
        for job in self.jobs:
            cls = DEFENSES.get(job.name)
            build_config(cls, job.preset, job.overrides)  # presets, setting names and types
            if self.executor.distributed and getattr(cls, "user_defined", False):
                raise OTBenchError(f"defense '{cls.name}' comes from a file or a Python object, which Ray workers "
                                   f"cannot import; use --executor local")
            check_task(cls, self.dataset, meta.task)
            for attack in job.attacks:
                acls = ATTACKS.get(attack.name)
                acls.check_capabilities(cls)
                acls.check_domain(meta.domain, self.dataset)
                if not attack.eps:
                    raise OTBenchError(f"attack '{attack.name}' has no budget to run at; give one with --eps")
                for eps in attack.eps:
                    if not isinstance(eps, (int, float)) or not math.isfinite(eps):
                        raise OTBenchError(f"eps must be a finite number, got {eps!r} for attack '{attack.name}'")
                    settings = acls.settings(attack.config, eps)
                    why = vacuous_budget(acls, settings, eps, meta)
                    if why and not self.allow_vacuous_eps:
                        raise OTBenchError(f"eps {eps:g} for attack '{attack.name}' {why}: every input in the domain "
                                           f"is allowed, so robust accuracy under it means nothing; give a smaller "
                                           f"eps, or --allow-vacuous-eps to run it anyway")
        self.check_device()
        resolve_data_root(self.data_root)  # a named data root must exist (nothing is created for a typo)
        check_cache_writable()

    def check_device(self) -> None:
        """The device must exist here, except on Ray, whose workers may have GPUs the driver lacks (the
        executor checks the cluster's when it starts)."""
        try:
            resolve_device(self.device)
        except OTBenchError:
            if not self.executor.distributed or not str(self.device).startswith("cuda"):
                raise

    def describe(self) -> list[str]:
        """The plan as lines a person can check before it runs (`--dry-run`)."""
        lines = [f"dataset {self.dataset}: {self.n} test samples (subset seed {self.subset_seed}), attack seed "
                 f"{self.seed}, chunks of {self.chunk}, device {self.device}, checks {'on' if self.checks else 'off'}",
                 self.executor.describe()]
        cells = 0
        for job in self.jobs:
            sets = ", ".join(f"{s}.{k}={v}" for s, kv in job.overrides.items() for k, v in kv.items())
            lines.append(f"defense {job.name} [preset {job.preset}]" + (f" with {sets}" if sets else ""))
            for attack in job.attacks:
                settings = ATTACKS.get(attack.name).settings(attack.config, attack.eps[0])
                lines.append(f"  {attack.name} at eps {', '.join(f'{e:g}' for e in attack.eps)}: "
                             + ", ".join(f"{k}={v}" for k, v in settings.items()))
                cells += len(attack.eps)
        lines.append(f"{cells} cells, {cells * self.n} attacked samples at most (stored ones are not recomputed)")
        return lines

    # -- running ----------------------------------------------------------------------------------------------
    def execute(self, store: ResultStore | str | Path | None, progress: bool = True,
                backend: "Executor | None" = None) -> list[SuiteResult]:
        """Load the data, build each defense (training it if no cached model matches) and run its cells
        through the executor (the plan's own, or `backend`, one opened by the caller for several plans). A
        store given as a path is opened only once the defenses are built: a mistake found until then leaves no
        file behind."""
        return execute_plans([self], store, progress, backend)[0]

    def run_job(self, job: DefenseJob, defense: Defense, subset: EvalSubset, store: ResultStore,
                progress: bool = True, backend: "Executor | None" = None) -> SuiteResult:
        """One defense's cells, on a defense the caller built (an analysis that needs the defense too)."""
        return execute_plans([self], store, progress, backend, built={id(job): (defense, subset)})[0][0]

    def open_job(self, job: DefenseJob, defense: Defense, subset: EvalSubset, store: ResultStore) -> OpenSuite:
        budgets = {a.name: list(a.eps) for a in job.attacks}
        configs = {a.name: dict(a.config) for a in job.attacks}
        return open_suite(defense, budgets, subset, store, configs, seed=self.seed, chunk_size=self.chunk,
                          checks=self.checks, auto_eot=self.auto_eot)


def default_n(dataset: str, n: int | None) -> tuple[int, str | None]:
    """--n as given; else the papers' 1000, or the whole test set where it is smaller, with a note saying so."""
    if n is not None:
        return n, None
    DATASETS.get(dataset)
    size = dataset_meta(dataset).test_size
    if size is not None and size < 1000:
        return size, f"otbench: --n not given: all {size} test samples of '{dataset}' (fewer than 1000)"
    return 1000, None


def execute_into(plan: RunPlan, results: str | Path | None, progress: bool = True,
                 built: dict[int, tuple[Defense, EvalSubset]] | None = None) -> tuple[list[SuiteResult], Path]:
    """What `otbench run` and `otbench.evaluate` do with a validated plan: resolve and check the results file
    (before any data is loaded; the file itself is made once the defenses are built), then execute."""
    path = resolve_results_path(results)
    check_results_path(path)
    return execute_plans([plan], path, progress, built=built)[0], path


def execute_plans(plans: list[RunPlan], store: ResultStore | str | Path | None, progress: bool = True,
                  backend: "Executor | None" = None,
                  built: dict[int, tuple[Defense, EvalSubset]] | None = None
                  ) -> list[list[SuiteResult]]:
    """Run several plans as one grid: build every defense here (once per dataset, name, preset and settings;
    training, if any, happens here, once), open every cell, send all their missing chunks through one executor
    (one progress bar over the grid), then close each defense's cells (summaries, worst case, flags). Without
    `backend`, the first plan's executor is opened and closed here; `built`: defenses a caller built, by id(job)."""
    from .executors import dispatch, open_executor

    built = dict(built or {})
    opened = None  # the store, when this opened it from a path
    own = backend is None
    executor = backend or open_executor(plans[0].executor, plans[0].device)  # Ray's workers start meanwhile
    try:
        datasets: dict[tuple[str, str | None], Any] = {}
        defenses: dict[str, Defense] = {}
        jobs: list[tuple[int, RunPlan, DefenseJob, Defense, EvalSubset]] = []
        for i, plan in enumerate(plans):  # every defense first: a failing build leaves no cell half-open
            for job in plan.jobs:
                if id(job) in built:
                    jobs.append((i, plan, job, *built[id(job)]))
                    continue
                key = (plan.dataset, plan.data_root)
                if key not in datasets:
                    datasets[key] = load_dataset(plan.dataset, plan.data_root)
                data = datasets[key]
                if plan.n > len(data.x_test):
                    raise OTBenchError(f"--n {plan.n} is more than the {len(data.x_test)} test samples of "
                                       f"'{plan.dataset}'; valid: 1 to {len(data.x_test)}")
                name = json.dumps([*key, plan.device, job.name, job.preset, job.overrides], sort_keys=True)
                if name not in defenses:  # the same defense in several plans (seeds of a sweep): built once
                    defenses[name] = create_defense(job.name, data, job.preset, job.overrides, _driver_device(plan))
                jobs.append((i, plan, job, defenses[name], eval_subset(len(data.x_test), plan.n, plan.subset_seed)))
        if not isinstance(store, ResultStore):
            store = opened = ResultStore(store)
        suites: list[list[OpenSuite]] = [[] for _ in plans]
        try:
            for i, plan, job, defense, subset in jobs:
                suites[i].append(plan.open_job(job, defense, subset, store))
            dispatch(executor, [c for group in suites for s in group for c in s.all_cells()], store, progress)
        finally:  # whatever stopped the grid, no `runs` row is left "running" (closed ones stay as they are)
            for group in suites:
                for suite in group:
                    for cell in suite.all_cells():
                        close_cell(store, cell, "interrupted")
        return [[close_suite(store, s) for s in group] for group in suites]
    finally:
        if own:
            executor.close()
        if opened is not None:
            opened.close()


def evaluate_defense(defense: Defense, attacks: dict[str, Sequence[float]], subset: EvalSubset,
                     store: ResultStore | str | Path | None, attack_config: dict[str, Any] | None = None, *,
                     seed: int = 0, chunk: int = DEFAULT_CHUNK, checks: bool = True, auto_eot: bool = True,
                     progress: bool = False, backend: "Executor | None" = None) -> SuiteResult:
    """Every (attack, eps) cell of a defense already built (a purpose-made one too), on `subset`: the run plan
    the CLI executes, with this defense in place of one built from the registry. Attack settings as in
    `RunPlan.grid` (`KEY` to every attack that has it, `NAME.KEY` or {NAME: {...}} to one)."""
    per_attack = split_attack_config(attack_config, list(attacks))
    job = DefenseJob(defense.name, str(defense.config.get("preset")), {},
                     tuple(AttackJob(name, tuple(eps), per_attack[name]) for name, eps in attacks.items()))
    plan = RunPlan(defense.data.name, [job], n=len(subset.ids), subset_seed=subset.seed, seed=seed, chunk=chunk,
                   device=str(defense.device), checks=checks, auto_eot=auto_eot)
    return plan.run_job(job, defense, subset, store, progress, backend)


def _driver_device(plan: RunPlan) -> Any:
    """Where the driver builds (and trains) a defense: the plan's device, except for a Ray plan asking for cuda
    on a driver without a GPU (validate() let it through: the workers have the GPUs), which builds on the CPU."""
    try:
        return resolve_device(plan.device)
    except OTBenchError:
        if not plan.executor.distributed:
            raise
        return resolve_device("cpu")
