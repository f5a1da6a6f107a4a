"""Meta-train from a script: the same as ``meta-rl train`` (see ``meta-rl train --help``).

    python scripts/train.py --preset navigation2d-maml --out runs/nav-maml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from meta_rl.cli import main  # noqa: E402  (main seeds the global RNGs)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
