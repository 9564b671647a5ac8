"""``python -m bench.stages``: the per-request stage table runs on real images and its
stages stay the service's own preprocessing (``profile`` asserts the crop it times equals
``preprocess_bytes``'s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT

STAGES = ("decode", "balance_localise", "crop_resize", "inference_b1", "guards", "json")


def test_stage_table_on_real_images(data_dir: Path) -> None:
    env = {**os.environ, "WBC_DATA_DIR": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.stages", "--images", "4", "--repeats", "1"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(table) == [*STAGES, "sum"]
    assert all(table[k] > 0 for k in STAGES)
    assert abs(table["sum"] - sum(table[k] for k in STAGES)) < 0.01
