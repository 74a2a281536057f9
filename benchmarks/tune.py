"""Hyperparameter search for the DQN scripts with Optuna: every trial is a real training run of the script.

A trial runs `python SCRIPT.py` with the sampled flags in a subprocess, reports each `eval/episodic_return` of its
metrics.csv to Optuna as it is written, is stopped when the pruner judges it hopeless, and scores the `eval_mean` of
its summary.json. Sampler: multivariate TPE (Bergstra et al. 2011) with the constant liar, so that parallel workers
spread out; pruner: the median rule (Golovin et al. 2017) after a warm-up. The study lives in a database (SQLite, or
PostgreSQL for several machines; watch it with `optuna-dashboard STORAGE`): workers share it, the same command
resumes it, and `--n-trials` counts its finished trials over all workers.

    python benchmarks/tune.py --script dqn.py --n-trials 30              # one worker, SQLite file tune.db
    python benchmarks/tune.py --script dqn.py --n-trials 30 &            # run it twice: two workers, one study
    python benchmarks/tune.py --script dqn_lunar.py --n-trials 50 --storage postgresql://USER:PASSWORD@HOST:5432/DB
    python benchmarks/tune.py --script dqn.py --space learning-rate=log:1e-5:1e-3 -- --env-id Acrobot-v1
    python benchmarks/tune.py --script dqn_lunar.py --n-trials 50 --storage postgresql://... --cluster slurm --workers 8

Flags after `--` go to every trial (and are not searched). `--space NAME=SPEC` replaces or adds a searched flag: SPEC
is `log:LOW:HIGH`, `uniform:LOW:HIGH` (integers for an integer flag) or `choice:A,B,C` (`choice:64 64,256 256`).
The best trial is printed as a command line and written to `{runs_dir}/{study}/best.json`.
"""

import dataclasses
import json
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import optuna
import scipy.stats
import sqlalchemy
import tyro
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import cluster
from cluster import SlurmOptions
from script_runs import (REPO_ROOT, MetricsFollower, Script, ScriptError, check_writable, find_script, launch,
                         load_script, stop)

# The default search space of each script, in the syntax of --space. Ranges bracket each script's own defaults, which
# come from the papers and tuned sets its docstrings cite (a test checks this); a width is searched only where the
# script has --hidden-sizes (for dqn_atari.py, the width of the layer after the convolutions).
SEARCH_SPACES: dict[str, dict[str, str]] = {
    "dqn.py": {
        "learning-rate": "log:1e-4:3e-3",
        "gamma": "choice:0.95,0.98,0.99,0.995",
        "batch-size": "choice:32,64,128,256",
        "tau": "log:0.001:0.05",  # a soft target update every step (--target-network-frequency 1)
        "exploration-fraction": "uniform:0.05:0.5",
        "hidden-sizes": "choice:64 64,120 84,128 128,256 256",
    },
    "dqn_lunar.py": {  # around the defaults, which came from this space (docs/dqn_lunar.md)
        "learning-rate": "log:2e-4:2e-3",
        "end-learning-rate": "log:1e-5:3e-4",
        "batch-size": "choice:64,128,256",
        "tau": "log:0.002:0.05",
        "end-e": "choice:0.01,0.03,0.1",
        "exploration-fraction": "uniform:0.05:0.3",
        "hidden-sizes": "choice:64 64,128 128,256 256",
        "buffer-size": "choice:50000,100000,200000",
    },
    "dqn_atari.py": {
        "learning-rate": "log:2e-5:5e-4",
        "gamma": "choice:0.98,0.99,0.995",
        "batch-size": "choice:32,64",
        "target-network-frequency": "choice:1000,2000,4000,8000",
        "exploration-fraction": "uniform:0.05:0.2",
        "hidden-sizes": "choice:256,512,1024",
    },
    "double_dueling_per_dqn.py": {  # LunarLander-v3 by default, as dqn_lunar.py, plus the prioritization exponent
        "learning-rate": "log:2e-4:2e-3",
        "end-learning-rate": "log:1e-5:3e-4",
        "batch-size": "choice:64,128,256",
        "tau": "log:0.002:0.05",
        "end-e": "choice:0.01,0.03,0.1",
        "exploration-fraction": "uniform:0.05:0.3",
        "hidden-sizes": "choice:64 64,128 128",
        "alpha": "uniform:0.4:0.8",
    },
}
# Flags the tuner sets itself for every trial (or that make no sense in a trial).
RESERVED_FLAGS = {"runs-dir", "exp-name", "seed", "resume", "eval-checkpoint"}
METRIC = "eval/episodic_return"
POLL_SECONDS = 0.5  # how often a running trial's metrics.csv is read
WAIT_SECONDS = 2.0  # how often a worker with nothing to start looks again at the other workers' trials


