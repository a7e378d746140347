"""The job list of reports/reproduce-baselines.sh, read from the registered tables themselves (so the campaign
runs exactly the cells the tables show): one `otbench run` per (defense, attack, settings) with all its eps, at
the defense's campaign preset, assigned to one of two queues (one per core).

    python reports/baselines_jobs.py [--n 500] [--n-slow 500] > jobs.txt

Each line is `QUEUE: otbench-arguments`, QUEUE 0 (shared networks, trained first, one at a time), A or B (the
two cores, in parallel; a defense's jobs stay in one queue so no network is trained by both), or Z (the
reports, last). Preset: `cpu` where the paper's model needs a GPU (reports/README.md), else `paper`.
"""
from __future__ import annotations

import argparse
import json
import shlex
from collections import defaultdict

TABLES = ("otad-table-2", "otad-table-3", "otc-table-1-mnist", "otc-table-2", "baselines-strongest")
CPU_PRESET = {"soc-plus", "linf-dist-net"}  # preset `cpu`: the paper's needs a GPU (LipConvNet-15, width 5120)
# Label-only searches and Square: seconds per sample (issue 20 allows n >= 200 where CPU time does not allow 500)
SLOW_ATTACKS = {"square", "hopskipjump", "geoda", "autoattack"}
# The longest trainings go last in their queue, so every cheaper row is in the store first (hours each:
# reports/README.md); the rest are balanced over the two queues by this order.
LAST = ("ot-cla-adv", "cnn-pgd-at")
QUEUE_A = {"pgd-at", "stl", "soc-plus", "median-filter", "knn", "ot-cla-adv", "defense-gan"}


def cells() -> dict[tuple[str, str, str, str], set[float]]:
    """(defense, attack, attack settings, row overrides) -> the eps its columns ask, over every table."""
    from otbench.registry import TABLES as REGISTRY

    found: dict[tuple[str, str, str, str], set[float]] = defaultdict(set)
    for name in TABLES:
        spec = REGISTRY.get(name)()
        for row in spec.rows:
            if row.worst_of:  # computed from the cells of the rows it spans
                continue
            for col in spec.columns:
                if col.metric == "worst":
                    continue
                attack = row.attack or col.attack
                settings = {**col.attack_overrides, **row.attack_config}
                found[(row.defense, attack, json.dumps(settings, sort_keys=True),
                       json.dumps(row.overrides, sort_keys=True))].add(col.eps)
    return found


def job_lines(n: int, n_slow: int) -> list[str]:
    lines = ["0: train --dataset mnist --preset paper --defense standard --quiet"]  # the FC ResNet most rows share
    jobs = []
    for (defense, attack, settings, overrides), eps in sorted(cells().items()):
        preset = "cpu" if defense in CPU_PRESET else "paper"
        args = ["run", "--dataset", "mnist", "--preset", preset, "--defense", defense, "--attack", attack,
                "--eps", ",".join(f"{e:g}" for e in sorted(eps)), "--n", str(n_slow if attack in SLOW_ATTACKS else n),
                "--quiet"]
        for key, value in json.loads(settings).items():
            args += ["--set", f"attack.{key}={json.dumps(value)}"]
        for section, values in json.loads(overrides).items():
            args += [a for key, value in values.items() for a in ("--set", f"{section}.{key}={json.dumps(value)}")]
        queue = "A" if defense in QUEUE_A else "B"
        jobs.append((defense in LAST, queue, f"{queue}: {shlex.join(args)}"))
    lines += [line for _, _, line in sorted(jobs, key=lambda j: j[0])]  # stable: table order within each part
    out = "reports/paper"
    lines.append(f"Z: report --preset paper --fallback cpu,paper-v1,quick --tables {','.join(TABLES)} --out {out}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--n-slow", type=int, default=500)
    args = parser.parse_args()
    print("\n".join(job_lines(args.n, args.n_slow)))


if __name__ == "__main__":
    main()
