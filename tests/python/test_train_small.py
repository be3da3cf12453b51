"""Acceptance run of examples/train_small.json on the fortunes corpus.

Two ranks, one thread each, must finish within 3 minutes and beat the bigram
baseline on held-out text. Skipped when the corpus (Debian package
``fortunes``) or SWITCHYARD_BIN is missing.
"""

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

BIN = os.environ.get("SWITCHYARD_BIN")
if not BIN:
    pytest.skip("SWITCHYARD_BIN is not set", allow_module_level=True)
if not Path("/usr/share/games/fortunes").is_dir():
    pytest.skip("the fortunes corpus is not installed (apt-get install fortunes)", allow_module_level=True)
MPIEXEC = shlex.split(os.environ.get("MPIEXEC", "mpirun"))
CONFIG = Path(__file__).resolve().parents[2] / "examples" / "train_small.json"


def test_train_small_beats_bigram_within_three_minutes(tmp_path):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    argv = [*MPIEXEC, "-np", "2", BIN, "train", "--config", str(CONFIG), "--json", str(tmp_path / "log.jsonl")]
    start = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    wall = time.monotonic() - start
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    final = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"wall {wall:.1f} s, val_loss {final['val_loss']:.4f}, bigram {final['bigram_val_loss']:.4f}, "
          f"unigram {final['unigram_val_loss']:.4f}")
    assert final["event"] == "final"
    assert final["val_loss"] < final["bigram_val_loss"]