@dataclass
class Args:
    script: str
    """script to tune: dqn.py, dqn_lunar.py, dqn_atari.py, double_dueling_per_dqn.py, or the path of one"""
    n_trials: int = 20
    """finished (complete or pruned) trials the study should hold, counted over all its workers"""
    storage: str = "sqlite:///tune.db"
    """database of the study: sqlite:///FILE (one machine), postgresql://USER:PASSWORD@HOST:PORT/DB (many)"""
    study_name: Optional[str] = None
    """name of the study in the storage; None: `{script}-{env_id}`. Workers with the same name share the study"""
    space: tuple[str, ...] = ()
    """NAME=SPEC pairs that replace or add to the search space (learning-rate=log:1e-5:1e-3 batch-size=choice:64,128)"""
    enqueue: tuple[str, ...] = ()
    """NAME=VALUE pairs of a first trial, run before any is sampled; searched flags it leaves out are sampled"""
    objective: Literal["eval_mean", "best_eval_mean"] = "eval_mean"
    """summary.json value to maximize: the final evaluation mean, or the best evaluation mean of the run"""
    pruner: Literal["median", "threshold", "none"] = "median"
    """stop a trial below the median of earlier trials at the same step, below --prune-below, or never"""
    prune_below: Optional[float] = None
    """evaluation mean under which --pruner threshold stops a trial"""
    warmup_fraction: float = 0.2
    """fraction of --total-timesteps before which no trial is pruned (early evaluations are mostly exploration)"""
    startup_trials: int = 5
    """trials sampled at random before TPE takes over, and finished before the median pruner judges any trial"""
    seed: int = 1
    """--seed of every trial's first run, so trials differ only by their parameters"""
    seeds_per_trial: int = 1
    """runs per trial, seeds --seed, --seed + 1, ..., run together and pruned and scored by their --aggregate"""
    aggregate: Literal["mean", "iqm", "min"] = "mean"
    """how a trial combines its seeds: mean, interquartile mean (Agarwal et al. 2021), or the worst seed's"""
    sampler_seed: Optional[int] = None
    """seed of the TPE sampler (None: random; give each worker a different one if you set it)"""
    threads: int = 1
    """threads per trial run (OMP_NUM_THREADS, and --torch-threads where the script has it)"""
    runs_dir: str = "runs/tune"
    """folder under which each study keeps its trials' runs (`{runs_dir}/{study}/trial_0007/...`) and best.json"""
    output: Optional[str] = None
    """file for the best parameters as JSON, with the command line; None: `{runs_dir}/{study}/best.json`"""
    max_failures: int = 3
    """stop this worker after this many failed trials in a row (a script that crashes every time)"""
    cluster: Literal["local", "slurm"] = "local"
    """local: this process is a worker; slurm: submit --workers Slurm jobs (submitit), each a worker, and wait"""
    workers: int = 1
    """workers to submit with --cluster slurm (the storage must reach them: PostgreSQL, or SQLite on a shared disk)"""
    slurm: SlurmOptions = dataclasses.field(default_factory=SlurmOptions)
    """the Slurm jobs of --cluster slurm"""


class TuneError(ScriptError):
    """A setting the tuner cannot use; reported as one line, without a traceback."""


class TrialFailed(Exception):
    """The trial's run crashed or produced no objective; the trial is marked FAIL and the study goes on."""


class BudgetReached(Exception):
    """Another worker started the last trial of the budget at the same moment; this trial is marked FAIL unrun."""



def load_tuned_script(given: str) -> Script:
    """The script to tune: as given, or at the repository's top level (e.g. `dqn.py`)."""
    path = find_script(given)
    if path is None:
        if Path(given).name in SEARCH_SPACES:
            raise TuneError(f"{given} is not there (looked in . and {REPO_ROOT})")
        raise TuneError(f"unknown script {given!r}: expected one of {', '.join(SEARCH_SPACES)}, or the path of a "
                        "script like them")
    return load_script(given, path)


def spec(distribution: BaseDistribution) -> str:
    """An Optuna distribution in the syntax of --space: log:LOW:HIGH, uniform:LOW:HIGH or choice:A,B,C."""
    if isinstance(distribution, CategoricalDistribution):
        return "choice:" + ",".join(str(choice) for choice in distribution.choices)
    return f"{'log' if distribution.log else 'uniform'}:{distribution.low:g}:{distribution.high:g}"


