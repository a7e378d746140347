"""`otbench list | train | run | sweep | report | merge`. User mistakes print one line and exit 2, never a
traceback."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import OTBenchError, clear_interrupt, interrupt

KINDS = ("defenses", "attacks", "datasets", "tables")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding MNIST/raw etc. (default: $OTBENCH_DATA, else the user cache)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", help="a registered dataset (otbench list datasets)")
    p.add_argument("--preset", default="quick", help="paper (the paper's settings) or quick (minutes on a CPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting, e.g. defense.K=5, train.epochs=3, attack.n_queries=500")
    p.add_argument("--config", help="TOML/JSON file with [defense], [train], [attack] settings")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack (and of nothing else)")


def _executor_args(p: argparse.ArgumentParser) -> None:
    """Where the chunks are computed (otbench.executors); the numbers do not depend on it."""
    p.add_argument("--executor", default="local", help="local (default: this process) or ray (pip install "
                                                       "'otbench[ray]')")
    p.add_argument("--workers", type=int, default=None,
                   help="ray: worker processes (default: one per GPU when the cluster has GPUs, else one per CPU)")
    p.add_argument("--ray-address", default=None,
                   help="ray: the cluster to join, e.g. auto or HOST:6379 (default: $RAY_ADDRESS, else a local Ray "
                        "started for the run)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="ray: GPUs per worker, fractions allowed (default: 1 when the cluster has GPUs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per worker (ray default 1; local default torch's own); equal thread "
                        "counts give bit-identical numbers")


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-vacuous-eps", action="store_true",
                   help="run a budget that allows every input in the domain (Linf >= 1, L2 >= sqrt(d) on [0, 1]), "
                        "refused otherwise")


def _executor_options(args: argparse.Namespace) -> Any:
    """The --executor options as the one value the plan, the report and the executors share (checked there)."""
    from .executors.options import ExecutorOptions

    return ExecutorOptions(args.executor, args.workers, args.ray_address, args.gpus_per_worker, args.threads)


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() (and a terminal) breaks at


def one_line(message: str) -> str:
    """An error is one line even when it quotes what the user typed (a name, a --set or a file with a line break
    in it; Hypothesis found a form feed): every line break is written escaped."""
    return "".join(c.encode("unicode_escape").decode() if c in _LINE_BREAKS else c for c in message)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line pointing at --help, like every other otbench error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="otbench", description="Benchmark adversarial robustness of OT defenses.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered defenses, attacks, datasets and report tables")
    p.add_argument("kind", nargs="?", choices=KINDS, help="one kind only")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train (or load from the cache) the model behind a defense")
    p.add_argument("--defense", required=True)
    _model_args(p)
    _common(p)

    p = sub.add_parser("run", help="evaluate defenses under attacks; results go to the results database")
    p.add_argument("--defense", required=True, type=_csv, help="one or more, comma-separated")
    p.add_argument("--attack", required=True, type=_csv, help="one or more, comma-separated")
    p.add_argument("--eps", type=_floats, default=None,
                   help="comma-separated budgets (default: each attack's own, `otbench list attacks`)")
    p.add_argument("--n", type=int, default=None,
                   help="number of test samples (default: the papers' 1000, or the whole test set when smaller)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the random test subset")
    p.add_argument("--chunk", type=int, default=100, help="samples per committed chunk (resume granularity)")
    p.add_argument("--results", help="results database (default: $OTBENCH_RESULTS, else ./otbench-results.sqlite)")
    p.add_argument("--no-checks", action="store_true", help="skip the soundness diagnostics (README: Diagnostics)")
    p.add_argument("--dry-run", action="store_true", help="check and print the run plan, compute nothing")
    _budget_args(p)
    _model_args(p)
    _executor_args(p)
    _common(p)

    p = sub.add_parser("sweep", help="run a grid declared in a TOML file (defenses x attacks x eps x presets x seeds)")
    p.add_argument("file", help="the sweep file (its format: otbench/sweep.py, README)")
    p.add_argument("--results", help="results database (default: $OTBENCH_RESULTS, else ./otbench-results.sqlite)")
    p.add_argument("--dry-run", action="store_true", help="check and print every run plan, compute nothing")
    _budget_args(p)
    _executor_args(p)
    _common(p)

    p = sub.add_parser("report", help="render registered tables from the results into reports/")
    p.add_argument("--tables", type=_csv, default=None, help="comma-separated (default: all)")
    p.add_argument("--out", help="output folder (default: reports/<preset>)")
    p.add_argument("--preset", default="paper", help="which preset's results to report (default: paper)")
    p.add_argument("--fallback", metavar="PRESET[,PRESET]", type=_csv,
                   help="fill a row with no result at --preset from this preset (e.g. quick), marked in the table")
    p.add_argument("--results", help="results database (default: $OTBENCH_RESULTS, else ./otbench-results.sqlite)")
    p.add_argument("--fill", action="store_true", help="first run every missing cell of the tables")
    p.add_argument("--html", metavar="DIR", help="write the leaderboard site (opens from file://, no network) into DIR "
                                                 "instead of the tables; the results database is only read")
    p.add_argument("--n", type=int, default=1000, help="samples per cell when filling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=100)
    _executor_args(p)
    _common(p)

    p = sub.add_parser("merge", help="copy the cells of other results databases (e.g. from a GPU machine) into one")
    p.add_argument("sources", nargs="+", help="results databases to merge from")
    p.add_argument("--results", help="target database (default: $OTBENCH_RESULTS, else ./otbench-results.sqlite)")
    p.add_argument("--json", action="store_true")
    return parser


def cmd_list(args: argparse.Namespace) -> dict[str, Any]:
    from .registry import ATTACKS, DATASETS, DEFENSES, TABLES

    out: dict[str, Any] = {}
    kinds = [args.kind] if args.kind else list(KINDS)
    if "defenses" in kinds:
        out["defenses"] = {n: {"description": c.description, "differentiable": c.differentiable,
                               "randomized": c.randomized, "surrogate": c.surrogate_description,
                               "presets": sorted(c.presets)} for n in DEFENSES.names() for c in [DEFENSES.get(n)]}
    if "attacks" in kinds:
        out["attacks"] = {n: {"description": c.description, "threat_model": c.threat_model(),
                              "defaults": c.defaults, "default_eps": list(c.default_eps)}
                          for n in ATTACKS.names() for c in [ATTACKS.get(n)]}
    if "datasets" in kinds:
        out["datasets"] = DATASETS.names()
    if "tables" in kinds:
        out["tables"] = {n: TABLES.get(n)().title for n in TABLES.names()}
    if not args.json:
        for kind, entries in out.items():
            print(f"{kind}:")
            if isinstance(entries, list):
                for n in entries:
                    print(f"  {n}")
                continue
            for name, info in entries.items():
                if isinstance(info, str):
                    print(f"  {name:16s} {info}")
                elif kind == "defenses":
                    caps = ("differentiable" if info["differentiable"] else "non-differentiable") + \
                           (", randomized" if info["randomized"] else "")
                    print(f"  {name:16s} {info['description']} [{caps}; BPDA surrogate: {info['surrogate']}; "
                          f"presets: {', '.join(info['presets'])}]")
                else:
                    print(f"  {name:16s} {info['description']} [{info['threat_model']}]")
    return out


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from .config import SECTIONS, load_config_file, parse_overrides

    merged: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    if getattr(args, "config", None) is not None:  # an empty --config is a mistake, not "no file"
        for s, values in load_config_file(args.config).items():
            merged[s].update(values)
    for s, values in parse_overrides(args.overrides).items():
        merged[s].update(values)
    return merged


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from .data import dataset_meta, load_dataset
    from .defense import build_config, check_task, create_defense
    from .provenance import resolve_device
    from .registry import DATASETS, DEFENSES
    from .user_model import resolve  # noqa: F401  (--defense FILE.py:NAME)

    cls = DEFENSES.get(args.defense)  # every name and setting is checked before any data is loaded
    DATASETS.get(args.dataset)
    overrides = _overrides(args)
    if overrides["attack"]:  # silently ignored otherwise
        raise OTBenchError(f"train uses no attack settings (got {', '.join(sorted(overrides['attack']))}); give "
                           f"defense.KEY or train.KEY settings, attack settings go to `otbench run`")
    build_config(cls, args.preset, overrides)
    check_task(cls, args.dataset, dataset_meta(args.dataset).task)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_root)
    start = time.time()
    defense = create_defense(args.defense, data, args.preset, overrides, device)
    out = {"defense": args.defense, "dataset": args.dataset, "preset": args.preset,
           "train": defense.config.get("train"), "record": defense.train_record,
           "seconds": round(time.time() - start, 1)}
    if not args.json:
        print(f"{args.defense} on {args.dataset} (preset {args.preset}): {out['record']}")
    return out


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from .plan import RunPlan, default_n, execute_into
    from .store import resolve_results_path

    path = resolve_results_path(args.results)  # an empty --results is a mistake, even in a dry run
    n, note = default_n(args.dataset, args.n)
    plan = RunPlan.grid(args.dataset, args.defense, args.attack, args.eps, args.preset, _overrides(args), n=n,
                        subset_seed=args.subset_seed, seed=args.seed, chunk=args.chunk, device=args.device,
                        data_root=args.data_root, checks=not args.no_checks,
                        allow_vacuous_eps=args.allow_vacuous_eps, executor=_executor_options(args))
    plan.validate()  # the whole plan, before any data is loaded or any model trained
    if note:
        print(note, file=sys.stderr)
    if args.dry_run:
        lines = plan.describe()
        if not args.json:
            print("\n".join(lines))
        return {"plan": lines}
    results, path = execute_into(plan, path, progress=not args.quiet)
    return _results(args, results, path, args.subset_seed)


def _results(args: argparse.Namespace, results: list[Any], path: Path, subset_seed: int) -> dict[str, Any]:
    """Print (unless --json) and return what `run` and `sweep` computed."""
    if not args.json:
        for result in results:
            print("\n".join(result.lines(path)))
    return {"cells": [s.as_dict() for r in results for s in r.cells],
            "worst_case": [w for r in results for w in r.worst_case],
            "flags": [f.as_dict() for r in results for f in r.flags], "subset_seed": subset_seed,
            "sample_ids": list(results[0].sample_ids) if results else [], "results": str(path)}


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from .plan import execute_plans
    from .store import ResultStore, resolve_results_path
    from .sweep import sweep_plans

    resolve_results_path(args.results)  # an empty --results is a mistake, even in a dry run
    options = _executor_options(args)
    options.check()  # a command-line mistake is not the file's
    plans = sweep_plans(args.file, data_root=args.data_root, allow_vacuous_eps=args.allow_vacuous_eps,
                        executor=options)
    if args.device != "auto":  # --device on the command line wins over the file's
        for plan in plans:
            plan.device = args.device
            plan.check_device()
    if args.dry_run:
        lines = [line for plan in plans for line in plan.describe()]
        if not args.json:
            print("\n".join(lines))
        return {"plan": lines}
    with ResultStore(args.results) as store:
        results = [r for group in execute_plans(plans, store, progress=not args.quiet) for r in group]
    return _results(args, results, store.path, plans[0].subset_seed)


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    from .files import check_output_folder
    from .registry import DEFENSES, TABLES
    from .report.table import ReportContext
    from .store import ResultStore

    if args.tables == []:  # `--tables ''` would otherwise render every table
        raise OTBenchError(f"--tables is empty; give table names (valid: {', '.join(TABLES.names())}) or leave it "
                           f"out for all")
    specs = [TABLES.get(n)() for n in (TABLES.names() if args.tables is None else args.tables)]
    known = sorted({p for n in DEFENSES.names() for p in DEFENSES.get(n).presets})
    fallback = tuple(args.fallback or ())
    for option, value in [("--preset", args.preset)] + [("--fallback", f) for f in fallback]:
        if value not in known:  # a typo would otherwise render every cell 'not run'
            raise OTBenchError(f"unknown {option} '{value}'; valid: {', '.join(known)}")
    ctx = ReportContext(preset=args.preset, fallback=fallback, n=args.n, seed=args.seed,
                        subset_seed=args.subset_seed, chunk=args.chunk, device=args.device, data_root=args.data_root,
                        progress=not args.quiet, executor=_executor_options(args))
    ctx.executor.check()
    if args.html and not args.fill:
        return _site(args, ctx)
    out_dir = check_output_folder(args.out if args.out is not None else Path("reports") / args.preset, "--out")
    # without --fill, report only reads: a missing (mistyped) results file is an error, never an empty one made
    with ResultStore(args.results, read_only=not args.fill) as store:
        if args.fill:
            _fill(args, specs, store, ctx)
        if args.html:
            store.close()
            return _site(args, ctx)
        written = {}
        for spec in specs:
            paths = spec.render(store, out_dir, ctx)
            written[spec.name] = [str(p) for p in paths]
            if not args.json:
                print(f"{spec.name}: " + ", ".join(str(p) for p in paths))
    return {"written": written}


def _site(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    """`report --html DIR`: the leaderboard site, from the results database opened read-only."""
    from .report.site import write_site
    from .store import ResultStore, resolve_results_path

    out = Path(args.html)
    if out.exists() and not out.is_dir():
        raise OTBenchError(f"--html {out}: not a folder; give a folder for the site (made if missing)")
    if not out.parent.is_dir():
        raise OTBenchError(f"--html {out}: folder {out.parent} does not exist")
    store = ResultStore(resolve_results_path(args.results), read_only=True)
    try:
        paths = write_site(store, out, ctx, args.tables)
    finally:
        store.close()
    if not args.json:
        print(f"leaderboard site: {paths[0]} ({len(paths)} pages)")
    return {"site": str(paths[0]), "pages": [str(p) for p in paths]}


def _fill(args: argparse.Namespace, specs: list[Any], store: Any, ctx: Any) -> None:
    """Every table's missing cells, through one executor opened for all of them (one Ray, one worker pool)."""
    from dataclasses import replace

    from .data import load_dataset
    from .executors import open_executor

    executor = open_executor(ctx.executor, ctx.device)
    ctx = replace(ctx, backend=executor)
    try:
        for spec in specs:
            problems = []
            for dataset in spec.datasets():
                try:
                    load_dataset(dataset, args.data_root)
                except OTBenchError as exc:
                    problems.append(str(exc))
            if len(problems) == len(spec.datasets()):  # none of its data is on this machine: skip, fill the rest
                print(f"{spec.name}: not filled, {problems[0]}", file=sys.stderr)
                continue
            spec.fill(store, ctx)
    finally:
        executor.close()


def cmd_merge(args: argparse.Namespace) -> dict[str, Any]:
    from .store import merge_into

    def say(source: Path, path: Path, counts: dict[str, int]) -> None:
        if not args.json:
            print(f"{source} -> {path}: " + ", ".join(f"{v} new {k}" for k, v in counts.items()))

    _, out = merge_into(args.results, args.sources, say)
    return {"merged": out}


COMMANDS = {"list": cmd_list, "train": cmd_train, "run": cmd_run, "sweep": cmd_sweep, "report": cmd_report,
            "merge": cmd_merge}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from .provenance import set_command
    from .training import set_quiet

    set_command(argv)
    set_quiet(getattr(args, "quiet", False))  # trainings started inside defense constructors too
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the run is marked interrupted; finished chunks are stored anyway.
    # Both are remembered (errors.interrupt), so one a library swallows still stops the run.
    clear_interrupt()
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        out = COMMANDS[args.command](args)
    except OTBenchError as exc:
        print(f"otbench: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("otbench: interrupted; every finished chunk is stored; rerun the same command to resume",
              file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
