"""Run a benchmark: every (script, env, seed) combination as its own process or Slurm job, skipping finished ones.

    python benchmarks/run.py --scripts dqn.py --env-ids CartPole-v1 Acrobot-v1 --seeds 1 2 3 --workers 2
    python benchmarks/run.py --scripts dqn.py:CartPole-v1,Acrobot-v1 dqn_lunar.py:LunarLander-v3 --seeds 1 2 3
    python benchmarks/run.py --scripts dqn.py --env-ids CartPole-v1 --seeds 1 2 -- --total-timesteps 50000
    python benchmarks/run.py ... --shard 2/3      # this machine's third of the work; all three share --runs-dir
    python benchmarks/run.py --cluster slurm --slurm.partition gpu --slurm.gpus 1 --slurm.time-min 600 \
        --scripts dqn_atari.py --env-ids PongNoFrameskip-v4 BreakoutNoFrameskip-v4 --seeds 1 2 3 -- --cuda

A run is `python SCRIPT --env-id ENV --seed N --runs-dir RUNS_DIR --exp-name NAME [args after --]` on one thread, its
output appended to RUNS_DIR/_logs/: a child process, or a Slurm job (submitit's files in RUNS_DIR/_slurm/). One cut
short by SIGTERM (preempted, cancelled, at its time limit) saves a checkpoint and is submitted again with --resume.
Exit status: 0 when every run of this shard finished, 1 when one failed, 2 for a usage error, 130 when interrupted.

Done: a combination (env id, exp name = the script's stem or STEM-TAG, seed, from each run's args.json) is skipped
when a run directory of it holds a summary.json whose status is not "interrupted". Every setting the run would get
(the flags after --, checked by the script's own parser and checks before any run, and its defaults) is compared
with that run's args.json; a difference is an error (use another --tag or --runs-dir), except for settings that do
not change what a run learns (--track, --capture-video, --save-model, --torch-threads, ...).
Unfinished (no finished summary.json): --unfinished resume continues the newest one with a checkpoint.pt (its
metrics.csv continues; its replay starts empty unless it was saved, --save-replay; its summary's wall time counts
the resumed part); --unfinished restart, or no checkpoint.pt, starts afresh, moving the old directories to
RUNS_DIR/_unfinished/. --shard I/N takes every N-th combination of the list sorted by (script, env, seed) from the
I-th: give every machine the same --scripts, --env-ids, --seeds and --tag, and one runner per shard.
Progress: a tqdm status line on a terminal, else one every --status-every seconds; starts and ends, a line each.
"""

import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from tqdm import tqdm

import cluster
from cluster import SlurmOptions
from script_runs import (REPO_ROOT, MetricsFollower, RunDir, ScriptError, check_writable, cli, find_runs, find_script,
                         load_script, read_json, setting_conflicts)

SUBMITTING = threading.Lock()
# the runner sets these per run; after `--` they would silently break the skip logic or collide between runs
RESERVED_FLAGS = ["--env-id", "--seed", "--runs-dir", "--exp-name", "--resume", "--eval-checkpoint"]

@dataclass(frozen=True, order=True)
class Combination:
    script_name: str
    env_id: str
    seed: int
    exp_name: str
    script: Path = field(compare=False)

    @property
    def label(self) -> str:
        return f"{self.exp_name} {self.env_id} seed {self.seed}"

    @property
    def file_stem(self) -> str:
        """the run directory's name without its start time, as the scripts build it"""
        return f"{self.env_id.replace('/', '-').replace(':', '-')}__{self.exp_name}__{self.seed}"


class UsageError(Exception):
    """A command line the runner cannot carry out; reported as one line, exit status 2."""


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """'2/3' -> (2, 3); None -> (1, 1)."""
    if text is None:
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UsageError(f"--shard must be I/N with 1 <= I <= N, e.g. --shard 1/3 (got {text!r})")
    return int(match.group(1)), int(match.group(2))


def shard(combinations: list[Combination], index: int, count: int) -> list[Combination]:
    """The index-th (1-based) of count disjoint shards: every count-th combination of the list sorted by (script, env,
    seed), so that the seeds of one env, which cost about the same, spread over the shards; in the order to run them
    (seed first, so that a first complete seed comes early)."""
    return sorted(sorted(combinations)[index - 1::count], key=execution_order)


def execution_order(combination: Combination) -> tuple:
    return combination.seed, combination.script_name, combination.env_id, combination.exp_name