def suggest(trial: optuna.Trial, flag: str, distribution: BaseDistribution):
    """The trial's value of a searched flag, sampled from its distribution (Optuna's suggest_* API)."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(flag, distribution.choices)
    number = trial.suggest_int if isinstance(distribution, IntDistribution) else trial.suggest_float
    return number(flag, distribution.low, distribution.high, log=distribution.log)


def parse_value(text: str, field_type: type, where: str):
    """Convert one value of a spec to the flag's type (a tuple flag keeps its space-separated text)."""
    try:
        if field_type is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if field_type is int:
            return int(text)
        if field_type is float:
            return float(text)
        if field_type is tuple:
            if not text.split():
                raise ValueError
            [int(part) for part in text.split()]
            return " ".join(text.split())
        return text
    except ValueError:
        kind = "true or false" if field_type is bool else "space-separated integers" if field_type is tuple \
            else f"an {field_type.__name__}" if field_type is int else f"a {field_type.__name__}"
        raise TuneError(f"{where}: {text!r} is not {kind}") from None


def parse_distribution(flag: str, text: str, script: Script) -> BaseDistribution:
    """The Optuna distribution of `log:LOW:HIGH`, `uniform:LOW:HIGH` or `choice:A,B,C` for a flag of `script`."""
    where = f"--space {flag}={text}"
    field_type = script.field_types[flag.replace("-", "_")]
    kind, _, rest = text.partition(":")
    if kind == "choice":
        choices = tuple(parse_value(item.strip(), field_type, where) for item in rest.split(",") if item.strip())
        if not choices:
            raise TuneError(f"{where}: choice needs at least one value")
        if len(set(choices)) != len(choices):
            raise TuneError(f"{where}: a value appears twice")
        return CategoricalDistribution(choices)
    if kind not in ("log", "uniform"):
        raise TuneError(f"{where}: SPEC must be log:LOW:HIGH, uniform:LOW:HIGH or choice:A,B,C")
    if field_type not in (int, float):
        raise TuneError(f"{where}: --{flag} is not a number; use choice:A,B,C")
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise TuneError(f"{where}: {kind} needs LOW:HIGH")
    low, high = (parse_value(bound, field_type, where) for bound in bounds)
    if not low < high:
        raise TuneError(f"{where}: LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise TuneError(f"{where}: a log range needs LOW > 0")
    number = IntDistribution if field_type is int else FloatDistribution
    return number(low, high, log=kind == "log")


def first_trial(pairs: tuple[str, ...], space: dict[str, BaseDistribution], script: Script) -> dict:
    """--enqueue's NAME=VALUE pairs as trial parameters, each a value its distribution can take."""
    params = {}
    for pair in pairs:
        flag, _, text = pair.partition("=")
        where = f"--enqueue {pair}"
        if flag not in space:
            raise TuneError(f"{where}: {flag} is not a searched flag ({', '.join(space)})")
        distribution = space[flag]
        value = parse_value(text.strip(), script.field_types[flag.replace("-", "_")], where)
        if isinstance(distribution, CategoricalDistribution) and value not in distribution.choices:
            raise TuneError(f"{where}: not one of {spec(distribution)}")
        if not isinstance(distribution, CategoricalDistribution) and not distribution.low <= value <= distribution.high:
            raise TuneError(f"{where}: outside {spec(distribution)}")
        params[flag] = value
    return params


def flag_names(argv: list[str]) -> list[str]:
    """The flag names in a command line (`--gamma 0.9 --no-track` -> gamma, no-track)."""
    return [token[2:].split("=", 1)[0] for token in argv if token.startswith("--") and len(token) > 2]


def check_fixed_flags(fixed: list[str], script: Script) -> None:
    for flag in flag_names(fixed):
        field = flag.replace("-", "_")
        negated_bool = flag.startswith("no-") and script.field_types.get(field[3:]) is bool
        if field not in script.field_types and not negated_bool:
            raise TuneError(f"unknown flag --{flag} after `--`: {script.name} has no such flag "
                            f"(see python {script.given} --help)")
        if flag in RESERVED_FLAGS:
            raise TuneError(f"--{flag} after `--` is set by tune.py for each trial"
                            + (" (use tune.py --seed)" if flag == "seed" else ""))


def build_space(script: Script, overrides: tuple[str, ...],
                fixed: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The script's default space, with the --space overrides, less the flags fixed after `--`; and notes to print."""
    notes = []
    known = script.name if script.name in SEARCH_SPACES else "dqn.py"
    if script.name not in SEARCH_SPACES:
        notes.append(f"{script.name} has no search space of its own: using dqn.py's")
    specs = {flag: spec for flag, spec in SEARCH_SPACES[known].items()}
    missing = [flag for flag in specs if not script.has_flag(flag)]
    if missing:
        notes.append(f"not searched, {script.name} has no flag: {', '.join('--' + flag for flag in missing)}")
        specs = {flag: spec for flag, spec in specs.items() if flag not in missing}
    for override in overrides:
        flag, separator, spec = override.partition("=")
        flag = flag.strip().lstrip("-").replace("_", "-")
        if not separator or not flag:
            raise TuneError(f"--space {override!r}: expected NAME=SPEC, e.g. learning-rate=log:1e-5:1e-3")
        if not script.has_flag(flag):
            raise TuneError(f"unknown parameter {flag!r} in --space: {script.name} has no flag --{flag}")
        if flag in RESERVED_FLAGS:
            raise TuneError(f"--space {flag}: --{flag} is set by tune.py, not searched")
        specs[flag] = spec.strip()
    fixed_flags = {flag.removeprefix("no-") for flag in flag_names(fixed)}
    for flag in list(specs):
        if flag in fixed_flags:
            if any(override.partition("=")[0].strip().lstrip("-").replace("_", "-") == flag for override in overrides):
                raise TuneError(f"--{flag} is both searched (--space) and fixed (after `--`): choose one")
            notes.append(f"not searched, fixed after `--`: --{flag}")
            del specs[flag]
    return {flag: parse_distribution(flag, spec, script) for flag, spec in specs.items()}, notes


def flag_argv(flag: str, value, field_type: type) -> list[str]:
    if field_type is bool:
        return [f"--{flag}" if value else f"--no-{flag}"]
    if field_type is tuple:
        return [f"--{flag}", *str(value).split()]
    return [f"--{flag}", repr(value) if isinstance(value, float) else str(value)]


def params_argv(params: dict, script: Script) -> list[str]:
    """A trial's parameters as the script's flags."""
    return [token for flag, value in params.items()
            for token in flag_argv(flag, value, script.field_types.get(flag.replace("-", "_"), str))]


def without_passwords(text: str) -> str:
    """`text` with the password of every URL in it (scheme://user:PASSWORD@host) replaced by ***."""
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]*:)(?!PASSWORD@)[^@\s]*@", r"\1***@", text)  # not the usage's


