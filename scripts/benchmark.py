#!/usr/bin/env python
"""Throughput of the project's phase path next to a plain PyTorch loop, same model, data and device:
images/s, or tokens/s for a language model (task causal_lm).

python scripts/benchmark.py recipes/digits.yaml --device cpu
python scripts/benchmark.py recipes/cifar100.yaml --device cuda --num_train_epochs 3 --num_phases 2
python scripts/benchmark.py recipes/lm/demo.yaml --device cpu
"""

import sys

from warmstart_hf.cli import main_benchmark

if __name__ == "__main__":
    sys.exit(main_benchmark(sys.argv[1:]))
