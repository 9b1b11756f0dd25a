#!/usr/bin/env python
"""Collect results from run or sweep directories or pushed arm repos, push the results dataset, and
write the leaderboard (leaderboard.md, and leaderboard.html: a page with a section per experiment).

python scripts/leaderboard.py runs/digits hub://<user>/<name>-warm-seed0 --push-to <user>/warmstart-results
python scripts/leaderboard.py docs/results/cpu_study_digits/runs --output-dir board
python scripts/leaderboard.py --from-dataset <user>/warmstart-results --sort gap_vs_cold_final
"""

import sys

from warmstart_hf.cli import main_leaderboard

if __name__ == "__main__":
    sys.exit(main_leaderboard(sys.argv[1:]))