def storage_settings(url: str) -> tuple[str, dict]:
    """Check a storage URL without connecting; return it as it may be shown (no password) and the engine settings."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise TuneError(f"--storage {without_passwords(url)!r} is not a database URL: use sqlite:///FILE or "
                        "postgresql://USER:PASSWORD@HOST:PORT/DB") from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise TuneError(f"--storage {shown}: an in-memory SQLite database cannot be shared or resumed; "
                            "give a file, e.g. sqlite:///tune.db")
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise TuneError(f"--storage {shown}: folder {folder} does not exist")
        # Optuna's advice for SQLite with parallel workers: wait for the lock (60 s) instead of failing at once
        return shown, {"connect_args": {"timeout": 60.0}}
    if backend == "postgresql":
        return shown, {"pool_pre_ping": True}  # a trial can last hours; a dropped idle connection is replaced
    if backend == "mysql":
        return shown, {}
    raise TuneError(f"--storage {shown}: unsupported database {backend!r}; use sqlite or postgresql (or mysql)")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for `url`, or TuneError saying why not (the password never printed)."""
    shown, engine_kwargs = storage_settings(url)
    for attempt in range(5):  # workers started together may race to create the tables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs,
                    # a worker killed mid-trial leaves it RUNNING: after `grace_period` s without a heartbeat it is
                    # failed and queued again with the same parameters (Optuna's heartbeat mechanism)
                    heartbeat_interval=60, grace_period=180,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        except ImportError as error:
            raise TuneError(f"--storage {shown}: the database driver is missing ({error.__cause__ or error}); "
                            "pip install -r requirements.txt") from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            reason = first_line(error)
            if isinstance(error, sqlalchemy.exc.OperationalError) and not url.startswith("sqlite"):
                break  # cannot connect: retrying will not help
            time.sleep(0.2 + 0.5 * attempt)
    raise TuneError(f"cannot open --storage {shown}: {reason}")


def first_line(error: Exception) -> str:
    """The database's own message, in one line (SQLAlchemy wraps it in `orig`, Optuna in `__cause__`)."""
    inner = getattr(error, "orig", None) or getattr(error.__cause__, "orig", None) or error.__cause__ or error
    return (str(inner).strip().splitlines() or [type(inner).__name__])[0]


def counts(study: optuna.Study) -> dict[TrialState, int]:
    result = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        result[trial.state] += 1
    return result



