#!/usr/bin/env python
"""Expand a grid of recipes into arms and run them (or write cluster commands).

python scripts/sweep.py recipes/study/cpu_study.yaml [--commands] [--dry-run]
"""

import sys

from warmstart_hf.cli import main_sweep

if __name__ == "__main__":
    sys.exit(main_sweep(sys.argv[1:]))
