"""``python -m irformers`` (also what ``torchrun -m irformers`` runs)."""

import sys

from irformers.cli import main

sys.exit(main())