@dataclass
class Worker:
    """One tuning process: runs trials of `study` until it holds `n_trials` finished trials."""

    args: Args
    script: Script
    space: dict[str, BaseDistribution]
    fixed: list[str]
    study: optuna.Study
    study_dir: Path
    total_timesteps: int
    current_number: Optional[int] = None  # the trial this worker runs, or ran last
    last_outcome: str = ""
    quiet_trial: Optional[int] = None  # a trial whose failure this worker has explained itself

    def trial_argv(self, params: dict, run_dir: Path, seed: int) -> list[str]:
        argv = [*self.fixed, *params_argv(params, self.script), "--seed", str(seed), "--runs-dir", str(run_dir)]
        fixed = set(flag_names(self.fixed))
        if self.script.has_flag("save-model") and not {"save-model", "no-save-model"} & fixed:
            argv.append("--no-save-model")  # checkpoints of every trial would fill the disk
        if self.script.has_flag("torch-threads") and "torch-threads" not in fixed:
            argv += ["--torch-threads", str(self.args.threads)]
        return argv

    def objective(self, trial: optuna.Trial) -> float:
        self.current_number, self.quiet_trial, self.last_outcome = trial.number, None, "failed"
        # Budget: the trials numbered before this one that are finished, running or queued are the ones that will
        # count; trial numbers are given out in order under a lock by the storage, so exactly one worker takes the
        # last slot even when two ask at the same moment. (Optuna's MaxTrialsCallback stops a worker only after a
        # trial ends, so workers that start together overshoot the budget; hence this check.)
        ahead = sum(1 for other in self.study.get_trials(deepcopy=False)
                    if other.number < trial.number
                    and other.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING))
        if ahead >= self.args.n_trials:
            self.quiet_trial, self.last_outcome = trial.number, "skipped"
            trial.set_user_attr("skipped", "the study's trial budget was taken by other workers; not run")
            raise BudgetReached()

        params = {flag: suggest(trial, flag, distribution) for flag, distribution in self.space.items()}
        trial_dir = self.study_dir / f"trial_{trial.number:04d}"
        if trial_dir.exists():  # a study of the same name was deleted and made again
            trial_dir = trial_dir.with_name(f"{trial_dir.name}_{int(time.time())}")
        seeds = [self.args.seed + k for k in range(self.args.seeds_per_trial)]
        # one run directory per seed: trial_0007/ itself for one seed, trial_0007/seed_2/ ... for several
        run_dirs = [trial_dir] if len(seeds) == 1 else [trial_dir / f"seed_{seed}" for seed in seeds]
        argvs = [self.trial_argv(params, run_dir, seed) for run_dir, seed in zip(run_dirs, seeds)]
        trial.set_user_attr("command", shlex.join(["python", self.script.command_path, *argvs[0]]))
        try:
            self.script.check(argvs[0])
        except ScriptError as error:
            return self.fail(trial, f"invalid settings: {error}")
        trial.set_user_attr("trial_dir", str(trial_dir))
        started, processes = time.perf_counter(), []
        try:
            for run_dir, argv in zip(run_dirs, argvs):
                run_dir.mkdir(parents=True)
                with open(run_dir / "output.log", "wb") as log:
                    processes.append(launch(self.script.path, argv, stdout=log, stderr=subprocess.STDOUT,
                                            threads=self.args.threads))
            print(f"trial {trial.number} started: {describe(params)}"
                  + (f" (seeds {seeds[0]}-{seeds[-1]})" if len(seeds) > 1 else ""), flush=True)
            self.follow(trial, run_dirs, processes, started)
        finally:
            for process in processes:
                stop(process)  # Ctrl-C, a pruned trial or an error in the tuner: no run goes on alone
        values = []
        for run_dir, process in zip(run_dirs, processes):
            summaries = sorted(run_dir.glob("*/summary.json"))
            if process.returncode != 0 or not summaries:
                tail = (run_dir / "output.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                return self.fail(trial, f"exit status {process.returncode}: {tail[0][:300]} "
                                        f"(log: {run_dir / 'output.log'})")
            summary = json.loads(summaries[0].read_text())
            value = summary.get(self.args.objective)
            if summary.get("status") not in ("finished", "target_reached") or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                return self.fail(trial, f"the run ended with status {summary.get('status')!r} and "
                                        f"{self.args.objective} {value!r} ({summaries[0]})")
            values.append(float(value))
        trial.set_user_attr("run_dir", str(sorted(run_dirs[0].glob("*/summary.json"))[0].parent))
        if len(seeds) > 1:
            trial.set_user_attr("seed_values", dict(zip(map(str, seeds), values)))
        value = combine(values, self.args.aggregate)
        self.last_outcome = (f"complete: {self.args.objective} {value:.2f}"
                             + (f" ({self.args.aggregate} of {', '.join(f'{v:.2f}' for v in values)})"
                                if len(values) > 1 else "") + f" ({time.perf_counter() - started:.0f} s)")
        return value

    def follow(self, trial: optuna.Trial, run_dirs: list[Path], processes: list, started: float) -> None:
        """Report each evaluation step that every seed has reached, as the aggregate of the seeds' evaluations there,
        until the runs end; prune the trial (stopping its runs) when the pruner says so."""
        followers: list[Optional[MetricsFollower]] = [None] * len(run_dirs)
        evaluations: list[dict[int, float]] = [{} for _ in run_dirs]
        reported = set()
        while True:
            running = any(process.poll() is None for process in processes)
            for i, run_dir in enumerate(run_dirs):
                if followers[i] is None and (found := sorted(run_dir.glob("*/metrics.csv"))):
                    followers[i] = MetricsFollower(found[0])
                for step, name, value in followers[i].new_rows() if followers[i] else []:
                    if name == METRIC:
                        evaluations[i].setdefault(step, value)  # the final evaluation may repeat the last step
            for step in sorted(set.intersection(*(set(seed) for seed in evaluations)) - reported):
                reported.add(step)
                value = combine([seed[step] for seed in evaluations], self.args.aggregate)
                trial.report(value, step)
                if running and trial.should_prune():
                    trial.set_user_attr("pruned_at_step", step)
                    self.last_outcome = (f"pruned at step {step:,}: evaluation {value:.2f} "
                                         f"({time.perf_counter() - started:.0f} s)")
                    raise optuna.TrialPruned(f"evaluation {value:.2f} at step {step}")
            if not running:
                return
            time.sleep(POLL_SECONDS)

    def fail(self, trial: optuna.Trial, reason: str) -> float:
        trial.set_user_attr("failure", reason)
        self.quiet_trial, self.last_outcome = trial.number, f"failed: {reason}"
        raise TrialFailed(reason)

    def run(self) -> None:
        """Start trials while the budget has room, wait while other workers run the last ones, return when the study
        holds `n_trials` finished trials."""
        failures_in_a_row, said_waiting = 0, False
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)  # a dead worker's trial: failed, queued again
            count = counts(self.study)
            finished = count[TrialState.COMPLETE] + count[TrialState.PRUNED]
            if finished >= self.args.n_trials:
                return
            if count[TrialState.WAITING] == 0 and finished + count[TrialState.RUNNING] >= self.args.n_trials:
                if not said_waiting:
                    print(f"waiting for the {count[TrialState.RUNNING]} trial(s) that other workers are running",
                          flush=True)
                    said_waiting = True
                time.sleep(WAIT_SECONDS)
                continue
            said_waiting = False
            self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed, BudgetReached))
            print(f"trial {self.current_number} {self.last_outcome}", flush=True)
            failures_in_a_row = failures_in_a_row + 1 if self.last_outcome.startswith("failed") else 0
            if failures_in_a_row >= self.args.max_failures:
                raise TuneError(f"{failures_in_a_row} trials in a row failed, the last one with: "
                                f"{self.last_outcome.removeprefix('failed: ')}")


