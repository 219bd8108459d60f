"""`python -m synth ...`: the same as the `synth` command (for environments without the console script on PATH)."""
import sys

from synth.cli import main

sys.exit(main())
