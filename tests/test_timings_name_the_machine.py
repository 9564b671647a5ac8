"""Timings name the machine they ran on; the training-speed report reads the real runs."""

from __future__ import annotations

import json
from pathlib import Path

from bench.train_speed import real_runs
from model_training import machine


def test_machine_names_cores_cpu_and_avx512(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
        "flags\t\t: fpu sse avx2 fma avx512f avx512dq\n"
    )
    described = machine.describe(info)
    assert described.endswith("AMD EPYC 9R14, AVX-512)") and "CPU cores (" in described
    info.write_text("model name\t: Intel Xeon\nflags\t\t: fpu avx2 fma\n")
    assert machine.describe(info).endswith("Intel Xeon, no AVX-512)")
    assert "CPU cores" in machine.describe(tmp_path / "missing")


def test_real_runs_are_read_from_the_training_reports(tmp_path: Path) -> None:
    run = tmp_path / "official-x"
    run.mkdir()
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "arch": "wbc",
                "epochs_run": 10,
                "n_train": 600,
                "train_seconds": 60.0,
                "machine": "2 CPU cores (x86_64)",
            }
        )
    )
    cv = tmp_path / "crossval-x"  # a cross-validation record has no single training time
    cv.mkdir()
    (cv / "metrics.json").write_text(json.dumps({"arch": "wbc", "seconds": 3000}))
    rows = real_runs(tmp_path)
    assert [r["report"] for r in rows] == ["official-x"]
    assert rows[0]["img_s"] == 100.0 and rows[0]["minutes"] == 1.0
