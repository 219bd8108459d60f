"""Workers started with dask's fixed malloc trim threshold get glibc's dynamic behaviour back."""
import os
import subprocess
import sys
import textwrap

import pytest

from synth._libc import restore_dynamic_thresholds

# Allocate, fill and free a 1 MB array 64 times; print the minor page faults it cost. With the
# dynamic mmap threshold (or the restored one) the heap keeps the block after the first round;
# with a fixed threshold each round mmaps fresh pages and faults all 256 of them in again.
_PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from synth._libc import restore_dynamic_thresholds
    changed = restore_dynamic_thresholds() if sys.argv[1] == "restore" else False
    np.ones(1 << 20, np.uint8).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(64):
        np.ones(1 << 20, np.uint8).sum()
    print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _probe(mode: str, env: dict) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tunables")
def test_fixed_trim_threshold_faults_every_buffer_until_restored():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    dask_env = {**env, "MALLOC_TRIM_THRESHOLD_": "65536"}  # what dask's nanny sets
    _, faults = _probe("keep", dask_env)
    assert faults >= 64 * 200  # ~256 pages per 1 MB round: the cost being fixed
    changed, faults = _probe("restore", dask_env)
    assert changed == "True" and faults < 64 * 10
    changed, faults = _probe("restore", env)  # nothing set: leave glibc's dynamic mode alone
    assert changed == "False" and faults < 64 * 10


def test_only_acts_on_a_fixed_trim_threshold_the_user_did_not_pair_with_an_mmap_one():
    assert restore_dynamic_thresholds({}) is False
    assert restore_dynamic_thresholds({"MALLOC_TRIM_THRESHOLD_": "65536",
                                       "MALLOC_MMAP_THRESHOLD_": "131072"}) is False
