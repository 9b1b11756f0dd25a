#!/usr/bin/env python
"""Train every arm of a recipe through its phases.

python scripts/train_incremental.py recipes/digits.yaml [--field value ...]
accelerate launch scripts/train_incremental.py recipes/cifar100.yaml
"""

import sys

from warmstart_hf.cli import main_train

if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:]))
