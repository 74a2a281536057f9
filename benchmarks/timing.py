"""The one timer of benchmarks/sps.py and benchmarks/sps_atari.py: a call's CPU and wall time, a run's learning-phase
steps per second, and a subprocess's own CPU time (CleanRL's scripts, `--cleanrl`: CleanRL pins gymnasium 0.29, so
they run in their own virtual environment, the user passing its python and the script as one COMMAND string).

CPU time beside wall time: the benchmarks run one thread, whose CPU time is what the wall time would be on an idle
machine, so the CPU figures hold on a shared, busy machine, where wall-clock figures do not. torch.utils.benchmark's
Timer gives wall time only, hence this module."""

import os
import resource
import shlex
import subprocess
import sys
import time
from typing import Optional


def usage_error(message: str) -> None:
    """A bad command line: `error: MESSAGE` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def command_from_option(text: Optional[str]) -> Optional[list[str]]:
    """The `--cleanrl` COMMAND split into its words, after checking that `COMMAND --help` runs (a usage error if not);
    None when the option was not given."""
    if text is None:
        return None
    command = shlex.split(text)
    try:
        subprocess.run([*command, "--help"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        usage_error(f"--cleanrl {text!r} does not run: {error}")
    return command


def per_call(function, calls: int, repeats: int = 3, warmup: int = 5) -> tuple[float, float]:
    """(CPU s, wall s) of one call: the best of `repeats` means over `calls` calls, after `warmup` calls."""
    for _ in range(warmup):
        function()
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            function()
        best_cpu = min(best_cpu, (time.process_time() - cpu) / calls)
        best_wall = min(best_wall, (time.perf_counter() - wall) / calls)
    return best_cpu, best_wall


def learning_phase_sps(run, short: int, long: int) -> tuple[float, float]:
    """Steps per second of the steps between `short` and `long`, by wall time and by CPU time: run the contender for
    both lengths and divide the extra steps by the extra time, which cancels set-up, the random-play warm-up before
    learning starts, and the final evaluation. A contender run as a subprocess returns its own (wall, CPU) seconds."""
    times = {}
    for steps in (short, long):
        wall, cpu = time.perf_counter(), time.process_time()
        child_times = run(steps)
        times[steps] = child_times or (time.perf_counter() - wall, time.process_time() - cpu)
    return ((long - short) / (times[long][0] - times[short][0]), (long - short) / (times[long][1] - times[short][1]))


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
