"""`python -m detector ...`: the same as the `detector` command (for environments without the console script on PATH)."""
import sys

from detector.cli import main

sys.exit(main())
