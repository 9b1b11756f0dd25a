#!/usr/bin/env python
"""Figures, paired gap statistics and tables of one or many runs: report.md (figures embedded) and
report.html (self-contained) in the output folder.

python scripts/report.py runs/cpu_study [--margin 1.0]
"""

import sys

from warmstart_hf.cli import main_report

if __name__ == "__main__":
    sys.exit(main_report(sys.argv[1:]))
