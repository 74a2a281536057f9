"""tune.py: studies of real (tiny) dqn.py runs on CartPole in SQLite and PostgreSQL, several workers, pruning, resuming,
and the one-line errors for bad input.

The PostgreSQL test uses TUNE_TEST_POSTGRES_URL (.ci/run starts a server on 127.0.0.1 and sets it); without it, the
test starts its own throwaway server from the system's initdb/pg_ctl, and without those it is skipped (it fails under
DQN_TESTS_REQUIRE_SERVICES=1, which .ci/run sets).
"""

import csv
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import pytest
import tyro
from optuna.trial import TrialState

import tune  # noqa: E402  (benchmarks/ is on sys.path, by conftest)
from conftest import ROOT, SCRIPTS, STUB_SCRIPT, service_missing  # noqa: E402
from script_runs import MetricsFollower, ScriptError  # noqa: E402

TUNER = ROOT / "benchmarks" / "tune.py"

# a few thousand CartPole steps per trial: seconds each, most of it Python start-up
TINY_RUN = ["--total-timesteps", "1000", "--learning-starts", "300", "--eval-frequency", "500", "--eval-episodes", "2"]
LONG_RUN = ["--total-timesteps", "100000", *TINY_RUN[2:]]


def tune_argv(tmp_path: Path, storage: str, *flags: str, run=TINY_RUN) -> list[str]:
    return ["--script", "dqn.py", "--storage", storage, "--runs-dir", str(tmp_path / "runs"), *flags, "--", *run]


def load(storage: str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=storage)


def max_logged_step(run_dir: Path) -> int:
    """The last step in the run's metrics.csv; 0 when it holds only the header (stopped before its first episode)."""
    with open(run_dir / "metrics.csv", newline="") as file:
        return max((int(row["global_step"]) for row in csv.DictReader(file)), default=0)