def resolve_script(name: str) -> Path:
    path = find_script(name)
    if path is None:
        places = " and ".join(dict.fromkeys([str(Path.cwd()), str(REPO_ROOT)]))
        raise UsageError(f"script not found: {name} (looked in {places})")
    return path


def build_combinations(script_specs: list[str], env_ids: Optional[list[str]], seeds: list[int],
                       tag: Optional[str]) -> list[Combination]:
    """Expand `SCRIPT.py` (with --env-ids) and `SCRIPT.py:ENV1,ENV2` specs over the seeds, sorted, without repeats."""
    if tag is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", tag) or "__" in tag):
        raise UsageError(f"--tag must be letters, digits, '.', '_' or '-', without '__' (got {tag!r})")
    combinations, stems = set(), {}
    for spec in script_specs:
        match = re.fullmatch(r"(.+?\.py)(?::(.*))?", spec)
        if not match:
            raise UsageError(f"--scripts takes SCRIPT.py or SCRIPT.py:ENV[,ENV...] (got {spec!r})")
        script = resolve_script(match.group(1))
        if match.group(2) is not None:
            envs = [env for env in match.group(2).split(",") if env]
            if not envs:
                raise UsageError(f"{spec!r} names no env after the ':'")
        elif env_ids:
            envs = env_ids
        else:
            raise UsageError(f"no env for {spec}: give --env-ids, or write {spec}:ENV")
        if stems.setdefault(script.stem, script) != script:
            raise UsageError(f"{stems[script.stem]} and {script} have the same name, so their runs could not be told "
                             "apart")
        exp_name = script.stem + (f"-{tag}" if tag else "")
        combinations |= {Combination(script_name=script.name, env_id=env, seed=seed, exp_name=exp_name, script=script)
                         for env in envs for seed in seeds}
    return sorted(combinations)


def check_extra_args(extra_args: list[str]) -> None:
    for token in extra_args:
        name = token.split("=", 1)[0]
        if name in RESERVED_FLAGS:
            raise UsageError(f"{name} after -- is set by the runner for each run; use the runner's own flags "
                             "(--env-ids, --seeds, --runs-dir, --tag)")


def requested_settings(combinations: list[Combination], extra_args: list[str]) -> dict[Combination, dict]:
    """Every setting (defaults included) each combination's run gets, parsed and checked by its script's own parser
    and checks, so that a bad flag after -- is refused before any run starts."""
    scripts, checked, requested = {}, set(), {}
    for combination in combinations:
        path = combination.script
        try:
            if path not in scripts:
                scripts[path] = load_script(combination.script_name, path)
            argv = [*extra_args, "--env-id", combination.env_id, "--seed", str(combination.seed)]
            if (path, combination.env_id) not in checked:  # once per (script, env): the checks make the env
                scripts[path].check(argv)
                checked.add((path, combination.env_id))
            requested[combination] = scripts[path].settings(argv)
        except ScriptError as error:
            raise UsageError(str(error)) from None
    return requested


def scan_runs(runs_dir: Path) -> dict[tuple[str, str, int], list[RunDir]]:
    """Run directories directly under runs_dir, by (env_id, exp_name, seed), oldest first."""
    runs: dict[tuple[str, str, int], list[RunDir]] = {}
    paths = [path for path in runs_dir.iterdir() if path.is_dir() and not path.name.startswith("_")] \
        if runs_dir.is_dir() else []
    for run in sorted(find_runs(paths), key=lambda run: (run.started_at, run.path.name)):
        runs.setdefault((run.args["env_id"], run.args["exp_name"], int(run.args["seed"])), []).append(run)
    return runs


@dataclass
class Job:
    combination: Combination
    action: str  # "skip", "run", "resume" or "restart"
    finished_run: Optional[RunDir] = None
    resume_from: Optional[Path] = None
    unfinished: list[RunDir] = field(default_factory=list)
    handle: Optional[Union[cluster.LocalJob, cluster.SlurmJob]] = None  # the process or Slurm job, once started
    exit_code: Optional[int] = None
    ended_how: str = ""  # how a job ended that has no exit status (a Slurm job that left no result)
    resumes: int = 0  # times it was submitted again with --resume after a SIGTERM
    started: float = 0.0
    run_dir: Optional[Path] = None
    known_dirs: set = field(default_factory=set)
    total_timesteps: Optional[int] = None
    metrics: Optional[MetricsFollower] = None


