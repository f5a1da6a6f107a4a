"""Evaluate fast adaptation from a script: the same as ``meta-rl evaluate`` (see its ``--help``).

    python scripts/evaluate.py runs/nav-maml --tasks 40 --steps 3
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from meta_rl.cli import main  # noqa: E402  (main seeds the global RNGs)

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