class QuietHandledFailures(logging.Filter):
    """Drop Optuna's warning (with a traceback) for a trial whose failure the worker has already explained."""

    def __init__(self, worker: Worker):
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        number = self.worker.quiet_trial
        return number is None or not record.getMessage().startswith(f"Trial {number} failed")


def combine(values: list[float], aggregate: str) -> float:
    """The mean of the seeds' values, their interquartile mean (the 25% trimmed mean, as rliable computes it), or the
    lowest."""
    if aggregate == "min":
        return float(min(values))
    if aggregate == "iqm":
        return float(scipy.stats.trim_mean(values, proportiontocut=0.25))
    return float(sum(values) / len(values))


def describe(params: dict) -> str:
    return " ".join(f"{flag}={value:.3g}" if isinstance(value, float) else f"{flag}={value}"
                    for flag, value in params.items())



def check_args(args: Args) -> None:
    problems = []
    for name in ("n_trials", "threads", "max_failures", "seeds_per_trial"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.startup_trials < 0:
        problems.append(f"--startup-trials must be >= 0 (got {args.startup_trials})")
    if not 0.0 <= args.warmup_fraction <= 1.0:
        problems.append(f"--warmup-fraction must be in [0, 1] (got {args.warmup_fraction})")
    if args.pruner == "threshold" and args.prune_below is None:
        problems.append("--pruner threshold needs --prune-below")
    if args.prune_below is not None and args.pruner != "threshold":
        problems.append("--prune-below is only used with --pruner threshold")
    if args.workers < 1:
        problems.append(f"--workers must be >= 1 (got {args.workers})")
    if args.cluster == "slurm":
        problems += cluster.problems(args.slurm)
    if problems:
        raise TuneError("; ".join(problems))


def make_pruner(args: Args, total_timesteps: int) -> optuna.pruners.BasePruner:
    warmup_steps = int(args.warmup_fraction * total_timesteps)
    if args.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=warmup_steps)
    if args.pruner == "threshold":
        return optuna.pruners.ThresholdPruner(lower=args.prune_below, n_warmup_steps=warmup_steps)
    return optuna.pruners.NopPruner()