def test_tiny_study_completes_with_sqlite_and_writes_best_parameters(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    result = tune.main(tune_argv(tmp_path, storage, "--n-trials", "2", "--study-name", "tiny"))

    study = load(storage, "tiny")
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    best = max(study.trials, key=lambda trial: trial.value)
    assert result["value"] == best.value and result["trial"] == best.number and result["params"] == best.params
    # every evaluation of every run was reported to Optuna as it was written
    assert all(sorted(trial.intermediate_values) == [500, 1000] for trial in study.trials)
    # the objective is the run's final evaluation mean
    summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
    assert summary["eval_mean"] == best.value and summary["global_step"] == 1000
    assert json.loads((tmp_path / "runs" / "tiny" / "best.json").read_text()) == result
    # the command line reproduces the best trial: dqn.py's own parser reads back the best parameters
    import dqn

    command = result["command"].split()
    assert command[:2] == ["python", "dqn.py"]
    args, run_args = dqn.parse_command_line(command[2:])
    assert args.learning_rate == best.params["learning-rate"] and args.gamma == best.params["gamma"]
    assert args.batch_size == best.params["batch-size"]
    assert args.hidden_sizes == tuple(int(size) for size in best.params["hidden-sizes"].split())
    assert args.total_timesteps == 1000 and run_args.seed == 1


def test_interrupted_study_resumes_and_the_pruner_stops_a_hopeless_trial_and_its_run(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    argv = tune_argv(tmp_path, storage, "--n-trials", "1", "--study-name", "resume", run=LONG_RUN)
    worker = subprocess.Popen([sys.executable, str(TUNER), *argv], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not glob.glob(str(tmp_path / "runs" / "resume" / "trial_0000" / "*" / "metrics.csv")):
        assert time.time() < deadline and worker.poll() is None, worker.communicate()
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)  # as `kill` or a batch scheduler ends a job
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode != 0 and "run the same command again to resume" in stderr
    [trial] = load(storage, "resume").trials
    assert trial.state == TrialState.FAIL  # so it does not count towards --n-trials
    assert_stopped(tmp_path / "runs" / "resume" / "trial_0000")

    # The same command resumes the study. Its pruner ends the new trial at the first evaluation (step 500 of
    # 100,000), deterministically: no CartPole return reaches 1000.
    started = time.perf_counter()
    result = tune.main(tune_argv(tmp_path, storage, "--n-trials", "1", "--study-name", "resume", "--pruner",
                                 "threshold", "--prune-below", "1000", "--warmup-fraction", "0", run=LONG_RUN))
    assert result is None  # nothing completed, so there are no best parameters
    assert time.perf_counter() - started < 90
    failed, pruned = load(storage, "resume").trials
    assert failed.state == TrialState.FAIL and pruned.state == TrialState.PRUNED
    assert pruned.user_attrs["pruned_at_step"] == 500 and list(pruned.intermediate_values) == [500]
    assert_stopped(tmp_path / "runs" / "resume" / "trial_0001")


def assert_stopped(trial_dir: Path) -> None:
    """The trial's run was stopped early: interrupted (by the SIGTERM it was sent), far from its 100,000 steps, and
    not writing any more."""
    [metrics] = trial_dir.glob("*/metrics.csv")
    summary = metrics.parent / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] == "interrupted"
    assert max_logged_step(metrics.parent) < 100_000
    size = metrics.stat().st_size
    time.sleep(1.0)
    assert metrics.stat().st_size == size


# The many-workers tests use conftest's STUB_SCRIPT, whose trials take a second (three evaluations 0.3 s apart)
# instead of the several that importing torch and training take, so six trials race for the budget, not three.


def test_a_trial_of_several_seeds_runs_each_and_reports_and_scores_their_aggregate(tmp_path, monkeypatch):
    """Three seeds per trial of the stub, whose seed s ends 10 x s higher: every report and the objective are the
    mean over the seeds (the pruner sees the running aggregate), and each seed is a run of its own."""
    (tmp_path / "stub_dqn.py").write_text(STUB_SCRIPT)
    monkeypatch.setenv("STUB_POINTS_PER_SEED", "10")
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    result = tune.main(["--script", str(tmp_path / "stub_dqn.py"), "--storage", storage, "--runs-dir",
                        str(tmp_path / "runs"), "--n-trials", "2", "--study-name", "seeds", "--seed", "4",
                        "--seeds-per-trial", "3"])
    for trial in load(storage, "seeds").trials:
        seed_dirs = sorted((tmp_path / "runs" / "seeds" / f"trial_{trial.number:04d}").glob("seed_*"))
        assert [path.name for path in seed_dirs] == ["seed_4", "seed_5", "seed_6"]
        summaries = [json.loads(next(path.glob("*/summary.json")).read_text()) for path in seed_dirs]
        assert [summary["seed"] for summary in summaries] == [4, 5, 6]
        finals = [summary["eval_mean"] for summary in summaries]
        assert finals[1] - finals[0] == pytest.approx(10.0) and finals[2] - finals[1] == pytest.approx(10.0)
        assert trial.value == pytest.approx(sum(finals) / 3)
        assert trial.user_attrs["seed_values"] == {str(seed): final for seed, final in zip([4, 5, 6], finals)}
        # the evaluation at each step, averaged over the seeds: the stub's runs climb linearly to their final value
        assert trial.intermediate_values == pytest.approx({100: trial.value / 3, 200: 2 * trial.value / 3,
                                                           300: trial.value})
    assert result["seeds"] == [4, 5, 6] and result["aggregate"] == "mean"


def test_an_enqueued_first_trial_runs_with_its_values_and_the_rest_sampled(tmp_path):
    (tmp_path / "stub_dqn.py").write_text(STUB_SCRIPT)
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    tune.main(["--script", str(tmp_path / "stub_dqn.py"), "--storage", storage, "--runs-dir", str(tmp_path / "runs"),
               "--n-trials", "2", "--study-name", "first", "--enqueue", "learning-rate=0.001", "hidden-sizes=64 64"])
    first, second = load(storage, "first").trials
    assert first.params["learning-rate"] == 0.001 and first.params["hidden-sizes"] == "64 64"
    assert set(first.params) == set(second.params) and second.params["learning-rate"] != 0.001
    argv = json.loads(next((tmp_path / "runs" / "first" / "trial_0000").glob("*/argv.json")).read_text())
    assert argv[argv.index("--learning-rate") + 1] == "0.001" and argv[argv.index("--hidden-sizes") + 1:][:2] == [
        "64", "64"]


def test_the_interquartile_mean_of_seeds_drops_the_best_and_the_worst_quarter():
    assert tune.combine([1.0, 2.0, 3.0, 100.0], "iqm") == 2.5
    assert tune.combine([1.0, 2.0, 3.0, 100.0], "mean") == 26.5
    assert tune.combine([1.0, 2.0, 6.0], "iqm") == 3.0  # fewer than four seeds: nothing to cut


def test_the_min_aggregate_scores_a_trial_by_its_worst_seed():
    assert tune.combine([210.0, 95.5, 260.0], "min") == 95.5


def run_two_workers(tmp_path: Path, storage: str, n_trials: int) -> str:
    """Start two tune.py processes on one study at once; check that together they finish exactly `n_trials` trials."""
    (tmp_path / "stub_dqn.py").write_text(STUB_SCRIPT)
    study_name = f"two-workers-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, str(TUNER), "--script", str(tmp_path / "stub_dqn.py"), "--storage", storage,
            "--runs-dir", str(tmp_path / "runs"), "--n-trials", str(n_trials), "--study-name", study_name]
    workers = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=os.environ | {"STUB_EVAL_SECONDS": "0.3"}) for _ in range(2)]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    trials = load(storage, study_name).trials
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials
    assert not [trial for trial in trials if trial.state in (TrialState.RUNNING, TrialState.WAITING)]
    # a trial given up as over budget is marked so and never ran; any other failure is a bug
    assert all("skipped" in trial.user_attrs for trial in trials if trial.state == TrialState.FAIL)
    numbers = [trial.number for trial in trials]
    assert len(set(numbers)) == len(numbers)
    # one run per finished trial, each started by exactly one of the workers, and both workers did some
    started = [[int(line.split()[1]) for line in output.splitlines()
                if line.startswith("trial ") and " started: " in line] for output in outputs]
    assert sorted(started[0] + started[1]) == sorted(trial.number for trial in finished)
    assert started[0] and started[1], outputs
    run_dirs = sorted(path.name for path in (tmp_path / "runs" / study_name).iterdir() if path.is_dir())
    assert run_dirs == [f"trial_{trial.number:04d}" for trial in finished]
    # both end by printing the same best trial
    best = max((trial for trial in finished if trial.state == TrialState.COMPLETE), key=lambda trial: trial.value)
    assert all(f"best: trial {best.number}," in output for output in outputs)
    return study_name


