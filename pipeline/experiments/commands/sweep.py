"""``python -m pipeline sweep CONFIG``: train and evaluate a bundle per (method, training-set size, seed), then
write ``results.csv``, ``curves.csv``, ``results.md`` and the plots (see :mod:`pipeline.experiments.report`); a
selection sweep (``test: false``) trains only and reports validation Dice."""

from __future__ import annotations

import argparse
import shlex
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep config (YAML), e.g. configs/kvasir_fewshot.yaml")
    parser.add_argument("--methods", nargs="*", help="run only these of the config's methods")
    parser.add_argument("--k-shots", nargs="*", type=int, help="run only these of the config's k_shots")
    parser.add_argument("--seeds", nargs="*", type=int, help="run only these of the config's seeds")
    parser.add_argument("--dry-run", action="store_true", help="write the splits and print the commands only")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: tabulate the runs done so far (a grid run in parts, or still running)")


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import PipelineError
    from pipeline.experiments.report import eta
    from pipeline.experiments.sweep import (
        Sweep,
        collect,
        done,
        planned_run,
        run_folder,
        run_one,
        write_results,
        write_splits,
    )

    sweep = Sweep.load(args.config)

    def only(option: str, chosen: list | None, available):
        """The config's ``available`` items that ``chosen`` names (all when not given), in the config's order."""
        unknown = sorted(set(chosen or ()) - set(available))
        if unknown:
            raise PipelineError(f"--{option} {unknown} are not in {args.config}")
        return [item for item in available if not chosen or item in chosen]

    sweep.methods = {m: sweep.methods[m] for m in only("methods", args.methods, sweep.methods)}
    sweep.k_shots = only("k-shots", args.k_shots, sweep.k_shots)
    sweep.seeds = only("seeds", args.seeds, sweep.seeds)
    splits = write_splits(sweep)
    plan = [(method, name, path) for name, path in splits.items() for method in sweep.methods]
    if args.dry_run:
        for method, name, path in plan:
            for command in planned_run(sweep, method, name, path).commands:
                print(shlex.join(command))
        return 0
    todo = [(method, name, path) for method, name, path in plan if not done(sweep, run_folder(sweep, method, name))]
    print(f"sweep: {len(plan)} runs, {len(plan) - len(todo)} already done, "
          + ("none run (--collect)" if args.collect else f"{len(todo)} to run"), flush=True)
    if args.collect:
        todo = []
    spent: dict[str, list[float]] = {}
    for index, (method, name, path) in enumerate(todo, 1):
        started = time.perf_counter()
        run_dir = run_one(sweep, method, name, path)
        spent.setdefault(method, []).append(time.perf_counter() - started)
        # the rest at each method's mean so far (methods not yet run: the mean of all runs so far)
        overall = sum(sum(v) for v in spent.values()) / sum(len(v) for v in spent.values())
        left = sum(sum(spent[m]) / len(spent[m]) if m in spent else overall for m, _, _ in todo[index:])
        print(f"[{index}/{len(todo)}] {method} {name}: {spent[method][-1] / 60:.1f} min ({run_dir}); "
              f"ETA of the rest {eta(left)}", flush=True)
    written = write_results(sweep, *collect(sweep, splits))
    print((written[0].parent / "results.md").read_text())
    print("written: " + ", ".join(map(str, written)))
    return 0
