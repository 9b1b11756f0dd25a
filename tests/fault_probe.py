"""Run a recipe like scripts/train_incremental.py and kill this process at a chosen moment.

    python tests/fault_probe.py MOMENT N RECIPE [--field value ...]

At the N-th time MOMENT is reached the process sends itself SIGKILL (no cleanup, no atexit): while
training, inside a Trainer checkpoint, between the phase model and its results line, half-way
through a file, during a Hub push. Moments whose name ends in ``_partial`` first leave the file
half-written, as a kill in the middle of a write does. ``sigterm``/``sigint`` send that signal
instead (a graceful stop). ``none`` runs to the end. The hooks live here, in the test helper, by
wrapping the functions the package calls; the package itself has no fault switches.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch


def _die(signum: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), signum)
    if signum == signal.SIGKILL:  # pragma: no cover - not reached
        os._exit(137)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _install(moment: str, nth: int) -> None:
    import huggingface_hub
    from transformers import Trainer, TrainerState

    import warmstart_hf.checkpoints as checkpoints
    import warmstart_hf.io as io
    import warmstart_hf.loop as loop
    import warmstart_hf.trainer as trainer_module
    from warmstart_hf.trainer import PhaseTrainer

    count = {"n": 0}

    def wrap(owner, name, before=None, after=None, when=lambda *a, **k: True):
        """Run ``before`` (or ``after``) the N-th call of ``owner.name`` for which ``when`` holds."""
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            chosen = when(*args, **kwargs) and (count.__setitem__("n", count["n"] + 1) or count["n"] == nth)
            if chosen and before is not None:
                before(*args, **kwargs)
            result = original(*args, **kwargs)
            if chosen and after is not None:
                after(*args, **kwargs)
            return result

        setattr(owner, name, wrapped)

    kill = lambda *a, **k: _die()  # noqa: E731
    TORTOISE = "tortoise.safetensors"  # noqa: N806

    def truncate_then_die(path):
        _truncate(Path(path))
        _die()

    def is_phase_dir(self, output_dir=None, *a, **k):
        return output_dir is not None and "checkpoint-" not in str(output_dir)

    hooks = {
        "training_step": lambda: wrap(PhaseTrainer, "training_step", before=kill),
        "sigterm": lambda: wrap(PhaseTrainer, "training_step", before=lambda *a, **k: _die(signal.SIGTERM)),
        "sigint": lambda: wrap(PhaseTrainer, "training_step", before=lambda *a, **k: _die(signal.SIGINT)),
        # under accelerate launch: only the second process gets SIGTERM; every rank must stop with it
        "sigterm_rank1": lambda: wrap(
            PhaseTrainer,
            "training_step",
            before=lambda *a, **k: _die(signal.SIGTERM),
            when=lambda *a, **k: os.environ.get("RANK") == "1",
        ),
        # the checkpoint's model is written; its optimizer, RNG and trainer_state.json are not
        "checkpoint_model_only": lambda: wrap(Trainer, "_save_optimizer_and_scheduler", before=kill),
        # trainer_state.json half-written (the FileNotFoundError / JSONDecodeError users met)
        "checkpoint_state_partial": lambda: wrap(
            TrainerState, "save_to_json", after=lambda self, path: truncate_then_die(path)
        ),
        # every Trainer file written; the running-accuracy extras and the marker not
        "checkpoint_extras": lambda: wrap(trainer_module._EpochTrainAccuracy, "write_checkpoint", before=kill),
        # an older checkpoint unmarked for deletion but not deleted yet
        "checkpoint_rotation": lambda: wrap(
            checkpoints.shutil, "rmtree", before=kill, when=lambda path, *a, **k: "checkpoint-" in str(path)
        ),
        # the phase's final model half-written, no results line
        "phase_model_partial": lambda: wrap(
            PhaseTrainer,
            "save_model",
            after=lambda self, output_dir, *a, **k: truncate_then_die(Path(output_dir) / "model.safetensors"),
            when=is_phase_dir,
        ),
        "optimizer_state_partial": lambda: wrap(
            loop, "save_optimizer_state", after=lambda state, path: truncate_then_die(path)
        ),
        "companion_partial": lambda: wrap(
            loop,
            "_save_companions",
            after=lambda phase_dir, _: truncate_then_die(Path(phase_dir) / TORTOISE),
            when=lambda phase_dir, companions: bool(companions),
        ),
        # every file of the phase written, its results line not
        "before_results_line": lambda: wrap(loop, "append_jsonl_atomic", before=kill),
        # results.jsonl's new version written to a temporary file, not yet renamed over the old one
        "results_rename": lambda: wrap(
            io.os, "replace", before=kill, when=lambda src, dst, *a: str(dst).endswith("results.jsonl")
        ),
        "split_json": lambda: wrap(loop, "atomic_write_json", before=kill),
        "config_yaml": lambda: wrap(loop, "atomic_write_text", before=kill),
        # init/ fully staged in a temporary directory, not yet swapped in
        "init_staged": lambda: wrap(
            checkpoints.os, "replace", before=kill, when=lambda src, dst, *a: str(dst).endswith("init")
        ),
        "hub_push": lambda: wrap(huggingface_hub.HfApi, "create_commit", before=kill),
    }
    if moment != "none":
        hooks[moment]()


def main(argv: list[str]) -> int:
    moment, nth, rest = argv[0], int(argv[1]), argv[2:]
    torch.set_num_threads(1)
    _install(moment, nth)
    from warmstart_hf.cli import main_train

    return main_train(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
