#!/usr/bin/env python
"""Push the phases of a run that are not on the Hub yet (all of them for a run trained without
push_to_hub; the failed ones listed in <arm>/hub.json otherwise).

python scripts/push_to_hub.py runs/digits [--repo-id <user>/<name>] [--private]
"""

import sys

from warmstart_hf.cli import main_push

if __name__ == "__main__":
    sys.exit(main_push(sys.argv[1:]))