def join_study(args: Args, storage, study_name: str, total_timesteps: int, config: dict) -> optuna.Study:
    """Create the study, or join it if it exists; refuse to join one made with other settings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # multivariate, constant_liar
        sampler = optuna.samplers.TPESampler(n_startup_trials=args.startup_trials, multivariate=True,
                                             constant_liar=True, seed=args.sampler_seed)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", sampler=sampler,
                                pruner=make_pruner(args, total_timesteps), load_if_exists=True)
    existing = study.user_attrs.get("tune_config")
    if existing is None:
        study.set_user_attr("tune_config", config)
    elif existing != config:
        differing = "; ".join(f"{key}: {json.dumps(existing.get(key))} there, {json.dumps(config[key])} here"
                              for key in config if existing.get(key) != config[key])
        raise TuneError(f"study {study_name!r} was started with other settings ({differing}); "
                        "give the same ones to join it, or another --study-name")
    return study


def best_result(study: optuna.Study, worker: Worker, shown_storage: str) -> Optional[dict]:
    """The best complete trial as parameters and a ready-to-paste command line, or None if none completed."""
    count = counts(study)
    if count[TrialState.COMPLETE] == 0:
        return None
    best = study.best_trial
    argv = [*worker.fixed, *params_argv(best.params, worker.script), "--seed", str(worker.args.seed)]
    return {"study": study.study_name, "storage": shown_storage, "script": worker.script.given,
            "objective": worker.args.objective, "value": best.value, "trial": best.number, "params": best.params,
            "seeds": [worker.args.seed + k for k in range(worker.args.seeds_per_trial)],
            "aggregate": worker.args.aggregate, "seed_values": best.user_attrs.get("seed_values"),
            "run_dir": best.user_attrs.get("run_dir"), "argv": argv,
            "command": shlex.join(["python", worker.script.command_path, *argv]),
            "trials": {"complete": count[TrialState.COMPLETE], "pruned": count[TrialState.PRUNED],
                       "failed": count[TrialState.FAIL], "running": count[TrialState.RUNNING]}}


def tune(args: Args, fixed: list[str]) -> Optional[dict]:
    """Run this worker's share of the study; return the best result (also written to --output), or None."""
    check_args(args)
    storage_settings(args.storage)  # a bad URL is reported before the slow part
    script = load_tuned_script(args.script)
    check_fixed_flags(fixed, script)
    space, notes = build_space(script, args.space, fixed)
    enqueued = first_trial(args.enqueue, space, script)
    defaults, _ = script.parse(fixed)
    total_timesteps = int(defaults.total_timesteps)
    study_name = name_of_study(args, script, defaults)
    check_writable(Path(args.runs_dir), "--runs-dir")
    if args.output:
        check_writable(Path(args.output).parent, "--output's folder")
    storage = open_storage(args.storage)
    shown_storage, _ = storage_settings(args.storage)
    config = {"script": script.name, "fixed": fixed, "space": {flag: spec(d) for flag, d in space.items()},
              "objective": args.objective, "seed": args.seed, "seeds_per_trial": args.seeds_per_trial,
              "aggregate": args.aggregate}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = join_study(args, storage, study_name, total_timesteps, config)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        raise TuneError(f"cannot use study {study_name!r} in {shown_storage}: {first_line(error)}") from None
    if enqueued:  # once per study, however many workers start with it
        study.enqueue_trial(enqueued, skip_if_exists=True)
    study_dir = study_folder(args, study_name)
    worker = Worker(args, script, space, fixed, study, study_dir, total_timesteps)

    print(f"study {study_name!r} in {shown_storage}: {args.n_trials} trials of {script.given}, "
          f"{total_timesteps:,} steps each, maximizing {args.objective}" + (
              f" ({args.aggregate} over {args.seeds_per_trial} seeds a trial)" if args.seeds_per_trial > 1 else ""))
    for flag, distribution in space.items():
        print(f"  --{flag:<26} {spec(distribution)}")
    for note in notes:
        print(f"  ({note})")
    try:
        script.check(fixed)
    except ScriptError as error:  # a sampled value may still make it right, so only a warning
        print(f"warning: with the script's defaults for the searched flags, {error}", file=sys.stderr)

    log_filter = QuietHandledFailures(worker)
    optimize_logger = logging.getLogger("optuna.study._optimize")
    optimize_logger.addFilter(log_filter)
    try:
        worker.run()
    finally:
        optimize_logger.removeFilter(log_filter)

    result = best_result(study, worker, shown_storage)
    count = counts(study)
    print(f"\nstudy {study_name!r}: {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
          f"{count[TrialState.FAIL]} failed")
    if result is None:
        print("no trial completed, so there are no best parameters yet")
        return None
    output = Path(args.output) if args.output else study_dir / "best.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f"{output.name}.{os.getpid()}.tmp")  # workers may write at the same time
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, output)
    print(f"best: trial {result['trial']}, {args.objective} {result['value']:.2f}\n"
          f"  {result['command']}\nwritten to {output}")
    return result


