"""`tandem bench startup`: the CLI's start-up side by side with a bare interpreter.

It runs real processes (a few rounds); the test checks what the JSON says and that its
figures follow from its own samples, not how fast anything is (no timing assertions).
"""

from __future__ import annotations

import json
import statistics

from typer.testing import CliRunner

from tandemdb.bench.startup import GOAL_RATIO, figures
from tandemdb.cli.main import app

runner = CliRunner()


def test_startup_bench_prints_medians_and_ratios_from_its_samples():
    result = runner.invoke(app, ["bench", "startup", "--rounds", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bench"] == "startup" and report["rounds"] == 3
    assert report["goal_ratio"] == GOAL_RATIO
    samples = report["samples_ms"]
    assert sorted(samples) == ["bare", "help", "version"]
    assert all(len(times) == 3 and all(t > 0 for t in times) for times in samples.values())
    for name, times in samples.items():
        assert report[f"{name}_ms"] == round(statistics.median(times), 1)
    bare = statistics.median(samples["bare"])
    for name in ("version", "help"):
        assert report[f"{name}_ratio"] == round(statistics.median(samples[name]) / bare, 2)
    assert "bare_ratio" not in report


def test_figures_take_medians_and_divide_by_the_bare_median():
    out = figures({"bare": [10.0, 30.0, 20.0], "version": [50.0, 40.0, 60.0, 45.0]})
    assert out == {"bare_ms": 20.0, "version_ms": 47.5, "version_ratio": 2.38}
