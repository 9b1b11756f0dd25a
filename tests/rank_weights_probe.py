"""Run a recipe like scripts/train_incremental.py, and have EVERY process save its model after each
phase's training to OUT/rank<r>-<arm>-<phase>.pt, so a test can check that all ranks hold identical
weights (the loop itself writes only from the main process).

    accelerate launch --config_file recipes/accelerate_configs/cpu_2proc.yaml tests/rank_weights_probe.py OUT RECIPE
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from warmstart_hf.cli import main_train
from warmstart_hf.trainer import PhaseTrainer


def main(out: str, argv: list[str]) -> int:
    original = PhaseTrainer.train

    def train(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        phase_dir = Path(self.args.output_dir)
        name = f"rank{self.args.process_index}-{phase_dir.parent.name}-{phase_dir.name}.pt"
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, Path(out) / name)
        return result

    PhaseTrainer.train = train
    return main_train(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