def test_two_workers_on_one_sqlite_study_finish_exactly_the_requested_trials(tmp_path):
    run_two_workers(tmp_path, f"sqlite:///{tmp_path / 'tune.db'}", n_trials=6)


def test_two_workers_on_one_postgresql_study_finish_exactly_the_requested_trials(tmp_path, postgres_url):
    study_name = run_two_workers(tmp_path, postgres_url, n_trials=6)
    optuna.delete_study(study_name=study_name, storage=postgres_url)


def test_a_trial_asked_beyond_the_budget_is_given_up_without_running(tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    args = tyro.cli(tune.Args, args=["--script", "dqn.py", "--n-trials", "2", "--storage", storage])
    script = tune.load_tuned_script("dqn.py")
    space, _ = tune.build_space(script, (), [])
    study = optuna.create_study(storage=storage, study_name="budget", direction="maximize")
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=1.0))
    running_elsewhere = study.ask()  # another worker's trial: it counts, it may still finish
    worker = tune.Worker(args, script, space, [], study, tmp_path / "runs", 1500)
    trial = study.ask()
    with pytest.raises(tune.BudgetReached):
        worker.objective(trial)
    assert worker.last_outcome == "skipped" and "skipped" in study.trials[trial.number].user_attrs
    assert not (tmp_path / "runs").exists()  # nothing was run
    assert running_elsewhere.number < trial.number


