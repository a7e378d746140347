"""Runs (defense, attack, eps) cells over a deterministic test subset, chunk by chunk, into the store.

Classification cells store predicted labels; regression cells (defense.task == "regression", OTAD Table V)
store the defense's clean and perturbed outputs beside the target, and summarise them by MSE, E and SMAPE
(otbench.metrics); their label columns are 0 and their robust flags mean nothing."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .attacks import Attack, AttackOutput
from .attacks.base import GRADIENT_NEEDS
from .data import Dataset, EvalSubset
from .defense import Defense, check_finite_outputs, check_task
from .errors import OTBenchError
from .guard import check_threat_model
from .identity import cell_key, cell_network, network_signature, network_summary
from .metrics import regression_metrics
from .provenance import command_line, device_name, machine, package_versions
from .registry import ATTACKS
from .store import OutputRow, ResultStore, SampleRow

DEFAULT_CHUNK = 100


@dataclass
class CellSummary:
    dataset: str
    defense: str
    preset: str
    attack: str
    eps: float
    n: int
    clean_accuracy: float | None  # None for a regression cell
    robust_accuracy: float | None
    mean_queries: float | None
    wall_seconds: float
    cell_id: str
    computed: int  # samples computed by this call (the rest came from the store)
    mean_norm: float | None = None  # mean perturbation norm of the successful attacks (regression: of all)
    # regression cells only (otbench.metrics): MSE on clean and perturbed inputs, E and SMAPE of the change
    clean_mse: float | None = None
    adv_mse: float | None = None
    e: float | None = None
    smape: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, results: object = "the store") -> str:
        """One line: what the cell measured, on how many samples, and how much came from the store."""
        head = f"{self.dataset} {self.defense} [{self.preset}] {self.attack} eps={self.eps:g}"
        norm = f", mean norm {self.mean_norm:.3g}" if self.mean_norm is not None else ""
        tail = f"{self.wall_seconds:.0f} s, {self.computed} computed now, rest from {results}"
        if self.adv_mse is not None:  # a regression cell: MSE, E and SMAPE (otbench.metrics)
            return (f"{head}: MSE clean {self.clean_mse:.4f}, perturbed {self.adv_mse:.4f}, E {self.e:.4f}, SMAPE "
                    f"{self.smape:.4f} (n={self.n}{norm}; {tail})")
        if self.clean_accuracy is None:  # a regression cell without outputs (nothing stored yet)
            return f"{head}: no samples (n={self.n}; {tail})"
        queries = f", mean queries {self.mean_queries:.0f}" if self.mean_queries is not None else ""
        return (f"{head}: clean {100 * self.clean_accuracy:.1f}%, robust {100 * self.robust_accuracy:.1f}% "
                f"(n={self.n}{queries}{norm}; {tail})")


def _cell_id(defense: Defense, attack: Attack, seed: int, subset_seed: int, chunk_size: int) -> str:
    return cell_key(defense.identity, attack.name, attack.config, attack.eps, seed, subset_seed, chunk_size)


def is_regression(defense: Defense) -> bool:
    return defense.task == "regression"


@dataclass
class ChunkResult:
    """One evaluated chunk, wherever it ran: its rows (and regression outputs), wall time and device; `machine`
    and `versions` of the worker that computed it (None: this process's)."""

    rows: list[SampleRow]
    outputs: list[OutputRow] | None
    wall_seconds: float
    device: str
    machine: str | None = None
    versions: dict[str, str] | None = None


@dataclass
class OpenCell:
    """A cell being filled: its record and a `runs` row are in the store and `todo` lists its missing chunks.
    Chunks are fixed slices of the subset's order, so a resumed run recomputes exactly the same chunks, and a
    chunk's seed depends on the chunk alone, so any executor computes the same rows."""

    cell_id: str
    defense: Defense
    attack: Attack
    subset: EvalSubset
    seed: int
    todo: list[tuple[int, list[int]]]
    run_id: int
    versions: dict[str, str]
    host: str
    start: float = field(default_factory=time.time)
    computed: int = 0
    status: str = "running"

    @property
    def label(self) -> str:
        return f"{self.defense.name}/{self.attack.name} eps={self.attack.eps:g}"

    def chunk_seed(self, chunk: int) -> int:
        return self.seed * 1_000_003 + chunk


def open_cell(defense: Defense, attack_name: str, eps: float, subset: EvalSubset, store: ResultStore,
              attack_config: dict[str, Any] | None = None, seed: int = 0,
              chunk_size: int = DEFAULT_CHUNK) -> OpenCell:
    """Record the cell (if new), list the chunks the store lacks and start its `runs` row."""
    check_task(defense, defense.data.name, defense.data.task)
    attack: Attack = ATTACKS.get(attack_name)(defense, eps, **(attack_config or {}))
    cell_id = _cell_id(defense, attack, seed, subset.seed, chunk_size)
    data = defense.data
    store.ensure_cell(cell_id, {
        "dataset": data.name, "defense": defense.name, "defense_config": {**defense.config, **_model_meta(defense)},
        "attack": attack.name, "attack_config": {**attack.config, "chunk_size": chunk_size}, "eps": attack.eps,
        "seed": seed, "subset_seed": subset.seed, "preset": defense.config.get("preset")})
    check_same_network(store, cell_id, defense, attack)
    done = store.done_ids(cell_id)
    chunks = [(c, list(subset.ids[s:s + chunk_size])) for c, s in enumerate(range(0, len(subset.ids), chunk_size))]
    todo = [(c, ids) for c, ids in chunks if not set(ids) <= done]
    versions, host = package_versions(), machine()
    run_id = store.start_run(cell_id, command_line(), list(subset.ids), host, versions)
    return OpenCell(cell_id, defense, attack, subset, seed, todo, run_id, versions, host)


def compute_chunk(defense: Defense, attack: Attack, ids: list[int], seed: int) -> ChunkResult:
    """Evaluate one chunk in this process (the guard included: evaluate_chunk runs the attack through it)."""
    t0 = time.time()
    rows, outputs = evaluate_chunk(defense, attack, defense.data, ids, seed=seed)
    return ChunkResult(rows, outputs, time.time() - t0, device_name(defense.device))


def commit_chunk(store: ResultStore, cell: OpenCell, chunk: int, ids: list[int], result: ChunkResult) -> None:
    """Store a finished chunk, whole, in one transaction (only the process that owns the store calls this)."""
    store.add_chunk(cell.cell_id, chunk, result.rows,
                    {"wall_seconds": result.wall_seconds, "versions": result.versions or cell.versions,
                     "device": result.device, "machine": result.machine or cell.host}, result.outputs)
    cell.computed += len(ids)


def close_cell(store: ResultStore, cell: OpenCell, status: str) -> None:
    """Finish the cell's `runs` row ("complete" or "interrupted"); a second call does nothing."""
    if cell.status == "running":
        store.finish_run(cell.run_id, time.time() - cell.start, status)
        cell.status = status


def summarize_cell(store: ResultStore, cell: OpenCell) -> CellSummary:
    return summarize(store, cell.cell_id, cell.defense.data.name, cell.defense, cell.attack, cell.subset,
                     cell.computed)


def guarded_attack(attack: Attack, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[AttackOutput, torch.Tensor]:
    """Run `attack` on (x, y) and check every perturbation against its threat model (otbench.guard): the one
    way adversarial inputs reach a result, a stored cell or an analysis. Returns the output and the norms."""
    out = attack(x, y, seed=seed)
    norms = check_threat_model(x, out.adv, attack.norm, attack.eps, attack.name, attack.bounded,
                               attack.defense.data.domain)
    return out, norms


def attacked_inputs(defense: Defense, attack_name: str, eps: float, config: dict[str, Any], x: torch.Tensor,
                    y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Adversarial versions of x under a registered attack, through the guard (for analyses that need the
    inputs themselves, e.g. codes of adversarial images)."""
    check_task(defense, defense.data.name, defense.data.task)
    return guarded_attack(ATTACKS.get(attack_name)(defense, eps, **config), x, y, seed)[0].adv


def evaluate_chunk(defense: Defense, attack: Attack, data: Dataset, ids: list[int],
                   seed: int) -> tuple[list[SampleRow], list[OutputRow] | None]:
    """The rows of one chunk; for a regression defense also its outputs (None for classification)."""
    # A randomized defense draws its noise from the global generator, the clean prediction included: seeded by
    # the chunk, its rows depend on the chunk alone, not on what the process computed before (any executor,
    # any number of workers, a resumed run: the same rows).
    torch.manual_seed(seed)
    index = torch.tensor(ids)
    x, y = data.x_test[index], data.y_test[index]
    if is_regression(defense):
        return _evaluate_regression(defense, attack, x, y, ids, seed)
    clean = defense.predict(x)
    out, norms = guarded_attack(attack, x, y, seed)
    adv = defense.predict(out.adv)  # the harness evaluates the adversarial inputs itself
    queries = out.queries.tolist() if out.queries is not None else [None] * len(ids)
    return [SampleRow(i, int(l), int(c), int(a), float(nrm), None if q is None else int(q))
            for i, l, c, a, nrm, q in zip(ids, y.tolist(), clean.tolist(), adv.tolist(), norms.tolist(), queries)], None


def _outputs(defense: Defense, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """One scalar output per sample (the outputs table stores scalar targets)."""
    with torch.no_grad():
        out = torch.cat([defense.logits(x[i:i + batch_size].to(defense.device)).reshape(len(x[i:i + batch_size]), -1)
                         .cpu() for i in range(0, len(x), batch_size)])
    check_finite_outputs(defense.name, out)
    if out.shape[1] != 1:
        raise OTBenchError(f"defense '{defense.name}' has {out.shape[1]} outputs; the results store keeps one "
                           f"per sample (scalar regression targets)")
    return out[:, 0].double()


def _evaluate_regression(defense: Defense, attack: Attack, x: torch.Tensor, y: torch.Tensor, ids: list[int],
                         seed: int) -> tuple[list[SampleRow], list[OutputRow]]:
    clean = _outputs(defense, x)
    out, norms = guarded_attack(attack, x, y, seed)
    adv = _outputs(defense, out.adv)  # the harness evaluates the perturbed inputs itself
    queries = out.queries.tolist() if out.queries is not None else [None] * len(ids)
    rows = [SampleRow(i, 0, 0, 0, float(nrm), None if q is None else int(q))
            for i, nrm, q in zip(ids, norms.tolist(), queries)]
    outputs = [OutputRow(i, float(t), float(c), float(a))
               for i, t, c, a in zip(ids, y.double().reshape(-1).tolist(), clean.tolist(), adv.tolist())]
    return rows, outputs


def summarize(store: ResultStore, cell_id: str, dataset: str, defense: Defense, attack: Attack,
              subset: EvalSubset, computed: int) -> CellSummary:
    rows = store.rows(cell_id, subset.ids)
    n = len(rows)
    queries = [r.queries for r in rows if r.queries is not None]
    wall = sum(c["wall_seconds"] for c in store.chunk_records(cell_id))
    if is_regression(defense):
        outs = store.outputs(cell_id, subset.ids)
        m = regression_metrics([o.target for o in outs], [o.clean_out for o in outs], [o.adv_out for o in outs]) \
            if outs else {}
        return CellSummary(dataset, defense.name, defense.config.get("preset", ""), attack.name, attack.eps, n,
                           None, None, sum(queries) / len(queries) if queries else None, wall, cell_id, computed,
                           sum(r.pert_norm for r in rows) / max(n, 1), m.get("clean_mse"), m.get("mse"),
                           m.get("e"), m.get("smape"))
    # unbounded attacks (ngopt-cw) are read by the distortion they reached: the mean over successes
    won = [r.pert_norm for r in rows if r.clean_correct and not r.robust]
    return CellSummary(dataset, defense.name, defense.config.get("preset", ""), attack.name, attack.eps, n,
                       sum(r.clean_correct for r in rows) / max(n, 1), sum(r.robust for r in rows) / max(n, 1),
                       sum(queries) / len(queries) if queries else None, wall, cell_id, computed,
                       sum(won) / len(won) if won else None)


@dataclass
class SuiteResult:
    cells: list[CellSummary]
    worst_case: list[dict[str, Any]]
    flags: list[Any]  # otbench.checks.Flag
    sample_ids: tuple[int, ...] = ()

    def lines(self, results: object = "the store") -> list[str]:
        """What `otbench run` prints for one defense: its cells, the worst case per sample, the flags."""
        out = [c.text(results) for c in self.cells]
        out += [f"{w['defense']} eps={w['eps']:g}: worst case over {', '.join(w['attacks'])}: robust "
                f"{100 * w['robust_accuracy']:.1f}% (n={w['n']})" for w in self.worst_case]
        out += [f"  [{f.level}] {f.code}: {f.message}" for f in self.flags]
        return out


@dataclass
class OpenSuite:
    """One defense's cells, opened (open_suite) and not yet closed (close_suite): its attack cells, the cells
    of the undefended-network check per attack, and the preflight flags. Whatever fills the cells in between
    (this process, or an executor's workers) does not change what close_suite concludes."""

    defense: Defense
    subset: EvalSubset
    seed: int
    checks: bool
    attacks: list[str]
    cells: list[OpenCell]
    undefended: list[tuple[str, OpenCell]]
    flags: list[Any]

    def all_cells(self) -> list[OpenCell]:
        return self.cells + [cell for _, cell in self.undefended]


def open_suite(defense: Defense, attacks: dict[str, list[float]], subset: EvalSubset, store: ResultStore,
               attack_config: dict[str, Any] | None = None, seed: int = 0, chunk_size: int = DEFAULT_CHUNK,
               checks: bool = True, auto_eot: bool = True) -> OpenSuite:
    """Preflight checks on the defense, then open every (attack, eps) cell and, with `checks`, each attack's
    undefended-network cell. With `auto_eot` a randomized defense gets EOT for its gradient attacks; without,
    the settings are exactly the caller's (a report table's cells must carry the settings the table names)."""
    from . import checks as chk

    per_attack = split_attack_config(attack_config, list(attacks))
    flags: list[Any] = []
    randomized = defense.randomized
    if checks:
        index = torch.tensor(subset.ids[:16])
        x, y = defense.data.x_test[index], defense.data.y_test[index]
        pre = chk.preflight(defense, x, y, any(ATTACKS.get(a).needs in chk.GRADIENT_LIKE for a in attacks))
        randomized, flags = pre.randomized, list(pre.flags)
    cells, undefended = [], []
    for name, eps_list in attacks.items():
        config = dict(per_attack[name])
        if auto_eot and randomized and ATTACKS.get(name).needs in chk.GRADIENT_LIKE and "eot_samples" not in config:
            config["eot_samples"] = chk.DEFAULT_EOT  # a randomized defense gets EOT (Athalye et al. 2018)
        cells += [open_cell(defense, name, eps, subset, store, config, seed, chunk_size) for eps in eps_list]
        if checks and not is_regression(defense):  # the check reads accuracy against chance
            cell = open_undefended(defense, name, config, subset, store, seed)
            if cell is not None:
                undefended.append((name, cell))
    return OpenSuite(defense, subset, seed, checks, list(attacks), cells, undefended, flags)


def close_suite(store: ResultStore, suite: OpenSuite) -> SuiteResult:
    """Summaries of the filled cells, the worst case per sample over the attacks at each eps, and the soundness
    diagnostics of otbench.checks, recorded in the store beside the cells."""
    from . import checks as chk

    defense, subset = suite.defense, suite.subset
    summaries = [summarize_cell(store, cell) for cell in suite.cells]
    flags = list(suite.flags)
    for name, cell in suite.undefended:
        flags += undefended_flags(store, defense, name, cell)
    by_eps: dict[float, list[str]] = {}
    for s in summaries:
        by_eps.setdefault(s.eps, []).append(s.cell_id)
    worst = []
    if len(suite.attacks) > 1 and not is_regression(defense):  # a worst case over robust flags: classification
        for eps, cells in by_eps.items():
            if len(cells) > 1:
                worst.append({"defense": defense.name, "eps": eps, "attacks": suite.attacks,
                              **{k: v for k, v in worst_case(store, cells, subset.ids).items()
                                 if k in ("n", "robust_accuracy")}})
    if suite.checks:
        cell_ids = [s.cell_id for s in summaries]
        for f in flags:  # preflight flags concern the defense: attach them to this run's cells
            f.cells = f.cells or cell_ids
        group = [c for c in store.cells(dataset=defense.data.name, defense=defense.name)
                 if c["seed"] == suite.seed and c["subset_seed"] == subset.seed]
        flags += [f for f in chk.cell_flags(store, group) if set(f.cells) & set(cell_ids)]
        store.add_flags(flags)
    return SuiteResult(summaries, worst, flags, subset.ids)


def split_attack_config(attack_config: dict[str, Any] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """Attack settings per attack. `KEY` goes to every attack of the run that has that setting (`--set
    attack.steps=50`); `NAME.KEY` (or a [attack.NAME] table) to attack NAME only. A key no attack of the
    run knows is an error, never silently ignored."""
    from .errors import OTBenchError

    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in (attack_config or {}).items():
        if isinstance(value, dict) or "." in key:
            items = value.items() if isinstance(value, dict) else [(key.split(".", 1)[1], value)]
            target = key.split(".", 1)[0]
            if target not in out:
                raise OTBenchError(f"attack setting '{key}' names attack '{target}', which this run does not "
                                   f"use; attacks of this run: {', '.join(names)}")
            out[target].update(items)
            continue
        takers = [n for n in names if key in ATTACKS.get(n).defaults
                  or (key == "eot_samples" and ATTACKS.get(n).needs in GRADIENT_NEEDS)]
        if not takers:
            valid = sorted({k for n in names for k in ATTACKS.get(n).defaults})
            raise OTBenchError(f"unknown attack setting '{key}' for {', '.join(names)}; valid: {', '.join(valid)}")
        for n in takers:
            out[n].setdefault(key, value)
    return out


def open_undefended(defense: Defense, attack_name: str, attack_config: dict[str, Any], subset: EvalSubset,
                    store: ResultStore, seed: int) -> OpenCell | None:
    """The cell of the undefended-network check (otbench.checks: the attack at a budget that must break anything,
    on the defense's undefended network), opened; None where the check does not apply."""
    from . import checks as chk

    cls = ATTACKS.get(attack_name)
    if not cls.bounded or cls.needs == "nothing" or defense.undefended() is None:
        return None
    try:
        cls.check_capabilities(chk.UndefendedView)
    except OTBenchError:  # e.g. dml-attack: the undefended network has no metric network to attack
        return None
    norm = {**cls.defaults, **attack_config}.get("norm")
    if norm not in chk.LARGE_EPS:
        return None
    eps = chk.large_eps(norm, defense.data.input_dim)
    small = EvalSubset(subset.seed, subset.ids[:chk.UNDEFENDED_N])
    return open_cell(chk.UndefendedView(defense), attack_name, eps, small, store, attack_config, seed,
                     chk.UNDEFENDED_N)


def undefended_flags(store: ResultStore, defense: Defense, attack_name: str, cell: OpenCell) -> list[Any]:
    """The verdict of the undefended-network check on its filled cell: an attack that leaves the undefended
    network above chance is too weak to vouch for the defense."""
    from . import checks as chk

    s = summarize_cell(store, cell)
    chance = 1 / defense.data.num_classes
    if s.robust_accuracy is not None and s.robust_accuracy > chance + chk.CHANCE_MARGIN:
        norm = cell.attack.norm
        return [chk.Flag("undefended-not-broken", "warning",
                         f"{attack_name} ({norm}) at eps={s.eps:g} leaves the undefended network of {defense.name} "
                         f"at {100 * s.robust_accuracy:.0f}% robust accuracy on {s.n} samples (chance "
                         f"{100 * chance:.0f}%): the attack is too weak here to support a robustness claim",
                         [s.cell_id])]
    return []


def worst_case(store: ResultStore, cell_ids: list[str], ids: tuple[int, ...] | None = None,
               within: dict[str, float] | None = None, metric: str = "robust") -> dict[str, Any]:
    """Per sample, robust only if robust under every attack: the accuracy an adaptive adversary gets, on the
    samples every cell holds (of `ids`; None: all). A cell in `within` is a minimum-norm attack's, read at that
    budget (`SampleRow.robust_at`). Also each cell's own robust accuracy and the clean accuracy on those samples.
    `metric` "clean": `robust_accuracy` counts the samples correct in every cell's clean prediction instead.
    The one definition of the worst case: `otbench run`'s summary, the report tables and the leaderboard read it."""
    if metric not in ("robust", "clean"):
        raise ValueError(f"worst case of '{metric}': robust or clean")
    within = within or {}
    check_one_network(store, cell_ids)
    per_attack = [{r.sample_id: r for r in store.rows(c, ids)} for c in cell_ids]
    common = set.intersection(*(set(p) for p in per_attack)) if per_attack else set()

    def robust(cell_id: str, row: SampleRow) -> bool:
        if metric == "clean":
            return row.clean_correct
        return row.robust_at(within[cell_id]) if cell_id in within else row.robust

    per_cell = {c: sum(robust(c, p[i]) for i in common) / max(len(common), 1) for c, p in zip(cell_ids, per_attack)}
    worst = sum(all(robust(c, p[i]) for c, p in zip(cell_ids, per_attack)) for i in common)
    clean = sum(per_attack[0][i].clean_correct for i in common) if per_attack else 0
    return {"n": len(common), "robust_accuracy": worst / max(len(common), 1),
            "clean_accuracy": clean / max(len(common), 1), "per_cell": per_cell}


class MixedNetworks(OTBenchError):
    """Cells whose rows came from different trained networks (same settings, another CPU or thread count)."""


def check_one_network(store: ResultStore, cell_ids: list[str]) -> None:
    """Refuse a per-sample worst case over cells computed with different trained networks: sample i robust under
    attack A on one network and under B on another says nothing of either network."""
    networks = {cell_network(c): c for i in dict.fromkeys(cell_ids) for c in store.cells(cell_id=i)}
    if len(networks) > 1:
        seen = sorted(network_summary(c["defense_config"].get("trained"), 80) for c in networks.values())
        raise MixedNetworks(f"the cells {', '.join(cell_ids)} were computed with {len(networks)} different trained "
                            f"networks ({'; '.join(seen)}): no worst case across them")


def check_same_network(store: ResultStore, cell_id: str, defense: Defense, attack: Attack) -> None:
    """Refuse to add rows to a cell whose stored rows came from another trained network. The cell's key holds the
    settings, not the weights: a network retrained on another CPU model (another float reduction order) or
    thread count is another model, and extending its cell would mix two models in one number."""
    (cell,) = store.cells(cell_id=cell_id)
    stored = cell["defense_config"].get("trained")
    current = _model_meta(defense).get("trained")
    if stored is None or network_signature(stored) == network_signature(current):
        return
    raise OTBenchError(
        f"{defense.name}/{attack.name} eps={attack.eps:g}: the stored cell was computed with another network "
        f"({network_summary(stored)}) than the one built here ({network_summary(current)}), e.g. one trained on "
        f"another CPU model or thread count; its rows cannot be extended. Use another --results file, or the "
        f"machine and --threads that trained it")


def _model_meta(defense: Defense) -> dict[str, Any]:
    record = defense.train_record
    return {"trained": record} if record else {}
