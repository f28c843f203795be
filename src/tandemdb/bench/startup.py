"""`tandem bench startup`: how long the CLI takes to start, side by side with Python's own.

A command line is run many times a day, by people and by scripts, so its start-up counts:
issue 10 set the goal of `tandem version` and `tandem --help` under 8x a bare `python -c
pass` on the same machine. Each round runs the three once, in fresh processes, in turn, so
that whatever else loads the machine weighs on all three alike; the medians over the rounds
and their ratios to the bare interpreter are the figures (`*_ms`, `*_ratio`), and every
sample is kept in `samples_ms`. `tandem` is the console script beside this interpreter
(what a user runs), else `python -m tandemdb.cli.main`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

GOAL_RATIO = 8.0  # issue 10: both commands under 8x the bare interpreter


def tandem_command() -> list[str]:
    """How to start `tandem`: the installed console script, else the module."""
    script = Path(sys.executable).parent / "tandem"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tandemdb.cli.main"]


def commands() -> dict[str, list[str]]:
    """What is timed, by name: the bare interpreter first, the ratios' denominator."""
    tandem = tandem_command()
    return {"bare": [sys.executable, "-c", "pass"], "version": [*tandem, "version"],
            "help": [*tandem, "--help"]}


def timed(argv: list[str]) -> float:
    """Milliseconds from start to exit of one process; it must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def figures(samples: dict[str, list[float]]) -> dict:
    """Medians and ratios to the bare interpreter's median, from the samples."""
    medians = {name: statistics.median(times) for name, times in samples.items()}
    out: dict = {f"{name}_ms": round(ms, 1) for name, ms in medians.items()}
    for name, ms in medians.items():
        if name != "bare":
            out[f"{name}_ratio"] = round(ms / medians["bare"], 2)
    return out


def run(rounds: int = 20, progress: Callable[[str], None] | None = None) -> dict:
    """Time every command `rounds` times, interleaved; one warm-up round is not counted
    (it fills the OS's file cache, which the later rounds would find full anyway)."""
    argvs = commands()
    for argv in argvs.values():
        timed(argv)
    samples: dict[str, list[float]] = {name: [] for name in argvs}
    for i in range(rounds):
        if progress is not None:
            progress(f"round {i + 1}/{rounds}")
        for name, argv in argvs.items():
            samples[name].append(round(timed(argv), 2))  # as reported: figures follow from them
    return {"bench": "startup", "rounds": rounds, **figures(samples), "goal_ratio": GOAL_RATIO,
            "command": " ".join(argvs["version"][:-1]), "samples_ms": samples}
