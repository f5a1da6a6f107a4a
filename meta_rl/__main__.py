"""``python -m meta_rl`` is the ``meta-rl`` command (and what ``torchrun -m meta_rl`` runs)."""

import sys

from meta_rl.cli import main

sys.exit(main())
