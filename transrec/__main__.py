"""`python -m transrec ...` (what `accelerate launch -m transrec train ...` runs)."""

import sys

from transrec.cli import main

sys.exit(main())
