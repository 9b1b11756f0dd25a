"""Entry points of the scripts: parse arguments, call the library, map bad input to exit status 2."""

from __future__ import annotations

import logging
import sys

from warmstart_hf.config import ConfigError, parse_config


def main_train(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        if argv:
            from warmstart_hf.config import build_parser

            build_parser().print_help()
        return 0 if argv else 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_library_progress_bars()
    try:
        config = parse_config(argv)
        from warmstart_hf.loop import run_experiment

        run_dir = run_experiment(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        _destroy_process_group()
    print(f"Run directory: {run_dir}")
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


def _usage() -> str:
    return (
        "usage: train_incremental.py RECIPE.yaml [--field value ...]\n"
        "Fields: see README 'Recipe fields'; any transformers.TrainingArguments field is accepted too."
    )
