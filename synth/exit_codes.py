"""Exit codes of the ``synth`` and ``detector`` commands: one definition for both tools.

Each command's ``--help`` epilog says which of them it uses and what they mean for it.
"""
EXIT_OK = 0  # done (detector train: condition met; detector predict: every scored input is real)
EXIT_NOT_MET = 1  # detector train: --max-rounds reached without meeting the condition; predict: a fake found
EXIT_USAGE = 2  # bad argument or input (detector predict: also when no input could be scored)
EXIT_NO_SPACE = 3  # synth: no space left on device (what is done is kept; free space and rerun)
EXIT_INTERRUPTED = 130  # Ctrl-C (rerun the same command, or detector train --resume, to continue)
