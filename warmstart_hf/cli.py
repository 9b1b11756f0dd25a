"""Entry points of the scripts: parse arguments, call the library, map bad input to exit status 2.

Each ``main_*`` is also a console script (pyproject's ``[project.scripts]``: ``warmstart-train`` and
the others), called without arguments: ``argv`` None means ``sys.argv[1:]``, as argparse reads it."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from warmstart_hf import bundled_recipes
from warmstart_hf.config import ConfigError, parse_config

DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # and EACCES on a directory that cannot be written


def _guarded(action: Callable[[], int]) -> int:
    """Run a training entry point: bad input -> message + exit status 2; a signal -> stop at the next
    step boundary with a checkpoint (status 128 + signal); a disk that cannot be written -> a message
    and status 1; always end the process group."""
    from warmstart_hf.graceful_stop import STOP, StopRequested

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with STOP.handling_signals():
            return action()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StopRequested as stop:
        print(f"{stop}. Everything up to there is saved; rerun the same command to resume.", file=sys.stderr)
        return stop.exit_status
    except Exception as err:
        disk = _disk_error(err)
        if disk is None:
            raise
        print(f"({type(err).__name__}: {err})", file=sys.stderr)
        print(
            f"error: could not write {disk.filename or 'to the run directory'}: {disk.strerror}. The run stopped; "
            "every finished phase and the last complete checkpoint are intact. Fix: free space or make the "
            "directory writable, then rerun the same command to resume.",
            file=sys.stderr,
        )
        return 1
    finally:
        _destroy_process_group()


def _disk_error(err: BaseException) -> OSError | None:
    """The write failure (no space, read-only file system, a directory without write permission)
    behind ``err``, if any. torch wraps such an OSError in a RuntimeError that keeps only its message,
    so a RuntimeError naming one of these errors counts too, unless it is about shared memory (a full
    /dev/shm is not the run directory's disk)."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and _is_write_failure(seen):
            return seen
        text = str(seen)
        if isinstance(seen, RuntimeError) and not any(m in text for m in ("shm", "shared memory")):
            for code in DISK_ERRORS:
                if os.strerror(code) in text:
                    return OSError(code, os.strerror(code))
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _is_write_failure(err: OSError) -> bool:
    if err.errno in DISK_ERRORS:
        return True
    if err.errno != errno.EACCES or not err.filename:
        return False
    target = Path(err.filename)
    directory = target if target.is_dir() else target.parent
    return directory.exists() and not os.access(directory, os.W_OK)


HELP_FLAGS = ("-h", "--help", "--help-all")


def main_train(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [bundled_recipes.LIST_OPTION]:
        print(bundled_recipes.listing())
        return 0
    if not argv or any(flag in argv for flag in HELP_FLAGS):
        from warmstart_hf.config import build_parser

        parser = build_parser(full="--help-all" in argv)
        if not argv:
            parser.print_usage(sys.stderr)
            return 2
        parser.print_help()
        return 0

    def train() -> int:
        from warmstart_hf.loop import run_experiment

        config = parse_config(argv)
        _quiet_library_progress_bars()
        run_dir = run_experiment(config)
        print(f"Run directory: {run_dir}")
        if not config.training.push_to_hub or config.training.process_index != 0:
            return 0
        # training goes on past a failed push; the command says so at the end, with its status
        return _report_unpushed(run_dir, f"then push what is pending with: warmstart-push {run_dir}")

    return _guarded(train)


def _report_unpushed(run_dir: str | Path, then: str) -> int:
    """1, with each arm's problem and the fix, if a phase (or aligned checkpoint) of the run is not on
    the Hub (hub.json lists what is pending and why); else 0."""
    from warmstart_hf.hub import unpushed

    problems = unpushed(run_dir)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"Fix: check the network, the token (HF_TOKEN) and write access to the repos, {then}.", file=sys.stderr)
    return 1 if problems else 0


def main_benchmark(argv: list[str] | None = None) -> int:
    """``benchmark.py RECIPE [--device cpu|cuda] [--strategy NAME] [--pairs N] [--min_seconds S]
    [--plain_compile MODE] [--field value ...]``: prints a table and one JSON line (warmstart_hf/benchmark.py)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="benchmark.py", description=main_benchmark.__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--strategy", default="warm", help="the project arm's strategy (its cost against warm: run both)"
    )
    parser.add_argument(
        "--pairs", type=int, default=6, help="interleaved plain/project pairs (6 or more give a 95%% interval)"
    )
    parser.add_argument(
        "--min_seconds", type=float, default=5.0, help="timed seconds (whole epochs) of each plain-loop run"
    )
    parser.add_argument(
        "--plain_compile",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile the plain loop's model (reduce-overhead: CUDA graphs), the fast path's reference",
    )
    args, rest = parser.parse_known_args(argv)

    def benchmark() -> int:
        from warmstart_hf.benchmark import format_table, run_benchmark

        _quiet_library_progress_bars()
        argv = [*rest, "--use_cpu", str(args.device == "cpu").lower(), "--strategies", args.strategy]
        result = run_benchmark(argv, args.pairs, args.min_seconds, args.plain_compile)
        print(format_table(result))
        print(json.dumps(result))
        return 0

    return _guarded(benchmark)


def main_sweep(argv: list[str] | None = None) -> int:
    """``sweep.py GRID.yaml [--commands] [--launcher CMD] [--dry-run]``."""
    import argparse

    from warmstart_hf import sweep as sweeps

    parser = argparse.ArgumentParser(prog="sweep.py", description="Expand a grid of recipes into arms and run them.")
    parser.add_argument("grid", help="grid YAML (see warmstart_hf/sweep.py)")
    parser.add_argument(
        "--commands",
        action="store_true",
        help="write commands.txt (one accelerate launch per arm) and a Slurm array script; run nothing",
    )
    parser.add_argument("--launcher", default="accelerate launch", help="prefix of each command (--commands)")
    parser.add_argument("--dry-run", action="store_true", help="list the configurations and stop")
    args = parser.parse_args(argv)

    def sweep() -> int:
        grid = sweeps.load_sweep(args.grid)
        print(sweeps.describe(grid))
        if args.dry_run:
            return 0
        if args.commands:
            commands, slurm = sweeps.write_cluster_files(grid, args.launcher)
            print(f"Wrote {commands} and {slurm}; submit with: sbatch {slurm}")
            return 0
        _quiet_library_progress_bars()
        directory = sweeps.run_sweep(grid)
        print(f"Sweep directory: {directory}\nReport: warmstart-report {directory}")
        return 0

    return _guarded(sweep)


def main_report(argv: list[str] | None = None) -> int:
    """``report.py RUN_DIR [RUN_DIR ...] [--out DIR] [--margin POINTS]``."""
    import argparse

    from warmstart_hf.report.study import write_study_report

    parser = argparse.ArgumentParser(prog="report.py", description="Figures, gap statistics and tables of runs.")
    parser.add_argument("run_dirs", nargs="+", help="sweep directories (with sweep.json) or run directories")
    parser.add_argument("--out", default=None, help="output folder (default: FIRST_RUN_DIR/report)")
    parser.add_argument("--margin", type=float, default=1.0, help="equivalence margin in accuracy points")
    args = parser.parse_args(argv)
    try:
        out = write_study_report(args.run_dirs, args.out, args.margin)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    print(f"Report written to {out}")
    return 0


def main_evaluate_pretraining(argv: list[str] | None = None) -> int:
    """``evaluate_pretraining.py RUN_DIR RECIPE [RECIPE ...] [--field value ...]`` (warmstart_hf/downstream.py):
    the ``--field value`` pairs override every downstream recipe, as train_incremental.py's override one."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    split = next((i for i, t in enumerate(argv) if t.startswith("--") and t != "--help"), len(argv))
    parser = argparse.ArgumentParser(prog="evaluate_pretraining.py", description=main_evaluate_pretraining.__doc__)
    parser.add_argument("run_dir", help="a finished pretraining run directory (with alignment.json)")
    parser.add_argument("recipes", nargs="+", help="downstream recipes (task linear_probe, lm_linear_probe, ...)")
    args = parser.parse_args(argv[:split])

    def evaluate() -> int:
        from warmstart_hf.downstream import evaluate_run

        _quiet_library_progress_bars()
        out = evaluate_run(args.run_dir, args.recipes, overrides=argv[split:])
        print((out / "downstream.md").read_text())
        print(f"Downstream results in {out}")
        return 0

    return _guarded(evaluate)


def main_push(argv: list[str] | None = None) -> int:
    """scripts/push_to_hub.py: push the phases of a run that are not on the Hub yet (hub.json)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="push_to_hub.py",
        description="Push every finished phase of each arm of RUN_DIR that is not on the Hub yet: phase k to "
        "branch phase-k of <repo-id>-<strategy>-seed<seed>, the latest phase and its card to main.",
    )
    parser.add_argument("run_dir", help="runs/<run_name>")
    parser.add_argument("--repo-id", help="<user>/<name>; default: hub_model_id of the run's config.yaml")
    parser.add_argument("--private", action="store_true", default=None, help="create the repos private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_library_progress_bars()
    from warmstart_hf.hub import push_run

    try:
        states = push_run(args.run_dir, args.repo_id, private=args.private)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for arm, state in states.items():
        pending = ", ".join(f"phase-{p:02d}" for p in state["pending"]) or "none"
        main = state["main"]["phase"] if state["main"] else "-"
        print(f"{arm}: {state['repo_id']} branches {len(state['branches'])}, main = phase {main}, pending: {pending}")
    return _report_unpushed(args.run_dir, "then rerun this command")


def main_leaderboard(argv: list[str] | None = None) -> int:
    """scripts/leaderboard.py: collect results, push the results dataset, write the tables."""
    import argparse

    from warmstart_hf.report.leaderboard import SORT_METRICS

    parser = argparse.ArgumentParser(
        prog="leaderboard.py",
        description="Collect one row per arm x phase from run directories and/or pushed arm repos, optionally "
        "push them as a results dataset, and write leaderboard.md and leaderboard.html.",
    )
    parser.add_argument(
        "sources", nargs="*", help="run or sweep directories and/or hub://<user>/<repo>[@revision] arm repos"
    )
    parser.add_argument("--from-dataset", help="also read the rows of this results dataset (<user>/<name>)")
    parser.add_argument("--push-to", help="push all rows as the results dataset <user>/<name>")
    parser.add_argument("--private", action="store_true", default=None, help="create the dataset private")
    parser.add_argument("--sort", default="final_test_accuracy", choices=SORT_METRICS, help="metric to rank by")
    parser.add_argument("--output-dir", default=".", help="where leaderboard.md and leaderboard.html go")
    parser.add_argument("--margin", type=float, default=1.0, help="equivalence margin of the verdicts, in points")
    args = parser.parse_args(argv)
    _quiet_library_progress_bars()
    from warmstart_hf.report.leaderboard import build_leaderboard

    try:
        result = build_leaderboard(
            args.sources,
            from_dataset=args.from_dataset,
            push_to=args.push_to,
            private=args.private,
            sort_by=args.sort,
            output_dir=args.output_dir,
            margin=args.margin,
        )
    except ValueError as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result["markdown"])
    if result["pushed"]:
        print(f"Results dataset: {result['pushed']}")
    return 0


def _quiet_library_progress_bars() -> None:
    """Keep the console to the run's own progress bar (weights saving/loading bars add nothing)."""
    import datasets
    import huggingface_hub
    import transformers

    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
