"""Where benchmarks/run.py's runs and benchmarks/tune.py's workers execute: on this machine, as child processes
(`--cluster local`, the default), or as Slurm jobs submitted through submitit (`--cluster slurm`), one job each.

Either way a job is `python SCRIPT ARGS` with its stdout and stderr appended to two files that the tool names (beside
the run directories), and the tool polls it for its exit status. A Slurm job that is preempted, cancelled with
`scancel` or about to reach its time limit gets SIGTERM (`--signal=TERM@SECONDS` before the limit), which the DQN
scripts turn into a checkpoint and exit status 143; benchmarks/run.py then submits the run again with --resume.
benchmarks/local_slurm.sh starts a single-node Slurm on this machine to try it on.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from script_runs import launch, run_environment

# Slurm's job states once a job has ended (squeue --states=all lists them for MinJobAge seconds, then forgets the job)
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "TIMEOUT"}
SQUEUE_EVERY_SECONDS = 10.0  # how often a job with no result yet is looked up in the queue


@dataclass(frozen=True)
class SlurmOptions:
    partition: Optional[str] = None
    """partition to submit to (None: the cluster's default)"""
    time_min: int = 24 * 60
    """time limit of each job, in minutes"""
    cpus: Optional[int] = None
    """CPUs of each job (None: its threads; a tuner worker's: --seeds-per-trial x --threads)"""
    gpus: int = 0
    """GPUs of each job (give the scripts --cuda after `--`)"""
    mem_gb: Optional[float] = None
    """memory of each job in GB (None: the cluster's default)"""
    signal_seconds: int = 120
    """seconds before the time limit at which a job gets SIGTERM, to save its checkpoint"""
    sbatch: tuple[str, ...] = ()
    """more sbatch options as KEY=VALUE (e.g. account=myproject qos=normal constraint=a100)"""
    setup: tuple[str, ...] = ()
    """shell lines each job runs first (e.g. 'source venv/bin/activate')"""


def problems(options: SlurmOptions) -> list[str]:
    """What is wrong with the options, as lines for the user (nothing is submitted if any)."""
    found = [f"--slurm.{name.replace('_', '-')} must be >= {low} (got {value})"
             for name, low in [("time_min", 1), ("cpus", 1), ("gpus", 0), ("signal_seconds", 0)]
             for value in [getattr(options, name)] if value is not None and value < low]
    if options.mem_gb is not None and not options.mem_gb > 0:
        found.append(f"--slurm.mem-gb must be > 0 (got {options.mem_gb})")
    found += [f"--slurm.sbatch takes KEY=VALUE, e.g. account=myproject (got {text!r})"
              for text in options.sbatch if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*=.+", text)]
    return found


def missing_programs() -> list[str]:
    """Slurm's programs that are not on the PATH, as lines for the user; asked only once every setting is valid, so
    that a bad setting is reported as such on a machine without Slurm too."""
    return [f"--cluster slurm needs Slurm's {program} on the PATH (not found)"
            for program in ("sbatch", "squeue", "scancel") if shutil.which(program) is None]


def executor(options: SlurmOptions, folder: Path, name: str, cpus: int):
    """A submitit executor for jobs named `name` (of `cpus` CPUs unless the options say) whose submission files and
    submitit's own logs go to `folder`."""
    import cloudpickle  # submitit's, which pickles a job's function
    import submitit  # only --cluster slurm needs it

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # run_on_node by value: no benchmarks/ on the node
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    memory = {"mem": f"{int(options.mem_gb * 1024)}M"} if options.mem_gb else {}
    extra = dict(text.split("=", 1) for text in options.sbatch)
    executor.update_parameters(
        job_name=name, time=options.time_min, nodes=1, ntasks_per_node=1, cpus_per_task=options.cpus or cpus,
        gpus_per_node=options.gpus or None, partition=options.partition, setup=list(options.setup), **memory,
        # SIGTERM, which the scripts answer with a checkpoint (submitit's default, USR2, would end them at once)
        additional_parameters={"signal": f"TERM@{options.signal_seconds}", **{key.replace("-", "_"): value
                                                                               for key, value in extra.items()}})
    return executor


def run_on_node(command: list[str], stdout: str, stderr: str, environment: dict) -> int:
    """The job: run `command` (in this process group, which Slurm signals) with its output appended to the files;
    its exit status (128 + N for signal N)."""
    with open(stdout, "a") as out, open(stderr, "a") as err:
        return exit_status(subprocess.call(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                           env={**os.environ, **environment}))


def exit_status(code: Optional[int]) -> Optional[int]:
    """A process's exit status as a shell gives it: 128 + N when signal N ended it (Popen's -N)."""
    return 128 - code if code is not None and code < 0 else code


class LocalJob:
    """`python SCRIPT ARGV` as a child process of this tool (in its own session: a Ctrl-C in the terminal reaches
    the tool only, which passes one on)."""

    def __init__(self, script: Path, argv: list[str], stdout: Path, stderr: Path, threads: int):
        with open(stdout, "a") as out, open(stderr, "a") as err:
            self.process = launch(script, argv, out, err, threads)
        self.id = str(self.process.pid)

    def poll(self) -> tuple[bool, Optional[int], str]:
        """(ended, exit status, how it ended when there is no status)"""
        code = self.process.poll()
        return code is not None, exit_status(code), ""

    def stop(self) -> None:
        """Ctrl-C: the script saves a checkpoint and exits"""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)


class SlurmJob:
    """`python SCRIPT ARGV` as a Slurm job, submitted through submitit, which also reads its result and cancels it.
    Whether it has ended is asked of squeue by hand: submitit's job.done() asks sacct, which needs Slurm's accounting
    (local_slurm.sh and many small clusters have none), and without it a job that died without a result never ends."""

    def __init__(self, executor, script: Path, argv: list[str], stdout: Path, stderr: Path, threads: int):
        self.job = executor.submit(run_on_node, [sys.executable, str(script), *argv], str(stdout), str(stderr),
                                   run_environment(threads))
        self.looked_up = time.monotonic()

    @property
    def id(self) -> str:
        return str(self.job.job_id)  # a job array's task (ID_N) has its id once the array is submitted

    def poll(self) -> tuple[bool, Optional[int], str]:
        if self.job.paths.result_pickle.exists():
            try:
                return True, int(self.job.result()), ""
            except Exception as error:  # the job function raised, or its result could not be read
                return True, None, f"job {self.id} failed: {str(error).strip().splitlines()[-1][:200]}"
        if time.monotonic() - self.looked_up < SQUEUE_EVERY_SECONDS:
            return False, None, ""
        self.looked_up = time.monotonic()
        state = slurm_state(self.id)
        if state is not None and state not in ENDED_STATES:
            return False, None, ""
        time.sleep(1.0)  # a job that has just ended may still be writing its result
        if self.job.paths.result_pickle.exists():
            return self.poll()
        return True, None, f"Slurm job {self.id} ended {state or 'and left the queue'} without a result; see " \
                           f"{self.job.paths.stderr}"

    def stop(self) -> None:
        """scancel: SIGTERM (the script saves a checkpoint), then SIGKILL after the cluster's KillWait"""
        self.job.cancel(check=False)


def slurm_state(job_id: str) -> Optional[str]:
    """The job's state as squeue gives it (RUNNING, PENDING, COMPLETED, ...), or None once Slurm has forgotten it."""
    try:
        output = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job_id, "--format=%T"],
                                capture_output=True, text=True, timeout=60).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"  # squeue is not answering: not a reason to call the job ended
    return output[0] if output else None


def as_ended(jobs: list, poll_seconds: float = 1.0):
    """(job, exit status, how it ended) for each of `jobs` (LocalJob or SlurmJob), as each one ends."""
    running = list(jobs)
    while running:
        for job in list(running):
            done, code, how = job.poll()
            if done:
                running.remove(job)
                yield job, code, how
        time.sleep(poll_seconds if running else 0)
