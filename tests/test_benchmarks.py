"""Tests of the benchmark tooling: benchmarks/run.py (runner) and benchmarks/plot.py (curves and table).

The runner is run for real on dqn.py with a tiny budget once per module; the other runner tests use a stand-in
script that follows the scripts' interface in a few milliseconds, so that failures, resumes and restarts are cheap."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STUB_SCRIPT

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNNER = REPO_ROOT / "benchmarks" / "run.py"
PLOTTER = REPO_ROOT / "benchmarks" / "plot.py"
TINY_DQN = ["--total-timesteps", "3000", "--learning-starts", "500", "--eval-frequency", "1500", "--eval-episodes", "2"]

def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run_module = load_module("benchmark_runner", RUNNER)
plot_module = load_module("benchmark_plotter", PLOTTER)


def run_runner(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def run_dirs(runs_dir: Path) -> set[str]:
    return {path.name for path in runs_dir.iterdir() if path.is_dir() and not path.name.startswith("_")}


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    """dqn.py on CartPole-v1, seeds 1 and 2, 3000 steps each, two at a time."""
    runs_dir = tmp_path_factory.mktemp("benchmark") / "runs"
    arguments = ["--scripts", "dqn.py", "--env-ids", "CartPole-v1", "--seeds", "1", "2", "--workers", "2",
                 "--runs-dir", str(runs_dir), "--", *TINY_DQN]
    result = run_runner(*arguments)
    return runs_dir, arguments, result


@pytest.fixture
def fake_script(tmp_path) -> Path:
    path = tmp_path / "fake.py"
    path.write_text(STUB_SCRIPT)
    return path


def test_runner_makes_one_finished_run_per_seed_with_the_extra_args(tiny_benchmark):
    runs_dir, _, result = tiny_benchmark
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = [json.loads((runs_dir / name / "summary.json").read_text()) for name in run_dirs(runs_dir)]
    assert sorted(summary["seed"] for summary in summaries) == [1, 2]
    assert all(summary["status"] == "finished" and summary["global_step"] == 3000 for summary in summaries)
    for name in run_dirs(runs_dir):
        args = json.loads((runs_dir / name / "args.json").read_text())
        assert (args["env_id"], args["exp_name"], args["total_timesteps"], args["eval_episodes"]) == \
            ("CartPole-v1", "dqn", 3000, 2)
    for seed in [1, 2]:
        stdout_log = runs_dir / "_logs" / f"CartPole-v1__dqn__{seed}.stdout.log"
        assert "final evaluation" in stdout_log.read_text()
        assert (runs_dir / "_logs" / f"CartPole-v1__dqn__{seed}.stderr.log").is_file()
    assert "2 run(s) finished, 0 failed" in result.stdout


def test_runner_skips_finished_runs_when_run_again(tiny_benchmark):
    runs_dir, arguments, _ = tiny_benchmark
    before = run_dirs(runs_dir)
    result = run_runner(*arguments)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 finished already, 0 to run" in result.stdout
    assert run_dirs(runs_dir) == before


def test_final_eval_evaluates_each_runs_last_checkpoint_once_and_tabulates_the_seeds(tiny_benchmark):
    runs_dir, _, _ = tiny_benchmark
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "final_eval.py"), "--script", "dqn.py",
                             "--runs-dir", str(runs_dir), "--episodes", "3", "--threshold", "475"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    saved = {json.loads(path.read_text())["seed"]: json.loads(path.read_text())
             for path in runs_dir.glob("*/final_eval_3.json")}
    assert sorted(saved) == [1, 2] and all(len(run["returns"]) == 3 and run["global_step"] == 3000
                                           for run in saved.values())
    means = [np.mean(saved[seed]["returns"]) for seed in (1, 2)]
    for seed, mean in zip((1, 2), means):
        assert re.search(rf"^\| {seed} \| {mean:.1f} \| .* \| 3 \| 3,000 \|", result.stdout, re.M)
    # two seeds: the IQM is their mean
    assert f"2 seeds: IQM {np.mean(means):.1f} [" in result.stdout
    assert f"mean {np.mean(means):.1f} ± {np.std(means):.1f}, worst seed {min(means):.1f}" in result.stdout
    stamps = {path: path.stat().st_mtime_ns for path in runs_dir.glob("*/final_eval_3.json")}
    again = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "final_eval.py"), "--script", "dqn.py",
                            "--runs-dir", str(runs_dir), "--episodes", "3"], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "over 3 episodes" in again.stdout
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps  # kept, not evaluated again


def test_final_eval_compares_variants_with_the_first_exp_name_seed_by_seed(tmp_path, capsys):
    """Runs whose final evaluations are saved already (nothing is evaluated): the seed-by-seed table, and the
    probability of improvement over the baseline counted by hand over the pairs of seeds."""
    saved = {"dqn": {1: [10.0, 20.0], 2: [30.0]}, "dqn-variant": {1: [20.0], 2: [40.0, 40.0], 3: [0.0]}}
    for exp_name, seeds in saved.items():
        for seed, returns in seeds.items():
            run_dir = tmp_path / f"CartPole-v1__{exp_name}__{seed}__1"
            run_dir.mkdir()
            (run_dir / "checkpoint.pt").write_bytes(b"")
            (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "seed": seed, "global_step": 9}))
            (run_dir / "final_eval_3.json").write_text(json.dumps(
                {"seed": seed, "returns": returns, "global_step": 9, "wall_time_s": 60.0 * seed}))
    final_eval = load_module("final_eval", REPO_ROOT / "benchmarks" / "final_eval.py")  # in this process: no imports
    argv = ["--script", "dqn.py", "--runs-dir", str(tmp_path), "--episodes", "3", "--threshold", "25", "--exp-name",
            "dqn", "dqn-variant"]
    assert final_eval.main(argv) == 0
    result = capsys.readouterr()
    assert "| 1 | 15.0 | 20.0 |\n| 2 | 30.0 | 40.0 |\n| 3 |  | 0.0 |" in result.out
    assert re.search(r"^\| dqn \| 2 \| 22\.5 \[.*\] \| 22\.5 ± 7\.5 \| 15\.0 \| 1 \|  \| 1\.5 min \|$",
                     result.out, re.M)
    # the variant's seeds 20, 40, 0 against the baseline's 15, 30: 20 > 15, 40 > 15, 40 > 30 of 6 pairs
    assert re.search(r"^\| dqn-variant \| 3 \| .* \| 20\.0 ± 16\.3 \| 0\.0 \| 1 \| 0\.50 \[\d\.\d\d, "
                     r"\d\.\d\d\] \| 2\.0 min \|$", result.out, re.M)
    with pytest.raises(SystemExit) as exited:
        final_eval.main(argv + ["dqn-none"])
    assert exited.value.code == 2 and "no finished run of dqn-none" in capsys.readouterr().err


def test_plotter_writes_curves_and_a_table_matching_the_summaries(tiny_benchmark, tmp_path):
    runs_dir, _, _ = tiny_benchmark
    result = subprocess.run([sys.executable, str(PLOTTER), "--runs-dir", str(runs_dir), "--out-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    png = tmp_path / "benchmark.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "<svg" in (tmp_path / "benchmark.svg").read_text()[:2000]
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown in result.stdout  # printed as well as written
    row = next(line for line in markdown.splitlines() if line.startswith("| dqn.py | CartPole-v1 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    summaries = sorted((json.loads((runs_dir / name / "summary.json").read_text()) for name in run_dirs(runs_dir)),
                       key=lambda summary: summary["seed"])
    means = [summary["eval_mean"] for summary in summaries]
    assert cells[2] == "2"
    iqm, low, high = map(float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cells[3]).groups())
    assert iqm == pytest.approx(np.mean(means), abs=0.006)  # two seeds: the IQM is their mean
    assert min(means) - 0.006 <= low <= iqm <= high <= max(means) + 0.006
    assert cells[4] == f"{np.mean(means):.2f} ± {np.std(means):.2f}"
    assert cells[5] == ", ".join(f"s{summary['seed']}: {summary['eval_mean']:.2f}" for summary in summaries)
    assert cells[6] == "3,000"
    assert cells[7] == plot_module.format_seconds(np.mean([summary["wall_time_s"] for summary in summaries]))
    assert cells[8] == "never (s1: never, s2: never)"  # 3,000 steps are too few to balance a pole for 475 steps
    assert "475.00 solved threshold" in cells[9]


def test_shards_partition_the_combinations_whatever_the_order_given(fake_script):
    scripts, envs, seeds = [str(fake_script), "dqn.py"], ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"], [1, 2, 3]
    everything = run_module.build_combinations(scripts, envs, seeds, None)
    assert len(everything) == 18
    for count in [1, 2, 4, 5, 18, 25]:
        shards = [run_module.shard(everything, index, count) for index in range(1, count + 1)]
        flat = [combination for part in shards for combination in part]
        assert len(flat) == len(set(flat)) == 18 and set(flat) == set(everything)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        shuffled = run_module.build_combinations(scripts[::-1], envs[::-1], seeds[::-1], None)
        assert [run_module.shard(shuffled, index, count) for index in range(1, count + 1)] == shards
    # the seeds of one (script, env) spread over the shards rather than piling into one, so shards cost alike
    for index in [1, 2, 3]:
        part = run_module.shard(everything, index, 3)
        pairs = sorted((c.script_name, c.env_id) for c in part)
        assert pairs == sorted({(c.script_name, c.env_id) for c in everything})


def test_shard_option_selects_a_disjoint_part_on_the_command_line(fake_script, tmp_path):
    listed = []
    for index in [1, 2]:
        result = run_runner("--scripts", str(fake_script), "--env-ids", "A-v0", "B-v0", "--seeds", "1", "2", "3",
                            "--runs-dir", str(tmp_path / "runs"), "--shard", f"{index}/2", "--dry-run")
        assert result.returncode == 0, result.stderr
        listed.append({line.split(None, 1)[1].strip() for line in result.stdout.splitlines()
                       if line.startswith("run ")})
    assert listed[0] and listed[1] and not listed[0] & listed[1]
    assert len(listed[0] | listed[1]) == 6


@pytest.mark.parametrize("shard_text", ["0/2", "3/2", "1-2", "a/b", "2"])
def test_malformed_shard_is_a_clear_usage_error(shard_text, fake_script, tmp_path):
    result = run_runner("--scripts", str(fake_script), "--env-ids", "A-v0", "--seeds", "1", "--shard", shard_text,
                        "--runs-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--shard must be I/N with 1 <= I <= N" in result.stderr and repr(shard_text) in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--slurm.cpus", "0"], "--slurm.cpus must be >= 1 (got 0)"),
    (["--slurm.time-min", "0"], "--slurm.time-min must be >= 1 (got 0)"),
    (["--slurm.sbatch", "account"], "--slurm.sbatch takes KEY=VALUE"),
    (["--max-resumes", "-1"], "--max-resumes must be >= 0 (got -1)"),
    (["--seeds", "x"], "Error parsing --seeds"),
    (["--", "--learning-rat", "0.1"], "--learning-rat"),
    ([], "--cluster slurm needs Slurm's sbatch on the PATH (not found)")])
def test_bad_cluster_settings_are_one_line_errors_before_anything_is_submitted(flags, message, fake_script, tmp_path):
    # on a machine without Slurm (PATH holds none of its programs): each bad setting is named as such; Slurm's
    # absence only once every setting is valid
    result = run_runner("--cluster", "slurm", "--scripts", f"{fake_script}:A-v0", "--seeds", "1", "--runs-dir",
                        str(tmp_path / "runs"), *flags, env={"PATH": str(tmp_path)})
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "runs").exists()
    assert len(result.stderr.strip().splitlines()) == 1  # the error, in one line


def test_missing_script_is_a_clear_usage_error(tmp_path):
    result = run_runner("--scripts", "dqn.py", "no_such_script.py", "--env-ids", "A-v0", "--seeds", "1",
                        "--runs-dir", str(tmp_path))
    assert result.returncode == 2
    assert "script not found: no_such_script.py" in result.stderr
    assert not (tmp_path / "_logs").exists()


def test_failed_run_is_reported_without_stopping_the_others(fake_script, tmp_path):
    runs_dir = tmp_path / "runs"
    result = run_runner("--scripts", f"{fake_script}:A-v0", "--seeds", "1", "2", "3", "--workers", "2",
                        "--runs-dir", str(runs_dir), env={"STUB_FAIL_SEED": "2"})
    assert result.returncode == 1
    assert re.search(r"FAILED .*fake A-v0 seed 2: exit status 1; see .*A-v0__fake__2\.stderr\.log: boom", result.stdout)
    assert "2 run(s) finished, 1 failed" in result.stdout
    seeds = sorted(json.loads((runs_dir / name / "summary.json").read_text())["seed"] for name in run_dirs(runs_dir))
    assert seeds == [1, 3]
    # once it works, only the failed seed runs again
    result = run_runner("--scripts", f"{fake_script}:A-v0", "--seeds", "1", "2", "3", "--runs-dir", str(runs_dir))
    assert result.returncode == 0 and "2 finished already, 1 to run" in result.stdout


def test_unfinished_runs_are_resumed_from_a_checkpoint_or_else_restarted(fake_script, tmp_path):
    runs_dir = tmp_path / "runs"
    interrupted = runs_dir / "A-v0__fake__1__1000"  # Ctrl-C: interrupted summary and a checkpoint
    crashed = runs_dir / "A-v0__fake__2__1000"  # killed before its first checkpoint: nothing but args.json
    for path, seed in [(interrupted, 1), (crashed, 2)]:
        path.mkdir(parents=True)
        (path / "args.json").write_text(json.dumps({"env_id": "A-v0", "exp_name": "fake", "seed": seed}))
    (interrupted / "checkpoint.pt").write_bytes(b"")
    (interrupted / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    result = run_runner("--scripts", f"{fake_script}:A-v0", "--seeds", "1", "2", "--runs-dir", str(runs_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 to resume, 1 to restart" in result.stdout
    argv = json.loads((interrupted / "argv.json").read_text())
    assert argv[argv.index("--resume") + 1] == str(interrupted / "checkpoint.pt")
    assert json.loads((interrupted / "summary.json").read_text())["status"] == "finished"
    assert (runs_dir / "_unfinished" / crashed.name / "args.json").is_file() and not crashed.exists()
    seed_2_runs = [name for name in run_dirs(runs_dir) if name.startswith("A-v0__fake__2__")]
    assert len(seed_2_runs) == 1 and seed_2_runs[0] != crashed.name


def test_a_runner_started_in_the_background_still_interrupts_its_runs(fake_script, tmp_path):
    """A background job (`nohup python benchmarks/run.py ... &`) starts with SIGINT ignored; its runs must not inherit
    that, or the SIGINT the runner sends them on SIGTERM never arrives and they go on running."""
    runs_dir = tmp_path / "runs"
    runner = subprocess.Popen([sys.executable, str(RUNNER), "--scripts", f"{fake_script}:A-v0", "--seeds", "1",
                               "--runs-dir", str(runs_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "STUB_WAIT": "1"},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not list(runs_dir.glob("*/waiting")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(runs_dir.glob("*/waiting")), "the run never started"
    runner.send_signal(signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=30)  # the run stops at once, not after its 60 s or the 120 s wait
    assert runner.returncode == 130, stdout + stderr
    (run_dir,) = [runs_dir / name for name in run_dirs(runs_dir)]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert "exit status 130" in stderr


def test_a_run_cut_short_by_sigterm_is_started_again_from_its_checkpoint(fake_script, tmp_path):
    """What a preempted Slurm job meets, here with a local run: `kill -TERM` on the run (not on the runner) makes it
    save a checkpoint, and the runner submits it again with --resume, so that the benchmark still finishes."""
    runs_dir = tmp_path / "runs"
    runner = subprocess.Popen([sys.executable, str(RUNNER), "--scripts", f"{fake_script}:A-v0", "--seeds", "1",
                               "--runs-dir", str(runs_dir), "--status-every", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "STUB_WAIT": "1"})
    deadline = time.monotonic() + 60
    while not list(runs_dir.glob("*/waiting")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (waiting,) = runs_dir.glob("*/waiting")
    os.kill(int(waiting.read_text()), signal.SIGTERM)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 0, stdout + stderr
    assert re.search(r"cut short .*fake A-v0 seed 1: .*submitting it again with --resume \(1 of at most 3\)", stdout)
    (run_dir,) = [runs_dir / name for name in run_dirs(runs_dir)]  # the same run directory, continued
    argv = json.loads((run_dir / "argv.json").read_text())
    assert argv[argv.index("--resume") + 1] == str(run_dir / "checkpoint.pt")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert "1 run(s) finished, 0 failed" in stdout


def test_settings_that_contradict_a_finished_run_are_refused_defaults_included(fake_script, tmp_path):
    common = ["--scripts", f"{fake_script}:A-v0", "--seeds", "1", "--runs-dir", str(tmp_path / "runs")]
    assert run_runner(*common, "--", "--total-timesteps", "10", "--learning-rate", "1e-3").returncode == 0
    same = run_runner(*common, "--", "--total-timesteps=10", "--learning-rate", "0.001")
    assert same.returncode == 0 and "1 finished already" in same.stdout
    other = run_runner(*common, "--", "--total-timesteps", "20", "--learning-rate", "1e-3")
    assert other.returncode == 2
    assert "total_timesteps: 10 in the run, 20 asked" in other.stderr
    # the run's --learning-rate 1e-3 is not the script's default, 2.5e-4: leaving the flag out is another setting
    default = run_runner(*common, "--", "--total-timesteps", "10")
    assert default.returncode == 2 and "learning_rate: 0.001 in the run, 0.00025 asked" in default.stderr
    tagged = run_runner(*common, "--tag", "long", "--", "--total-timesteps", "20")
    assert tagged.returncode == 0 and "0 finished already, 1 to run" in tagged.stdout
    reserved = run_runner(*common, "--", "--seed", "5")
    assert reserved.returncode == 2 and "--seed after -- is set by the runner" in reserved.stderr


def test_flags_after_the_separator_are_checked_by_the_scripts_parser_before_any_run(tmp_path):
    result = run_runner("--scripts", "dqn.py:CartPole-v1", "--seeds", "1", "--runs-dir", str(tmp_path / "runs"), "--",
                        "--learning-rat", "3")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "Unrecognized options: --learning-rat" in result.stderr and not (tmp_path / "runs").exists()
    combinations = run_module.build_combinations(["dqn.py:CartPole-v1"], None, [1], None)
    for flags, message in [(["--loss", "l1"], "invalid choice 'l1' for argument '--loss'"),
                           (["--gamma", "nan"], "--gamma must be a finite number (got nan)")]:
        with pytest.raises(run_module.UsageError, match=re.escape(message)):
            run_module.requested_settings(combinations, flags)
    # and what parses gives every setting, the script's defaults included
    settings = run_module.requested_settings(combinations, ["--learning-rate", "5e-4"])[combinations[0]]
    assert settings["learning_rate"] == 5e-4 and settings["gamma"] == 0.99 and settings["hidden_sizes"] == [128, 128]


def write_run(runs_dir: Path, seed: int, status: str, eval_mean: float) -> None:
    run_dir = runs_dir / f"CartPole-v1__dqn__{seed}__{1000 + seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps({"env_id": "CartPole-v1", "exp_name": "dqn", "seed": seed}))
    rows = ["global_step,wall_time,name,value"]
    rows += [f"{step},{1000 + seed + step / 100},charts/episodic_return,{step / 10}" for step in range(10, 1000, 10)]
    rows.append(f"900,{1000 + seed + 9},eval/episodic_return,{eval_mean}")
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    summary = {"script": "dqn", "env_id": "CartPole-v1", "seed": seed, "status": status, "global_step": 990,
               "wall_time_s": 10.0, "eval_mean": eval_mean if status != "interrupted" else None}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_table_leaves_out_unfinished_runs_unless_asked_and_then_marks_them(tmp_path):
    write_run(tmp_path, 1, "finished", 100.0)
    write_run(tmp_path, 2, "target_reached", 300.0)
    write_run(tmp_path, 3, "interrupted", 50.0)
    runs = plot_module.load_runs([tmp_path])
    finished = plot_module.table(plot_module.group_runs(runs, include_unfinished=False), ["CartPole-v1"])
    assert "| dqn.py | CartPole-v1 | 2 | 200.00 [100.00, 300.00] | 200.00 ± 100.00 | s1: 100.00, s2: 300.00 | 990 |" \
        in finished
    everything = plot_module.table(plot_module.group_runs(runs, include_unfinished=True), ["CartPole-v1"])
    assert "| dqn.py [partial] | CartPole-v1 | 3 | 150.00 [50.00, 300.00] | 150.00 ± 108.01 | s1: 100.00, " \
        "s2: 300.00, s3: 50.00 |" in everything


def test_a_run_still_going_is_labelled_by_the_script_in_its_checkpoint_not_by_its_exp_name(tmp_path):
    write_run(tmp_path, 1, "finished", 100.0)
    run_dir = next(tmp_path.iterdir())
    (run_dir / "summary.json").unlink()  # still running: no summary yet
    (run_dir / "args.json").write_text(json.dumps({"env_id": "CartPole-v1", "exp_name": "my_recipe", "seed": 1}))
    torch.save({"script": "dqn_lunar", "global_step": 900}, run_dir / "checkpoint.pt")
    (group,) = plot_module.group_runs(plot_module.load_runs([tmp_path]), include_unfinished=True)
    assert group.label == "dqn_lunar.py (my_recipe) [partial]"


def test_probability_of_improvement_counts_the_pairs_of_seeds_ties_as_a_half():
    # 1 vs (1, 5, 0): a tie and a win; 2 and 3 vs (1, 5, 0): two wins each -> 5.5 of 9 pairs
    point, low, high = plot_module.probability_of_improvement(np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0]),
                                                              reps=200)
    assert point == pytest.approx(5.5 / 9) and 0 <= low <= point <= high <= 1
    assert plot_module.probability_of_improvement(np.array([4.0, 5.0]), np.array([1.0, 2.0, 3.0]), reps=200) \
        == (1.0, 1.0, 1.0)
    state = np.random.get_state()[1].copy()
    again = plot_module.probability_of_improvement(np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0]), reps=200)
    assert again == (point, low, high) and (np.random.get_state()[1] == state).all()  # seeded, global state kept


def test_the_interquartile_mean_drops_the_outer_quarters_and_its_interval_comes_from_resampling_the_seeds():
    scores = np.array([[100.0], [200.0], [300.0], [400.0], [10_000.0]])  # five seeds of one point; one outlier
    iqm, low, high = (float(value[0]) for value in plot_module.iqm_and_interval(scores))
    assert iqm == 300.0  # the mean of the middle three: the outlier and the lowest seed are cut
    assert 100.0 <= low < iqm < high <= 10_000.0
    again = [float(value[0]) for value in plot_module.iqm_and_interval(scores)]
    assert again == [iqm, low, high]  # a fixed bootstrap seed: the table repeats
    # a resample of the same seed five times has that seed's score, so the interval reaches toward the extremes
    assert low <= 200.0 and high >= 400.0
    curves = plot_module.iqm_and_interval(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]), reps=200)
    assert curves[0].tolist() == [3.0, 4.0]  # four seeds: the mean of the middle two, at each point


def test_smoothing_is_a_trailing_mean_over_the_stated_window():
    values = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    assert plot_module.trailing_mean(values, 1).tolist() == values.tolist()
    assert plot_module.trailing_mean(values, 3).tolist() == [0.0, 5.0, 10.0, 20.0, 30.0]


def test_table_gives_the_steps_to_the_first_evaluation_at_the_solved_threshold(tmp_path):
    evaluations = {1: [(100, 480.0), (200, 500.0)], 2: [(100, 300.0), (200, 474.9), (300, 475.0)], 3: [(100, 20.0)]}
    for seed, evals in evaluations.items():
        write_run(tmp_path, seed, "finished", evals[-1][1])
        with (tmp_path / f"CartPole-v1__dqn__{seed}__{1000 + seed}" / "metrics.csv").open("a") as metrics:
            metrics.writelines(f"{step},{1000 + seed + step / 100},eval/episodic_return,{value}\n"
                               for step, value in evals)
    (group,) = plot_module.group_runs(plot_module.load_runs([tmp_path]), include_unfinished=False)
    runs = sorted(group.runs, key=lambda run: run.args["seed"])
    assert [plot_module.first_step_reaching(run, 475.0) for run in runs] == [100, 300, None]
    # the median of 100, 300 and never is 300; with seed 3 left out, the median of 100 and 300
    assert plot_module.steps_to_threshold_text(runs, 475.0) == "300 (s1: 100, s2: 300, s3: never)"
    assert plot_module.steps_to_threshold_text(runs[:2], 475.0) == "200 (s1: 100, s2: 300)"
    assert plot_module.steps_to_threshold_text(runs[2:], 475.0) == "never (s3: never)"
    markdown = plot_module.table([group], ["CartPole-v1"])
    assert "| 300 (s1: 100, s2: 300, s3: never) |" in markdown


def test_metrics_are_read_by_name_and_a_row_cut_short_by_a_crash_is_dropped(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("global_step,wall_time,name,value\n10,1.5,charts/episodic_return,9\n20,2.5,eval/episodic_return,"
                    "7.5\n30,3.5,charts/episodic_return,12\n40,4.5,charts/episo")
    metrics = plot_module.read_metrics(path)
    assert sorted(metrics) == ["charts/episodic_return", "eval/episodic_return"]
    assert metrics["charts/episodic_return"].tolist() == [[10, 1.5, 9], [30, 3.5, 12]]
    path.write_text("")  # created, then killed before its header
    assert plot_module.read_metrics(path) == {}


def test_the_timer_measures_the_learning_phase_by_the_extra_steps_and_a_call_by_its_cpu_time():
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import timing

    def burn(seconds: float) -> None:
        start = time.process_time()
        while time.process_time() - start < seconds:
            pass

    # a contender with 0.2 CPU-seconds of set-up and 10,000 steps a CPU-second: the set-up cancels out
    sps_wall, sps_cpu = timing.learning_phase_sps(lambda steps: burn(0.2 + steps / 10_000), 1000, 3000)
    assert 8_000 < sps_cpu < 12_500 and sps_wall > 0
    # a subprocess contender reports its own (wall, CPU) seconds, which count instead of this process's
    assert timing.learning_phase_sps(lambda steps: (steps / 100, steps / 1000), 1000, 3000) == (100.0, 1000.0)
    cpu, wall = timing.per_call(lambda: burn(0.01), calls=5, repeats=2, warmup=1)
    assert 0.009 < cpu < 0.02 and wall >= cpu * 0.9


def test_sps_times_an_external_cleanrl_script_by_its_own_cpu_time(tmp_path):
    """`benchmarks/sps.py --cleanrl`: a stand-in for CleanRL's dqn.py that records its arguments and burns CPU in
    proportion to --total-timesteps; the benchmark must pass CleanRL's flags, single-threaded, and count the child's
    CPU time (not its own)."""
    spec = importlib.util.spec_from_file_location("sps", REPO_ROOT / "benchmarks" / "sps.py")
    sps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sps)
    fake = tmp_path / "fake_cleanrl.py"
    fake.write_text(textwrap.dedent('''
        import json, os, sys, time
        steps = int(sys.argv[sys.argv.index("--total-timesteps") + 1])
        start = time.process_time()
        while time.process_time() - start < steps / 20_000:  # 20,000 "steps" per CPU-second
            pass
        with open("calls.jsonl", "a") as file:
            file.write(json.dumps({"argv": sys.argv[1:], "omp": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
    '''))
    short_wall, short_cpu = sps.cleanrl_run([sys.executable, str(fake)], 12_000, str(tmp_path))
    long_wall, long_cpu = sps.cleanrl_run([sys.executable, str(fake)], 32_000, str(tmp_path))
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls[0]["argv"] == ["--total-timesteps", "12000", "--exploration-fraction", str(10_000 / 12_000),
                                "--no-cuda", "--seed", "1"]
    assert all(call["omp"] == "1" for call in calls)
    # the extra 20,000 steps cost one CPU-second in the child, whatever this process did meanwhile
    assert 0.9 < long_cpu - short_cpu < 1.3
    assert long_wall > short_wall


def test_sps_atari_times_an_external_cleanrl_script_set_up_like_dqn_atari(tmp_path):
    """`benchmarks/sps_atari.py --cleanrl`: the stand-in must get Pong, learning from step 1,000, epsilon at its end
    value after the first step, a replay that fits in memory, the CPU, and one thread; its CPU time is its own."""
    spec = importlib.util.spec_from_file_location("sps_atari", REPO_ROOT / "benchmarks" / "sps_atari.py")
    sps_atari = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sps_atari)
    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "fake_cleanrl_atari.py"
    fake.write_text(textwrap.dedent(f'''
        import json, os, sys, time
        start = time.process_time()
        while time.process_time() - start < 0.3:
            pass
        with open({str(calls)!r}, "a") as file:
            file.write(json.dumps({{"argv": sys.argv[1:], "omp": os.environ.get("OMP_NUM_THREADS")}}) + "\\n")
    '''))
    wall, cpu = sps_atari.timed_cleanrl([sys.executable, str(fake)], 3_400)
    call = json.loads(calls.read_text())
    argv = dict(zip(call["argv"][:-3:2], call["argv"][1:-3:2]))
    assert argv == {"--env-id": "PongNoFrameskip-v4", "--total-timesteps": "3400", "--learning-starts": "1000",
                    "--exploration-fraction": str(1 / 3400), "--buffer-size": "100000"}
    assert call["argv"][-3:] == ["--no-cuda", "--seed", "1"] and call["omp"] == "1"
    assert 0.25 < cpu < 0.6 and wall >= 0.25


def test_an_exported_model_holds_only_the_q_network_and_evaluates_as_its_checkpoint(tmp_path):
    import dqn
    from conftest import train

    run_dir = Path(train(dqn, total_timesteps=2000, learning_starts=500, eval_frequency=1000, eval_episodes=2,
                         save_replay=True, runs_dir=str(tmp_path / "runs"))["run_dir"])
    model = tmp_path / "models" / "dqn_CartPole-v1.pt"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "export_model.py"), str(run_dir),
                             str(model)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f"--eval-checkpoint {model}" in result.stdout, result.stderr
    saved = torch.load(model, weights_only=True)
    assert sorted(saved["state"]) == ["q_network"] and "rng" not in saved and "optimizer" not in str(saved.keys())
    assert saved["run_args"]["runs_dir"] == "runs" and not saved["run_args"]["save_replay"]
    assert model.stat().st_size < (run_dir / "checkpoint.pt").stat().st_size / 2
    evaluations = [dqn.main(*dqn.parse_command_line(["--eval-checkpoint", str(path), "--eval-episodes", "3"]))
                   for path in (run_dir / "checkpoint.pt", model)]
    assert evaluations[0]["eval_returns"] == evaluations[1]["eval_returns"] and evaluations[1]["global_step"] == 2000


def test_an_animation_of_a_checkpoint_playing_is_a_small_gif_and_nothing_is_written_beside_the_checkpoint(tmp_path):
    import dqn
    from conftest import train
    from PIL import Image

    run_dir = Path(train(dqn, total_timesteps=1000, learning_starts=500, eval_frequency=1000, eval_episodes=1,
                         runs_dir=str(tmp_path / "runs"))["run_dir"])
    before = sorted(path.name for path in run_dir.iterdir())
    gif = tmp_path / "docs" / "cartpole.gif"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "animate.py"), str(run_dir / "best.pt"),
                             str(gif), "--seconds", "2", "--fps", "10"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(gif) as image:
        assert image.format == "GIF" and 2 <= image.n_frames <= 20 and image.size == (300, 200)  # 600x400 halved
    assert gif.stat().st_size < 2_000_000 and sorted(path.name for path in run_dir.iterdir()) == before


@pytest.mark.parametrize("tool", ["export_model", "animate"])
def test_a_bad_checkpoint_or_output_of_export_and_animate_is_one_line_before_any_work(tool, tmp_path, capsys):
    main = load_module(tool, REPO_ROOT / "benchmarks" / f"{tool}.py").main
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"script": "dqn", "env_id": "CartPole-v1", "args": {}, "run_args": {}, "global_step": 0,
                "state": {"q_network": {}}}, checkpoint)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "folder").mkdir()
    before = sorted(path.name for path in tmp_path.iterdir())
    missing, blocked = str(tmp_path / "missing.pt"), str(tmp_path / "a_file" / "out")
    for argv, message in [([missing, "out"], f"checkpoint '{missing}' does not exist"),
                          ([str(tmp_path / "empty.pt"), "out"], "is not a checkpoint of these scripts"),
                          ([str(checkpoint), blocked], f"folder '{tmp_path}/a_file' cannot be written: it is a file"),
                          ([str(checkpoint), ""], "OUTPUT '' must name a file, not a folder"),
                          ([str(checkpoint), str(tmp_path / "folder")], "must name a file, not a folder")]:
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1, (argv, error)
    assert sorted(path.name for path in tmp_path.iterdir()) == before and not list((tmp_path / "folder").iterdir())


def test_an_export_to_a_full_disk_says_no_space_and_leaves_no_file(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not let root mount a tmpfs")
    try:
        checkpoint = tmp_path / "checkpoint.pt"
        torch.save({"script": "dqn", "env_id": "CartPole-v1", "args": {}, "run_args": {}, "global_step": 0,
                    "state": {"q_network": {"weight": torch.zeros(100_000)}}}, checkpoint)
        result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "export_model.py"), str(checkpoint),
                                 str(disk / "model.pt")], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and result.stderr == f"error: cannot write {disk}/model.pt: No space left on " \
            "device\n", result.stderr
        assert not list(disk.iterdir())
    finally:
        subprocess.run(["umount", str(disk)])


def test_the_plotter_refuses_an_output_it_cannot_write_in_one_line_before_reading_the_runs(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    for flags, message in [(["--out-dir", str(tmp_path / "a_file")],
                            f"--out-dir '{tmp_path}/a_file' cannot be written: it is a file, not a folder"),
                           (["--name", "a/b"], "--name must be a file name (got 'a/b')"),
                           (["--name", ""], "--name must be a file name (got '')")]:
        assert plot_module.main(["--runs-dir", str(tmp_path), *flags]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_final_eval_reports_a_broken_checkpoint_and_an_interruption_in_one_line(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "CartPole-v1__dqn__1__1"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_text("not a checkpoint")
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "seed": 1, "global_step": 9}))
    final_eval = load_module("final_eval", REPO_ROOT / "benchmarks" / "final_eval.py")
    argv = ["--script", "dqn.py", "--runs-dir", str(tmp_path), "--episodes", "3"]
    assert final_eval.main(argv) == 2
    assert capsys.readouterr().err == f"error: cannot read '{run_dir}/checkpoint.pt': it is truncated or corrupted\n"
    import script_runs  # a Ctrl-C during an evaluation: the script's main says "interrupted" and returns no returns

    (run_dir / "final_eval_3.json").write_text('{"seed": 1, "returns": null}')  # as such a Ctrl-C once left: redone

    fake = type("FakeScript", (), dict(ConfigError=ValueError, parse_command_line=lambda argv: (None, None),
                                       main=lambda args, run_args: {"status": "interrupted", "eval_returns": None}))
    monkeypatch.setattr(final_eval, "load_script", lambda given, path: script_runs.Script(path, given, fake, {}))
    assert final_eval.main(argv) == 130
    assert capsys.readouterr().err.strip() == "interrupted: the evaluations that finished are kept; the same command " \
        "again does the rest"
    assert json.loads((run_dir / "final_eval_3.json").read_text())["returns"] is None  # nothing new written


def test_a_ctrl_c_while_the_runner_loads_the_scripts_is_one_line_and_exit_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args):  # Ctrl-C while a script (and torch with it) is imported to check its settings
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "build_combinations", interrupted)
    assert run_module.main(["--scripts", "dqn.py:CartPole-v1", "--seeds", "1", "--runs-dir", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "\ninterrupted before any run started\n"
    assert not list(tmp_path.iterdir())