def plan(combinations: list[Combination], runs_dir: Path, extra_args: list[str], unfinished_policy: str) -> list[Job]:
    requested = requested_settings(combinations, extra_args)
    runs = scan_runs(runs_dir)
    jobs, conflicts = [], []
    for combination in combinations:
        found = runs.get((combination.env_id, combination.exp_name, combination.seed), [])
        finished = [run for run in found if run.finished]
        unfinished = [run for run in found if not run.finished]
        if finished:
            problems = setting_conflicts(requested[combination], finished[-1].args)
            if problems:
                conflicts.append(f"  {finished[-1].path}: " + "; ".join(problems))
            jobs.append(Job(combination, "skip", finished_run=finished[-1]))
            continue
        resumable = [run for run in unfinished if (run.path / "checkpoint.pt").is_file()]
        if unfinished_policy == "resume" and resumable:
            job = Job(combination, "resume", resume_from=resumable[-1].path / "checkpoint.pt")
        elif unfinished:
            job = Job(combination, "restart", unfinished=unfinished)
        else:
            job = Job(combination, "run")
        job.total_timesteps = requested[combination].get("total_timesteps")
        jobs.append(job)
    if conflicts:
        raise UsageError("finished runs were made with other settings than this benchmark's:\n"
                         + "\n".join(conflicts) + "\nuse --tag NAME (or another --runs-dir) to run this variant "
                         "beside them, or delete those run directories to redo them")
    return jobs


def script_argv(job: Job, runs_dir: Path, extra_args: list[str]) -> list[str]:
    """The flags a job's script is run with."""
    combination = job.combination
    resume = ["--resume", str(job.resume_from)] if job.resume_from else []
    return ["--env-id", combination.env_id, "--seed", str(combination.seed), "--runs-dir", str(runs_dir),
            "--exp-name", combination.exp_name, *resume, *extra_args]


def command(job: Job, runs_dir: Path, extra_args: list[str]) -> list[str]:
    return [sys.executable, str(job.combination.script), *script_argv(job, runs_dir, extra_args)]


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def find_run_dir(job: Job, runs_dir: Path) -> Optional[Path]:
    """The run directory the job's run made (the newest of its name that was not there before it started)."""
    if job.run_dir is None:
        prefix = job.combination.file_stem + "__"
        new = [path for path in runs_dir.glob(prefix + "*") if path.name not in job.known_dirs]
        if new:
            job.run_dir = max(new, key=lambda path: path.stat().st_mtime)
    return job.run_dir


def progress(job: Job, runs_dir: Path) -> str:
    """'37%' (or a step count) of a running job, from the metrics.csv of its run directory."""
    if find_run_dir(job, runs_dir) is None:
        return "starting"
    job.metrics = job.metrics or MetricsFollower(job.run_dir / "metrics.csv")
    job.metrics.new_rows()
    step = job.metrics.last_step
    if step is None:
        return "starting"
    if job.total_timesteps:
        return f"{100 * step / job.total_timesteps:.0f}%"
    return f"{step:,} steps"


def move_aside(run: RunDir, runs_dir: Path) -> Path:
    target_dir = runs_dir / "_unfinished"
    target_dir.mkdir(exist_ok=True)
    target = target_dir / run.path.name
    while target.exists():
        target = target.with_name(target.name + "_")
    run.path.rename(target)
    return target


def start(job: Job, runs_dir: Path, logs_dir: Path, extra_args: list[str], threads: int, executor) -> None:
    """Start the job's run: a child process, or a Slurm job when `executor` (submitit's) is given."""
    for run in job.unfinished:
        move_aside(run, runs_dir)
    job.known_dirs = {path.name for path in runs_dir.iterdir()} if runs_dir.is_dir() else set()
    if job.resume_from is not None:
        job.run_dir = job.resume_from.parent
    argv = command(job, runs_dir, extra_args)
    header = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.action}: {' '.join(argv)}\n"
    logs_dir.mkdir(parents=True, exist_ok=True)
    logs = [logs_dir / f"{job.combination.file_stem}.{name}.log" for name in ("stdout", "stderr")]
    for log in logs:
        with open(log, "a") as file:
            file.write(header)
    job.exit_code, job.ended_how = None, ""
    if executor is None:
        job.handle = cluster.LocalJob(job.combination.script, script_argv(job, runs_dir, extra_args), *logs, threads)
    else:
        with SUBMITTING:  # the job's name is the executor's setting at submission, and the pool's threads share it
            executor.update_parameters(job_name=re.sub(r"[^A-Za-z0-9._-]+", "_", job.combination.label))
            job.handle = cluster.SlurmJob(executor, job.combination.script, script_argv(job, runs_dir, extra_args),
                                          *logs, threads)
    job.started = time.monotonic()


