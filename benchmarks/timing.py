"""CleanRL's own scripts as timed subprocesses, for benchmarks/sps.py and benchmarks/sps_atari.py (`--cleanrl`).

CleanRL pins gymnasium 0.29, so its scripts run in their own virtual environment: the user passes that environment's
python and the script as one COMMAND string."""

import argparse
import os
import resource
import shlex
import subprocess
import sys
import time
from typing import Optional


def command_from_option(parser: argparse.ArgumentParser, text: Optional[str]) -> Optional[list[str]]:
    """The `--cleanrl` COMMAND split into its words, after checking that `COMMAND --help` runs (a usage error if not);
    None when the option was not given."""
    if text is None:
        return None
    command = shlex.split(text)
    try:
        subprocess.run([*command, "--help"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        parser.error(f"--cleanrl {text!r} does not run: {error}")
    return command


def timed_run(command: list[str], arguments: list[str], cwd: str) -> tuple[float, float]:
    """Run `command arguments` on one thread (OMP_NUM_THREADS=1) in `cwd`, its output discarded; return its (wall,
    CPU) seconds, the CPU time read from the finished child's resource usage. Exits with the child's last stderr if it
    fails."""
    before, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    finished = subprocess.run([*command, *arguments], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed (exit code {finished.returncode}):\n{finished.stderr[-2000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