def test_search_space_overrides_fixed_flags_and_scripts_without_widths(tmp_path):
    script = tune.load_tuned_script("dqn.py")
    space, notes = tune.build_space(script, ("learning_rate=log:1e-5:1e-3", "tau=uniform:0.1:1"),
                                    ["--gamma", "0.9", "--env-id", "Acrobot-v1"])
    assert space["learning-rate"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert tune.spec(space["learning-rate"]) == "log:1e-05:0.001" and tune.spec(space["tau"]) == "uniform:0.1:1"
    assert "gamma" not in space and any("--gamma" in note for note in notes)
    assert tune.flag_argv("hidden-sizes", "64 64", tuple) == ["--hidden-sizes", "64", "64"]
    assert tune.flag_argv("track", False, bool) == ["--no-track"]
    # an Atari-like script without --hidden-sizes: the width is not searched
    fake = tmp_path / "dqn_atari.py"
    fake.write_text("from dataclasses import dataclass\n\n@dataclass\nclass Args:\n"
                    "    total_timesteps: int = 10\n    learning_rate: float = 1e-4\n"
                    "    gamma: float = 0.99\n    batch_size: int = 32\n    target_network_frequency: int = 1000\n"
                    "    exploration_fraction: float = 0.1\n\n@dataclass\nclass RunArgs:\n    seed: int = 1\n"
                    "    runs_dir: str = 'runs'\n\n"
                    "parse_command_line = general_problems = check_args = None\n")
    space, notes = tune.build_space(tune.load_tuned_script(str(fake)), (), [])
    assert set(space) == {"learning-rate", "gamma", "batch-size", "target-network-frequency", "exploration-fraction"}
    with pytest.raises(tune.TuneError, match="dqn_atari.py has no flag --hidden-sizes"):
        tune.build_space(tune.load_tuned_script(str(fake)), ("hidden-sizes=choice:64 64",), [])


def test_the_search_spaces_are_those_of_the_repository_s_scripts():
    # each tuned script is there (a missing one fails the test below, not skips it), and each script has its own space
    assert sorted(tune.SEARCH_SPACES) == sorted(SCRIPTS) and all((ROOT / name).is_file() for name in SCRIPTS)


@pytest.mark.parametrize("name", list(tune.SEARCH_SPACES))
def test_each_script_loads_with_a_search_space_around_its_own_defaults(name):
    script = tune.load_tuned_script(name)
    space, notes = tune.build_space(script, (), [])
    assert not notes, notes  # every flag of the script's space exists in the script
    defaults, _ = script.parse([])
    for flag, distribution in space.items():
        default = getattr(defaults, flag.replace("-", "_"))
        if isinstance(default, tuple):
            default = sum(default)  # compare widths by their total
            low, high = (min(sum(map(int, c.split())) for c in distribution.choices),
                         max(sum(map(int, c.split())) for c in distribution.choices))
        elif isinstance(distribution, optuna.distributions.CategoricalDistribution):
            low, high = min(distribution.choices), max(distribution.choices)
        else:
            low, high = distribution.low, distribution.high
        assert low <= default <= high, f"{name} --{flag} default {default} is outside {tune.spec(distribution)}"
    # a trial's flags pass the script's own parser and checks
    trial = optuna.trial.FixedTrial({flag: getattr(d, "choices", [getattr(d, "low", None)])[0]
                                     for flag, d in space.items()})
    params = {flag: tune.suggest(trial, flag, d) for flag, d in space.items()}
    script.check([*tune.params_argv(params, script), "--seed", "3", "--runs-dir", "runs"])


def test_metrics_follower_reads_only_complete_rows_and_starts_over_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "metrics.csv"
    follower = MetricsFollower(path)
    assert follower.new_rows() == [] and follower.last_step is None  # not written yet
    with open(path, "w") as file:
        file.write("global_step,wall_time,name,value\n500,1.0,charts/SPS,900\n500,1.0,eval/episodic_return,12.5\n"
                   "1000,2.0,eval/episodic_return,3")
        file.flush()
        assert follower.new_rows() == [(500, "charts/SPS", 900.0), (500, "eval/episodic_return", 12.5)]
        file.write("0.5\n")  # the last row was still being written
    assert follower.new_rows() == [(1000, "eval/episodic_return", 30.5)] and follower.last_step == 1000
    assert follower.new_rows() == []
    path.write_text("global_step,wall_time,name,value\n400,1.0,charts/SPS,800\n")  # a resumed run drops its tail
    assert follower.new_rows() == [(400, "charts/SPS", 800.0)] and follower.last_step == 400


@pytest.mark.parametrize("flags, message", [
    (["--script", "nope.py"], "unknown script 'nope.py'"),
    (["--script", "dqn.py", "--storage", "not a url"], "is not a database URL"),
    (["--script", "dqn.py", "--storage", "redis://127.0.0.1/0"], "unsupported database 'redis'"),
    (["--script", "dqn.py", "--space", "momentum=log:0.1:1"], "unknown parameter 'momentum' in --space"),
    (["--script", "dqn.py", "--space", "gamma=between:0.9:1"], "SPEC must be log:LOW:HIGH"),
    (["--script", "dqn.py", "--space", "batch-size=choice:32,big"], "'big' is not an int"),
    (["--script", "dqn.py", "--", "--learning-rat", "0.1"], "unknown flag --learning-rat"),
    (["--script", "dqn.py", "--", "--gamma", "high"], "could not convert string to float"),
    (["--script", "dqn.py", "--pruner", "threshold"], "--pruner threshold needs --prune-below"),
    (["--script", "dqn.py", "--enqueue", "momentum=0.9"], "momentum is not a searched flag"),
    (["--script", "dqn.py", "--enqueue", "batch-size=48"], "--enqueue batch-size=48: not one of choice:32,64,128,256"),
    (["--script", "dqn.py", "--enqueue", "tau=0.5"], "--enqueue tau=0.5: outside log:0.001:0.05"),
])
def test_bad_input_is_reported_in_one_line(tmp_path, flags, message):
    storage = [] if "--storage" in flags else ["--storage", f"sqlite:///{tmp_path / 'x.db'}"]
    with pytest.raises(ScriptError, match=re.escape(message)) as error:  # TuneError, or the script's parser's
        tune.main(storage + flags)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be >= 1 (got 0)"),
    (["--slurm.cpus", "0"], "--slurm.cpus must be >= 1 (got 0)"),
    (["--space", "gamma=between:0.9:1"], "SPEC must be log:LOW:HIGH"),
    (["--", "--learning-rat", "0.1"], "unknown flag --learning-rat"),
    ([], "--cluster slurm needs Slurm's sbatch on the PATH (not found)")])