def ended(job: Job) -> bool:
    """Whether the job's process or Slurm job has ended (its exit status, if any, then in job.exit_code)."""
    done, job.exit_code, job.ended_how = job.handle.poll()
    return done


def last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines and not lines[-1].startswith("=== ") else ""


def outcome(job: Job, runs_dir: Path, logs_dir: Path) -> tuple[bool, str]:
    """(succeeded, one line saying how) for a job whose process has exited."""
    code = job.exit_code
    candidates = [job.run_dir] if job.run_dir else []
    candidates += [run.path for run in scan_runs(runs_dir).get(
        (job.combination.env_id, job.combination.exp_name, job.combination.seed), [])][::-1]
    summaries = [read_json(path / "summary.json") or {} for path in candidates]
    summary = next((summary for summary in summaries if summary.get("status") not in (None, "interrupted")), None)
    stderr_log = logs_dir / f"{job.combination.file_stem}.stderr.log"
    if code == 0 and summary is not None:
        result = summary.get("eval_mean")
        result = f"final eval {result:.2f} ± {summary.get('eval_std') or 0:.2f}" if result is not None else "no eval"
        return True, f"{result}, {summary.get('global_step', 0):,} steps -> {summary.get('run_dir', '')}"
    if code is None:
        return False, job.ended_how
    if code == 0:
        why = "exited 0 without writing a finished summary.json (interrupted?)"
    elif code > 128 and code - 128 in signal.valid_signals():
        why = f"stopped by {signal.Signals(code - 128).name} (exit status {code})"
    else:
        why = f"exit status {code}"
    detail = last_line(stderr_log)
    return False, f"{why}; see {stderr_log}" + (f": {detail}" if detail else "")


def cut_short(job: Job) -> bool:
    """Whether a signal stopped the job's run (SIGTERM's exit status, or a summary.json that says "interrupted")."""
    summary = (read_json(job.run_dir / "summary.json") if job.run_dir else None) or {}
    return job.exit_code == 128 + signal.SIGTERM or summary.get("status") == "interrupted"


def prepare_resubmission(job: Job) -> None:
    """Make a cut-short job continue from its checkpoint.pt, or start afresh if it had saved none."""
    job.resumes += 1
    checkpoint = job.run_dir / "checkpoint.pt" if job.run_dir else None
    if checkpoint is not None and checkpoint.is_file():
        job.action, job.resume_from, job.unfinished = "resume", checkpoint, []
    else:
        job.action, job.resume_from = "restart", None
        job.unfinished = [RunDir(job.run_dir, {}, None)] if job.run_dir and job.run_dir.is_dir() else []
        job.run_dir = None


@dataclass
class Args:
    scripts: tuple[str, ...]
    """scripts to run (relative to here or to the repository root): SCRIPT.py, or SCRIPT.py:ENV1,ENV2 with its own
    envs"""
    seeds: tuple[int, ...]
    """seeds to run"""
    env_ids: tuple[str, ...] = ()
    """envs for every script given without a list of its own"""
    workers: Optional[int] = None
    """runs at a time (None: 1 with --cluster local; every run with --cluster slurm, whose scheduler queues them)"""
    runs_dir: str = str(REPO_ROOT / "benchmarks" / "runs")
    """folder the runs write to, shared between shards"""
    tag: Optional[str] = None
    """run a variant beside the baseline: exp name STEM-TAG instead of STEM"""
    shard: Optional[str] = None
    """I/N: run only the I-th of N disjoint parts of the combinations"""
    unfinished: Literal["resume", "restart"] = "resume"
    """what to do with a combination's unfinished run directory"""
    threads_per_run: int = 1
    """OMP/MKL/OpenBLAS threads per run"""
    status_every: float = 60.0
    """seconds between status lines when the output is not a terminal"""
    max_resumes: int = 3
    """times a run cut short by SIGTERM is submitted again with --resume"""
    dry_run: bool = False
    """print what would run, and run nothing"""
    cluster: Literal["local", "slurm"] = "local"
    """where the runs execute: this machine, or Slurm jobs through submitit"""
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    """the Slurm jobs of --cluster slurm"""


