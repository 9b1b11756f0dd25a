#!/usr/bin/env python
"""Collect results from run directories or pushed arm repos, push the results dataset, and write the
leaderboard tables (markdown and HTML).

python scripts/leaderboard.py runs/digits hub://<user>/<name>-warm-seed0 --push-to <user>/warmstart-results
python scripts/leaderboard.py --from-dataset <user>/warmstart-results --sort gap_vs_cold_final
"""

import sys

from warmstart_hf.cli import main_leaderboard

if __name__ == "__main__":
    sys.exit(main_leaderboard(sys.argv[1:]))