def test_cluster_settings_are_checked_before_slurm_is_looked_for(tmp_path, monkeypatch, flags, message):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without Slurm's programs
    argv = ["--script", "dqn.py", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--runs-dir", str(tmp_path / "runs"),
            "--cluster", "slurm"]
    tuner_flags, script_flags = (flags[:flags.index("--")], flags[flags.index("--"):]) if "--" in flags else (flags, [])
    with pytest.raises(ScriptError, match=re.escape(message)):
        tune.main(argv + tuner_flags + script_flags)
    assert not (tmp_path / "runs").exists()


def test_command_line_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(TUNER), "--script", "nope.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: unknown script 'nope.py'")


# ----------------------------------------------------------------------------------------------- PostgreSQL server


def postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("TUNE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    binaries = postgres_binaries()
    as_root = os.geteuid() == 0
    if binaries is None or (as_root and shutil.which("runuser") is None):
        reason = ("no PostgreSQL server: set TUNE_TEST_POSTGRES_URL (as .ci/run does) or install PostgreSQL "
                  "(apt-get install postgresql) so that the test can start its own")
        service_missing(reason)
    # a throwaway server on 127.0.0.1 only; as root it runs as the postgres user, which initdb requires
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="tune-test-postgres-"))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run([*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
                    "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)


def test_help_into_a_pipe_whose_reader_has_left_ends_without_a_traceback():
    # `tune.py --help | head -1`: head leaves before the long help is written; here the reader is gone from the start
    read_end, write_end = os.pipe()
    os.close(read_end)
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "tune.py"), "--help"], stdout=write_end,
                               stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    stderr = process.communicate(timeout=60)[1]
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert process.returncode == 1


def test_the_search_spaces_table_of_the_docs_is_the_tuners_own():
    text = (ROOT / "docs" / "tuning.md").read_text()
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.strip().startswith("| ")]
    header = next(row for row in rows if row[0] == "flag")
    assert header[1:] == list(tune.SEARCH_SPACES)
    table = {script: {} for script in header[1:]}
    for row in rows[rows.index(header) + 2:]:  # after the header's --- row
        if not row[0].startswith("`--"):
            break
        for script, cell in zip(header[1:], row[1:]):
            if cell:
                table[script][row[0].strip("`").removeprefix("--")] = cell.strip("`")
    assert table == tune.SEARCH_SPACES