def name_of_study(args: Args, script: Script, defaults) -> str:
    """--study-name, or `{script}-{env_id}`."""
    env_id = getattr(defaults, "env_id", None)
    return args.study_name or "-".join(part for part in (script.path.stem, env_id) if part)


def study_folder(args: Args, study_name: str) -> Path:
    """Where a study keeps its trials' runs and best.json: `{runs_dir}/{study}`."""
    return Path(args.runs_dir) / re.sub(r"[^0-9A-Za-z_.-]", "_", study_name)


def worker_argv(args: Args) -> list[str]:
    """The command line of one worker of --cluster slurm: this one's flags that are not their defaults, less the
    cluster's."""
    argv = []
    for option in dataclasses.fields(Args):
        value = getattr(args, option.name)
        if option.name in ("cluster", "workers", "slurm") or value == option.default:
            continue
        flag = "--" + option.name.replace("_", "-")
        argv += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return argv


def submit_workers(args: Args, fixed: list[str]) -> int:
    """--cluster slurm: check the settings, submit --workers jobs that each run this tuner as a worker of the study,
    wait for them, and return 0 if they all ended well."""
    check_args(args)
    storage_settings(args.storage)
    script = load_tuned_script(args.script)
    check_fixed_flags(fixed, script)
    build_space(script, args.space, fixed)
    study_name = name_of_study(args, script, script.parse(fixed)[0])
    check_writable(Path(args.runs_dir), "--runs-dir")
    if missing := cluster.missing_programs():  # looked for once every setting is known to be valid
        raise TuneError("; ".join(missing))
    best_file = (Path(args.output) if args.output else study_folder(args, study_name) / "best.json").resolve()
    folder = Path(args.runs_dir).resolve() / "_workers"
    folder.mkdir(parents=True, exist_ok=True)
    executor = cluster.executor(args.slurm, folder / "_slurm", "tune", args.seeds_per_trial * args.threads)
    argv = [*worker_argv(args), "--", *fixed]
    stem = f"worker_{time.strftime('%Y%m%d-%H%M%S')}"
    logs = [[folder / f"{stem}_{number}.{name}.log" for name in ("stdout", "stderr")] for number in range(args.workers)]
    with executor.batch():  # one Slurm job array of --workers tasks
        jobs = [cluster.SlurmJob(executor, Path(__file__).resolve(), argv, *pair, args.threads) for pair in logs]
    for number, (job, pair) in enumerate(zip(jobs, logs)):
        print(f"worker {number}: Slurm job {job.id}, output in {pair[0]}", flush=True)
    failed = 0
    try:
        for job, code, how in cluster.as_ended(jobs):
            failed += code != 0
            print(f"Slurm job {job.id} ended: " + (f"exit status {code}" if code is not None else how), flush=True)
    except KeyboardInterrupt:
        for job in jobs:
            job.stop()
        print("interrupted: the workers' jobs are cancelled (their trials are marked failed); run the same command "
              "again to go on with the study", file=sys.stderr)
        return 130
    print(f"{args.workers - failed} of {args.workers} workers ended well")
    best = json.loads(best_file.read_text()) if best_file.is_file() else None
    if best is not None:
        print(f"best: trial {best['trial']}, {args.objective} {best['value']:.2f}\n  {best['command']}\n"
              f"in {best_file}")
    return 1 if failed else 0


def main(argv: Optional[list[str]] = None) -> Optional[dict]:
    """Parse `tune.py [FLAGS] [-- SCRIPT FLAGS]` and tune (or, with --cluster slurm, submit workers that do)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    tune_argv, fixed = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = tyro.cli(Args, args=tune_argv, description=help_text())
    if args.cluster == "slurm":
        sys.exit(submit_workers(args, fixed))
    return tune(args, fixed)


def help_text() -> str:
    """--help: the module docstring's first paragraph, the examples, and the default search spaces."""
    paragraphs = __doc__.split("\n\n")
    summary, examples = paragraphs[0], next(text for text in paragraphs if text.startswith("    python"))
    spaces = "\n".join(f"    {script}\n" + "\n".join(f"        {flag}={spec}" for flag, spec in space.items())
                       for script, space in SEARCH_SPACES.items())
    return (f"{summary}\n\n{examples}\n\nFlags after `--` go to every trial unchanged (and are not searched). "
            f"Default search spaces, each entry replaceable with --space NAME=SPEC:\n\n{spaces}")


if __name__ == "__main__":
    def interrupt(signum, frame):  # `kill` ends a worker as Ctrl-C does: its trial is marked failed, its run stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        main()
    except ScriptError as error:
        sys.exit(f"error: {without_passwords(str(error))}")  # whatever the message quotes, never a password
    except KeyboardInterrupt:
        sys.exit("interrupted: run the same command again to resume the study (the trial this worker was running, "
                 "if any, is marked failed and does not count)")
    except BrokenPipeError:  # `tune.py --help | head`: the reader has left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