def parse_args(argv: list[str]) -> tuple[Args, list[str]]:
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = cli(Args, own, "benchmarks/run.py", __doc__)
    problems = [f"--{name.replace('_', '-')} must be >= {low} (got {getattr(args, name)})"
                for name, low in [("workers", 1), ("threads_per_run", 1), ("max_resumes", 0)]
                if getattr(args, name) is not None and getattr(args, name) < low]
    if args.cluster == "slurm":
        problems += cluster.problems(args.slurm)
    if problems:
        raise UsageError("; ".join(problems))
    if args.workers is None:
        args.workers = 1 if args.cluster == "local" else sys.maxsize
    return args, extra


class Pool:
    """Runs the jobs, `workers` at a time (concurrent.futures; a thread per job follows its process or Slurm job, and
    submits it again when a SIGTERM cut it short), with a tqdm status line: redrawn in place on a terminal, printed
    every --status-every seconds otherwise."""

    def __init__(self, args: Args, runs_dir: Path, extra_args: list[str], executor):
        self.args, self.runs_dir, self.extra_args, self.executor = args, runs_dir, extra_args, executor
        self.running: list[Job] = []
        self.succeeded: list[Job] = []
        self.failed: list[Job] = []
        self.stopping, self.gave_up = threading.Event(), threading.Event()
        self.began = time.monotonic()

    def event(self, text: str) -> None:
        tqdm.write(f"[{format_duration(time.monotonic() - self.began)}] {text}", file=sys.stdout)

    def follow(self, job: Job) -> None:
        """Start the job's run and wait for it to end, again while a SIGTERM cuts it short (a preempted Slurm job)."""
        logs_dir = self.runs_dir / "_logs"
        while not self.stopping.is_set():
            self.running.append(job)  # before starting it, so that an interrupt in between still finds its process
            start(job, self.runs_dir, logs_dir, self.extra_args, self.args.threads_per_run, self.executor)
            verb = {"run": "started", "resume": f"resuming {job.resume_from}",
                    "restart": f"restarting ({len(job.unfinished)} unfinished dir(s) moved to _unfinished/)"}
            slurm_job = f" (Slurm job {job.handle.id})" if self.executor else ""
            self.event(f"{verb[job.action]}{slurm_job}: {job.combination.label}")
            while not ended(job) and not self.gave_up.is_set():
                time.sleep(0.5)
            if self.stopping.is_set():
                return
            self.running.remove(job)
            find_run_dir(job, self.runs_dir)  # a run that ended before the status line saw its directory
            ok, how = outcome(job, self.runs_dir, logs_dir)
            took = format_duration(time.monotonic() - job.started)
            if not ok and cut_short(job) and job.resumes < self.args.max_resumes:  # preempted, cancelled, timed out
                prepare_resubmission(job)
                again = "with --resume" if job.action == "resume" else "afresh (it had saved no checkpoint)"
                self.event(f"cut short ({took}): {job.combination.label}: {how}; submitting it again {again} "
                           f"({job.resumes} of at most {self.args.max_resumes})")
                continue
            (self.succeeded if ok else self.failed).append(job)
            self.event(f"{'done' if ok else 'FAILED'} ({took}): {job.combination.label}: {how}")
            return

    def status(self, total: int) -> str:
        parts = [f"{len(self.failed)} failed"]
        if self.running:
            parts.append("running: " + ", ".join(f"{job.combination.label} {progress(job, self.runs_dir)}"
                                                 for job in list(self.running)))
        waiting = total - len(self.succeeded) - len(self.failed) - len(self.running)
        return "  ".join(parts + ([f"{waiting} waiting"] if waiting else []))

    def run(self, todo: list[Job]) -> None:
        """Run every job; KeyboardInterrupt (Ctrl-C, or SIGTERM to this runner) once they have been told to stop."""
        self.bar = tqdm(total=len(todo), file=sys.stdout, dynamic_ncols=True, disable=not sys.stdout.isatty(),
                        bar_format="{n_fmt}/{total_fmt} done [{elapsed}]{postfix}")
        threads = ThreadPoolExecutor(max_workers=min(self.args.workers, len(todo)))
        futures = [threads.submit(self.follow, job) for job in todo]
        last_line = time.monotonic()
        try:
            while not all(future.done() for future in futures):
                wait(futures, timeout=0.5)
                self.bar.n = len(self.succeeded)
                self.bar.set_postfix_str(self.status(len(todo)))
                # not a terminal: tqdm would rewrite its line with carriage returns, so a plain line now and then
                if self.bar.disable and time.monotonic() - last_line >= self.args.status_every:
                    last_line = time.monotonic()
                    self.event(f"{len(self.succeeded)}/{len(todo)} done  {self.status(len(todo))}")
            for future in futures:
                future.result()  # a bug in the runner surfaces here
        except KeyboardInterrupt:
            self.stopping.set()
            threads.shutdown(wait=False, cancel_futures=True)
            self.bar.close()
            self.stop_runs()
            raise
        self.bar.close()

    def stop_runs(self) -> None:
        """Ask each running run to save a checkpoint and stop; wait up to 120 s (or a second Ctrl-C) for them."""
        print(f"\ninterrupted: {len(self.running)} run(s) are saving a checkpoint and stopping (Ctrl-C again: stop "
              "waiting); run the same command again to continue", file=sys.stderr, flush=True)
        running = [job for job in self.running if job.handle is not None]
        for job in running:
            job.handle.stop()
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline and not all([ended(job) for job in running]):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        self.gave_up.set()
        for job in running:
            state = f"exit status {job.exit_code}" if job.exit_code is not None else job.ended_how or "still running"
            resumable = job.run_dir is not None and (job.run_dir / "checkpoint.pt").is_file()
            then = "has a checkpoint.pt to resume from" if resumable else "no checkpoint.pt: will start again"
            print(f"  interrupted: {job.combination.label} ({state}; {then})", file=sys.stderr)


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    try:
        args, extra_args = parse_args(argv)
        shard_index, shard_count = parse_shard(args.shard)
        check_extra_args(extra_args)
        all_combinations = build_combinations(list(args.scripts), list(args.env_ids), sorted(set(args.seeds)),
                                              args.tag)
        combinations = shard(all_combinations, shard_index, shard_count)
        runs_dir = Path(args.runs_dir).resolve()
        jobs = plan(combinations, runs_dir, extra_args, args.unfinished)
        if not args.dry_run:
            check_writable(runs_dir, "--runs-dir")
        if args.cluster == "slurm" and not args.dry_run and (missing := cluster.missing_programs()):
            raise UsageError("; ".join(missing))  # looked for once every setting is known to be valid
    except (UsageError, ScriptError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while the scripts (and torch) load to check the settings
        print("\ninterrupted before any run started", file=sys.stderr)
        return 130
    logs_dir = runs_dir / "_logs"
    todo = [job for job in jobs if job.action != "skip"]
    counts = {action: sum(job.action == action for job in jobs) for action in ["skip", "run", "resume", "restart"]}
    shard_text = f", shard {shard_index}/{shard_count}: {len(combinations)}" if shard_count > 1 else ""
    where = (f"{args.workers} at a time" if args.cluster == "local" else "as Slurm jobs"
             + (f", {args.workers} at a time" if args.workers < sys.maxsize else ""))
    print(f"{len(all_combinations)} combinations{shard_text}; {counts['skip']} finished already, {counts['run']} to "
          f"run, {counts['resume']} to resume, {counts['restart']} to restart; {where}; runs in {runs_dir}, logs in "
          f"{logs_dir}", flush=True)
    if args.dry_run:
        for job in jobs:
            where = job.finished_run.path if job.finished_run else job.resume_from or ""
            print(f"{job.action:8s} {job.combination.label}  {where}")
            if job.action != "skip":
                print("         " + " ".join(command(job, runs_dir, extra_args)))
        return 0
    if not todo:
        return 0

    runs_dir.mkdir(parents=True, exist_ok=True)
    executor = (cluster.executor(args.slurm, runs_dir / "_slurm", "dqn", args.threads_per_run)
                if args.cluster == "slurm" else None)
    pool = Pool(args, runs_dir, extra_args, executor)
    # local runs have their own sessions, so a Ctrl-C in the terminal reaches only this process, which passes exactly
    # one SIGINT on to each run (a second one could cut short the checkpoint the run saves when interrupted)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # e.g. a batch system ending the job
    try:
        pool.run(todo)
    except KeyboardInterrupt:
        return 130
    print(f"{len(pool.succeeded)} run(s) finished, {len(pool.failed)} failed, {counts['skip']} skipped as finished "
          "already")
    for job in pool.failed:
        print(f"  failed: {job.combination.label}: {outcome(job, runs_dir, logs_dir)[1]}")
    return 1 if pool.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
