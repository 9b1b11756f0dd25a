#!/usr/bin/env python
"""Evaluate every end-of-phase and loss-aligned checkpoint of a pretraining run on downstream recipes
(Fig. 5): writes <run>/downstream/{downstream.csv, downstream.md, fig5.png}.

python scripts/evaluate_pretraining.py runs/mae_demo recipes/mae/demo_probe_digits.yaml [more recipes ...]
"""

import sys

from warmstart_hf.cli import main_evaluate_pretraining

if __name__ == "__main__":
    sys.exit(main_evaluate_pretraining(sys.argv[1:]))
