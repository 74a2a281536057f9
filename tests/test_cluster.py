"""benchmarks/run.py --cluster slurm against a real Slurm: a grid of two tiny dqn.py runs as two jobs, and a job
cancelled midway with `scancel --signal=TERM` that the runner submits again with --resume until it finishes.

.ci/run starts a single-node Slurm with benchmarks/local_slurm.sh and exports its SLURM_CONF; by hand:
`benchmarks/local_slurm.sh start && export SLURM_CONF=/tmp/dqn-slurm/slurm.conf`. Without a Slurm that answers, these
tests are skipped, except under DQN_TESTS_REQUIRE_SERVICES=1 (.ci/run sets it), where they fail.
"""

import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import service_missing  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNNER = REPO_ROOT / "benchmarks" / "run.py"
TINY = ["--learning-starts", "200", "--eval-episodes", "1"]


@pytest.fixture(scope="module")
def slurm():
    """A Slurm whose partition is up, or a skip (a failure under DQN_TESTS_REQUIRE_SERVICES=1)."""
    answer = None
    if shutil.which("sinfo"):
        answer = subprocess.run(["sinfo", "--noheader", "--format=%a %t"], capture_output=True, text=True, timeout=30)
    if answer is None or answer.returncode != 0 or not re.search(r"^up (idle|mix|alloc)", answer.stdout, re.M):
        reason = ("no Slurm answers: start one with `benchmarks/local_slurm.sh start` and export the SLURM_CONF it "
                  f"prints ({answer.stderr.strip() if answer else 'sinfo not installed'})")
        service_missing(reason)


def runner(runs_dir: Path, seeds: list[str], *script_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RUNNER), "--cluster", "slurm", "--slurm.time-min", "10",
                             "--scripts", "dqn.py", "--env-ids", "CartPole-v1", "--seeds", *seeds, "--runs-dir",
                             str(runs_dir), "--status-every", "5", "--", *TINY, *script_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summaries(runs_dir: Path) -> dict[int, dict]:
    found = [json.loads(path.read_text()) for path in runs_dir.glob("CartPole-v1__dqn__*/summary.json")]
    return {summary["seed"]: summary for summary in found}


def test_a_grid_runs_as_one_slurm_job_per_run_with_its_output_beside_the_runs(slurm, tmp_path):
    runs_dir = tmp_path / "runs"
    process = runner(runs_dir, ["1", "2"], "--total-timesteps", "600", "--eval-frequency", "300")
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stdout + stderr
    job_ids = re.findall(r"started \(Slurm job (\d+)\): dqn CartPole-v1 seed \d", stdout)
    assert len(set(job_ids)) == 2, stdout
    found = summaries(runs_dir)
    assert sorted(found) == [1, 2] and all(found[seed]["status"] == "finished" for seed in found)
    assert all(found[seed]["global_step"] == 600 for seed in found)
    for job_id in job_ids:  # submitit's files for each job, and the sbatch line that lets a run save a checkpoint
        assert "#SBATCH --signal=TERM@120" in (runs_dir / "_slurm" / f"{job_id}_submission.sh").read_text()
        assert (runs_dir / "_slurm" / f"{job_id}_0_log.out").is_file()
    for seed in (1, 2):  # the script's own output, as with local runs
        assert "final evaluation" in (runs_dir / "_logs" / f"CartPole-v1__dqn__{seed}.stdout.log").read_text()


def test_a_job_cancelled_midway_with_sigterm_is_resubmitted_with_resume_and_finishes(slurm, tmp_path):
    runs_dir = tmp_path / "runs"
    process = runner(runs_dir, ["3"], "--total-timesteps", "4000", "--eval-frequency", "1000")
    deadline = time.monotonic() + 180
    while not list(runs_dir.glob("CartPole-v1__dqn__3__*/checkpoint.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    (checkpoint,) = runs_dir.glob("CartPole-v1__dqn__3__*/checkpoint.pt")
    (job_id,) = [path.name.split("_")[0] for path in (runs_dir / "_slurm").glob("*_submission.sh")]
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True, timeout=30)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stdout + stderr
    assert re.search(r"cut short .*seed 3: stopped by SIGTERM \(exit status 143\).*submitting it again with --resume",
                     stdout), stdout
    resumed = re.search(r"resuming (\S+) \(Slurm job (\d+)\): dqn CartPole-v1 seed 3", stdout)
    assert resumed and resumed.group(1) == str(checkpoint) and resumed.group(2) != job_id, stdout
    run_dir = checkpoint.parent
    # one run, continued
    assert [path.parent for path in runs_dir.glob("CartPole-v1__dqn__3__*/args.json")] == [run_dir]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4000
    with open(run_dir / "metrics.csv") as file:  # one curve: the resumed part continues where the checkpoint was
        steps = [int(row["global_step"]) for row in csv.DictReader(file) if row["name"] == "eval/episodic_return"]
    assert steps == sorted(set(steps)) and steps[-1] == 4000


def test_tuner_workers_run_as_slurm_jobs_sharing_one_study(slurm, tmp_path):
    import optuna
    from conftest import STUB_SCRIPT

    (tmp_path / "stub_dqn.py").write_text(STUB_SCRIPT)
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "tune.py"), "--script",
                             str(tmp_path / "stub_dqn.py"), "--storage", storage, "--study-name", "shared",
                             "--n-trials", "4", "--runs-dir", str(tmp_path / "runs"), "--cluster", "slurm",
                             "--workers", "2", "--slurm.time-min", "10"],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(set(re.findall(r"worker \d: Slurm job (\d+_\d+),", result.stdout))) == 2  # two tasks of one array
    assert result.stdout.count("ended: exit status 0") == 2 and "best: trial" in result.stdout
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 4 and all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    worker_logs = sorted((tmp_path / "runs" / "_workers").glob("worker_*.stdout.log"))
    assert len(worker_logs) == 2 and all("study 'shared'" in log.read_text() for log in worker_logs)


@pytest.mark.parametrize("required, outcome", [(None, pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_an_absent_service_skips_with_its_reason_on_a_laptop_and_fails_under_ci(monkeypatch, required, outcome):
    if required is None:
        monkeypatch.delenv("DQN_TESTS_REQUIRE_SERVICES", raising=False)
    else:
        monkeypatch.setenv("DQN_TESTS_REQUIRE_SERVICES", required)
    with pytest.raises(outcome, match="start one with benchmarks/local_slurm.sh"):
        service_missing("no Slurm answers: start one with benchmarks/local_slurm.sh")
    assert "export DQN_TESTS_REQUIRE_SERVICES=1" in (REPO_ROOT / ".ci" / "run").read_text()
