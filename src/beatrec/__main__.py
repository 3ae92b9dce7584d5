"""``python -m beatrec ...`` (what ``torchrun -m beatrec align ...`` runs)."""

import sys

from beatrec.cli import main

sys.exit(main())
