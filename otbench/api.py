"""`otbench.evaluate`: one call from a model to a table, in the style of `robustbench.eval.benchmark`.

It builds the same run plan `otbench run` builds (otbench.plan.RunPlan.grid), validates it whole, executes it
into the same results file (resumable: stored chunks are not recomputed) through the guard and the soundness
checks, and returns an `Evaluation`: a pandas DataFrame per attack and eps (clean, robust, the per-sample worst
case over the run's attacks at that eps, n, mean queries, seconds, flags) and, for minimum-norm attacks, the
robust accuracy curve (otbench.curves) per attack and its worst case over them.

`model` is a registered defense name, `FILE.py:NAME` (as on the command line), a `Defense` subclass or instance,
or a plain `torch.nn.Module` returning logits on inputs in the dataset's domain, wrapped with the capabilities
declared here (otbench.user_model; its cells carry the module's content fingerprint)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import OTBenchError

CURVE_POINTS = 21  # budgets on each curve's grid (besides the requested ones)


@dataclass
class Evaluation:
    defense: str  # the registered name the cells are stored under
    table: Any  # pandas.DataFrame: one row per (attack, eps)
    curves: Any  # pandas.DataFrame: attack ("worst-case" for the minimum over the min-norm attacks), eps, robust
    areas: dict[str, float]  # normalised area under each curve, on [0, its bound]
    distances: dict[str, dict[int, float]]  # per min-norm attack (and "worst-case"): sample id -> distance
    results: Path
    flags: list[Any] = field(default_factory=list)  # otbench.checks.Flag
    sample_ids: tuple[int, ...] = ()
    bounds: dict[str, float] = field(default_factory=dict)  # each curve's largest budget searched

    def robust_at(self, eps: float, attack: str | None = None) -> float:
        """Robust accuracy at any budget up to the attack's bound, from its minimum-norm distances (default: the
        worst case over the minimum-norm attacks, or the only one)."""
        from .curves import robust_accuracy

        if attack is None:
            attack = "worst-case" if "worst-case" in self.distances else next(iter(self.distances), "")
        if attack not in self.distances:
            raise OTBenchError(f"no minimum-norm curve for '{attack}'; curves: {', '.join(self.distances) or 'none'}")
        bound = self.bounds[attack]
        if eps > bound:
            raise OTBenchError(f"eps {eps:g} is beyond the largest budget {bound:g} searched by '{attack}'")
        return robust_accuracy(self.distances[attack], eps)


def _defense_name(model: Any, name: str | None, differentiable: bool, randomized: bool) -> tuple[str, Any]:
    """The registry name the plan uses for `model`, and a built Defense to use as is (or None)."""
    from torch import nn

    from .defense import Defense
    from .registry import DEFENSES
    from .user_model import register_defense_class, register_module

    if isinstance(model, str):
        DEFENSES.get(model)
        return model, None
    if isinstance(model, Defense):
        cls = type(model)
        if not (cls.name in DEFENSES and DEFENSES.get(cls.name) is cls) and not getattr(cls, "user_defined", False):
            raise OTBenchError(f"the Defense instance's class {cls.__qualname__} is not registered; pass the class "
                               f"itself, which otbench registers with a hash of its source")
        return cls.name, model
    if isinstance(model, type) and issubclass(model, Defense):
        registered = getattr(model, "name", None)
        if registered and registered in DEFENSES and DEFENSES.get(registered) is model:
            return registered, None
        return register_defense_class(model), None
    if isinstance(model, nn.Module):
        return register_module(model, name, differentiable, randomized), None
    raise OTBenchError(f"model must be a registered defense name, FILE.py:NAME, a Defense or a torch.nn.Module; got "
                       f"a {type(model).__name__}")


def evaluate(model: Any, dataset: str = "mnist", attacks: Sequence[str] = ("pgd",),
             eps: Sequence[float] | None = None, norm: str | None = "L2", n: int | None = 500,
             preset: str = "quick", results: str | Path | None = None, seed: int = 0, subset_seed: int = 0,
             device: str = "auto", *, chunk: int = 100, data_root: str | None = None, checks: bool = True,
             settings: dict[str, dict[str, Any]] | None = None, differentiable: bool = True,
             randomized: bool = False, name: str | None = None, progress: bool = False) -> Evaluation:
    """Evaluate `model` under `attacks` at budgets `eps` (default: each attack's own) on `n` test samples of
    `dataset` (None: the CLI's default), storing every cell in `results` (default: $OTBENCH_RESULTS, else
    ./otbench-results.sqlite). `norm` is given to every attack that has a norm setting (None: their own);
    `settings`: {"attack": {...}, "defense": {...}, "train": {...}} as `--set SECTION.KEY=VALUE`.
    `differentiable`, `randomized`, `name`: the declared capabilities and display name of a plain module (which
    is moved to `device` and put in eval mode, in place)."""
    from .plan import RunPlan, default_n, execute_into
    from .registry import ATTACKS

    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    defense_name, built = _defense_name(model, name, differentiable, randomized)
    overrides: dict[str, dict[str, Any]] = {s: dict(v) for s, v in (settings or {}).items()}
    if norm is not None and any("norm" in ATTACKS.get(a).defaults for a in attacks):
        overrides.setdefault("attack", {}).setdefault("norm", norm)
    n, _ = default_n(dataset, n)
    plan = RunPlan.grid(dataset, [defense_name], list(attacks), None if eps is None else [float(e) for e in eps],
                        preset, overrides, n=n, subset_seed=subset_seed, seed=seed, chunk=chunk, device=device,
                        data_root=data_root, checks=checks)
    plan.validate()
    if built is not None and built.data.name != dataset:
        raise OTBenchError(f"the Defense instance was built on '{built.data.name}', not on '{dataset}'")
    from . import training

    quiet = training._QUIET
    training.set_quiet(quiet or not progress)  # trainings inside defense constructors too (as --quiet)
    try:
        suites, path = execute_into(plan, results, progress, built=_built(plan, built))
    finally:
        training.set_quiet(quiet)
    return _evaluation(defense_name, suites[0], path)


def _built(plan: Any, defense: Any) -> dict[int, tuple[Any, Any]] | None:
    from .data import eval_subset

    if defense is None:
        return None
    return {id(plan.jobs[0]): (defense, eval_subset(len(defense.data.x_test), plan.n, plan.subset_seed))}


def _evaluation(defense: str, suite: Any, path: Path) -> Evaluation:
    import pandas as pd

    from . import curves as cv
    from .registry import ATTACKS
    from .store import ResultStore

    worst = {w["eps"]: w["robust_accuracy"] for w in suite.worst_case}
    flags_of: dict[str, list[str]] = {}
    for f in suite.flags:
        for cell_id in f.cells:
            flags_of.setdefault(cell_id, []).append(f.code)
    table = pd.DataFrame([{
        "attack": c.attack, "eps": c.eps, "clean": c.clean_accuracy, "robust": c.robust_accuracy,
        "worst_case": worst.get(c.eps, c.robust_accuracy), "n": c.n, "queries": c.mean_queries,
        "seconds": c.wall_seconds, "flags": ", ".join(sorted(set(flags_of.get(c.cell_id, [])))),
        "cell_id": c.cell_id} for c in suite.cells])
    # minimum-norm attacks: each one's cell at its largest budget gives its whole curve
    largest: dict[str, Any] = {}
    for c in suite.cells:
        if ATTACKS.get(c.attack).minimum_norm and (c.attack not in largest or c.eps > largest[c.attack].eps):
            largest[c.attack] = c
    dist: dict[str, dict[int, float]] = {}
    bounds: dict[str, float] = {}
    if largest:
        store = ResultStore(path)
        try:
            for attack, c in largest.items():
                dist[attack] = cv.distances(store.rows(c.cell_id, suite.sample_ids))
                bounds[attack] = c.eps
        finally:
            store.close()
        if len(largest) > 1:
            dist["worst-case"] = cv.worst_distances(list(dist.values()))
            bounds["worst-case"] = min(bounds.values())
    requested = sorted({c.eps for c in suite.cells})
    rows = []
    for attack, d in dist.items():
        grid = sorted({round(bounds[attack] * i / (CURVE_POINTS - 1), 12) for i in range(CURVE_POINTS)}
                      | {e for e in requested if e <= bounds[attack]})
        rows += [{"attack": attack, "eps": e, "robust": r, "n": len(d), "bound": bounds[attack]}
                 for e, r in zip(grid, cv.curve(d, grid))]
    curves = pd.DataFrame(rows, columns=["attack", "eps", "robust", "n", "bound"])
    return Evaluation(defense, table, curves, {a: cv.area(d, bounds[a]) for a, d in dist.items()}, dist, path,
                      list(suite.flags), tuple(suite.sample_ids), bounds)
