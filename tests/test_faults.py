"""Faults a user meets, each handled by one general mechanism of the harness (the same in all four scripts): paths
that cannot hold a run, a disk that fills up at any write, checkpoints as untrusted input, two processes on one run
directory, signals at every phase of a run, and passwords that must never be printed."""

import copy
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dqn
from conftest import ROOT, run_script, settings, train

SHORT = dict(total_timesteps=2000, learning_starts=500, eval_frequency=1000, eval_episodes=2)


def files_in(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


def loadable_step(run_dir: Path) -> int:
    """The step of run_dir's checkpoint.pt, which must load as a whole checkpoint; no temporary file may be left."""
    assert not list(run_dir.glob("*.tmp"))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    dqn.check_fields(run_dir / "checkpoint.pt", checkpoint, dqn.RESUME_FIELDS)
    return checkpoint["global_step"]


# ------------------------------------------------------------------------------------------------------------ paths

def test_a_run_name_cannot_place_files_outside_the_runs_dir(tmp_path):
    for name in ["../escape", "a/b", "", ".."]:
        with pytest.raises(dqn.ConfigError, match="--exp-name must be a name, not a path"):
            dqn.open_run(*settings(dqn, exp_name=name, runs_dir=str(tmp_path / "runs")))
    summary = train(dqn, exp_name="..x", total_timesteps=600,
                    learning_starts=500, eval_frequency=600, eval_episodes=1, runs_dir=str(tmp_path / "runs"))
    assert Path(summary["run_dir"]).parent == tmp_path / "runs"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]


def test_a_read_only_runs_dir_is_refused_in_one_line_before_any_work(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only file system needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("this machine does not let root mount a tmpfs")
    try:
        result = run_script([sys.executable, "dqn.py", "--runs-dir", str(mount / "runs")])
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == f"error: --runs-dir '{mount / 'runs'}' cannot be written: read-only file system\n"
    finally:
        subprocess.run(["umount", str(mount)])


# -------------------------------------------------------------------------------------------------------- disk full

class FullDisk:
    """open() for the harness whose files for writing take `room` more bytes in all, then fail with ENOSPC, as a full
    disk does (the files are real: what was written before stays)."""

    def __init__(self, room: int, only: str = ""):
        self.room, self.only = room, only

    def __call__(self, path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)
        return file if "r" in mode or self.only not in str(path) else self.File(file, self)

    class File:
        def __init__(self, file, disk):
            self.file, self.disk = file, disk

        def write(self, data):
            self.disk.room -= len(data)
            if self.disk.room < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name):  # flush, fileno, tell, name, close: the real file's
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exception):
            self.file.close()


@pytest.mark.parametrize("only", ["checkpoint.pt", "replay.pt", "metrics.csv"])
def test_a_disk_that_fills_up_stops_the_run_in_one_line_and_the_last_checkpoint_loads(only, tmp_path, monkeypatch,
                                                                                       capsys):
    first = train(dqn, **SHORT, save_replay=True, runs_dir=str(tmp_path))  # a whole run: checkpoint at step 2000
    run_dir = Path(first["run_dir"])
    monkeypatch.setattr(dqn, "open", FullDisk(room=2000, only=only), raising=False)  # the harness's open: the disk
    summary = dqn.main(*dqn.parse_command_line(["--resume", str(run_dir), "--total-timesteps", "6000",
                                                "--save-replay"]))
    assert summary["status"] == "failed"
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot write {run_dir}/") and only.split(".")[0] in error
    assert "No space left on device" in error and "MB free there" in error
    assert error.endswith(f"then continue with python dqn.py --resume {run_dir}")
    assert loadable_step(run_dir) >= 2000  # the previous checkpoint, or a later whole one
    monkeypatch.undo()  # space again: the run goes on from there
    resumed = dqn.main(*dqn.parse_command_line(["--resume", str(run_dir), "--total-timesteps", "6000"]))
    assert resumed["status"] == "finished" and loadable_step(run_dir) == 6000


def test_a_real_full_disk_stops_the_run_with_the_file_and_free_space_named(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small tmpfs needs root; the ENOSPC test above covers this machine")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not let root mount a tmpfs")
    try:  # a CartPole checkpoint is about 290 kB: the disk holds the first ones, not all
        result = run_script([sys.executable, "dqn.py", "--total-timesteps", "40000", "--learning-starts", "1000",
                             "--eval-frequency", "2000", "--eval-episodes", "2", "--save-replay", "--runs-dir",
                             str(disk)])
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: cannot write {disk}/") and "No space left on device" in error
        run_dir = next(disk.iterdir())
        assert 2000 <= loadable_step(run_dir) < 40000
    finally:
        subprocess.run(["umount", str(disk)])


# ----------------------------------------------------------------------------------------- untrusted checkpoints

@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    run_dir = Path(train(dqn, **SHORT, runs_dir=str(tmp_path_factory.mktemp("saved")))["run_dir"])
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def craft(checkpoint: dict, change: str) -> dict:
    checkpoint = copy.deepcopy(checkpoint)
    optimizer_state = checkpoint["state"]["optimizer"]
    if change == "negative step":
        checkpoint["global_step"] = -5
    elif change == "step of another type":
        checkpoint["global_step"] = 10.5
    elif change == "seed of another type":
        checkpoint["run_args"]["seed"] = "one"
    elif change == "seed out of range":
        checkpoint["run_args"]["seed"] = -1
    elif change == "unknown loss":
        checkpoint["args"]["loss"] = "absolute"
    elif change == "widths of another type":
        checkpoint["args"]["hidden_sizes"] = ["wide"]
    elif change == "numpy rng":
        checkpoint["rng"]["numpy"] = {"state": 1}
    elif change == "torch rng":
        checkpoint["rng"]["torch"] = torch.zeros(3)
    elif change == "weight shape":
        first = next(iter(checkpoint["state"]["q_network"]))
        checkpoint["state"]["q_network"][first] = torch.zeros(3, 3)
    elif change == "missing field":
        del checkpoint["updates"]
    elif change == "learning rate":
        optimizer_state["param_groups"][0]["lr"] = float("nan")
    elif change == "moment shape":
        next(iter(optimizer_state["state"].values()))["exp_avg"] = torch.zeros(2)
    return checkpoint


@pytest.mark.parametrize("change, message", [
    ("negative step", "its global_step is -5"), ("step of another type", "global_step missing or of the wrong type"),
    ("seed of another type", "holds settings of the wrong type: seed='one'"),
    ("seed out of range", "--seed must be in [0, 2**32 - 1]"), ("unknown loss", "wrong type: loss='absolute'"),
    ("widths of another type", "wrong type: hidden_sizes=['wide']"),
    ("numpy rng", "is not a whole checkpoint: its rng"),
    ("torch rng", "is not a whole checkpoint: its rng"), ("weight shape", "does not fit these settings"),
    ("missing field", "updates missing or of the wrong type"), ("learning rate", "its optimizer has settings"),
    ("moment shape", "moments of other shapes")])
def test_a_crafted_checkpoint_is_refused_in_one_line_before_anything_is_written(change, message, saved, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(craft(saved, change), run_dir / "checkpoint.pt")
    before = files_in(run_dir)
    with pytest.raises(dqn.ConfigError) as error:  # which __main__ prints as one line "error: ...", exit status 2
        dqn.main(*dqn.parse_command_line(["--resume", str(run_dir), "--total-timesteps", "4000"]))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert files_in(run_dir) == before


def test_a_finished_run_says_so_and_a_checkpoint_copied_out_of_its_run_resumes_there(saved, tmp_path):
    (tmp_path / "copy").mkdir()
    torch.save(saved, tmp_path / "copy" / "checkpoint.pt")
    finished = run_script([sys.executable, "dqn.py", "--resume", str(tmp_path / "copy")])
    assert finished.returncode == 2 and "is finished: it has run 2,000 steps" in finished.stderr
    result = run_script([sys.executable, "dqn.py", "--resume", str(tmp_path / "copy" / "checkpoint.pt"),
                         "--total-timesteps", "2500", "--eval-episodes", "1"])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "copy" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 2500


def test_a_checkpoint_without_the_network_to_evaluate_is_refused_not_scored_at_random(saved, tmp_path):
    checkpoint = copy.deepcopy(saved)
    checkpoint["state"] = {}
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    with pytest.raises(dqn.ConfigError, match="does not fit these settings"):
        dqn.main(*dqn.parse_command_line(["--eval-checkpoint", str(tmp_path / "checkpoint.pt")]))


def test_a_metrics_file_cut_short_by_a_crash_does_not_stop_a_resume(saved, tmp_path):
    run_dir = Path(train(dqn, **SHORT, runs_dir=str(tmp_path))["run_dir"])
    with open(run_dir / "metrics.csv", "a") as metrics:
        metrics.write("\n2100,17966")  # an empty line, then a row cut short
    summary = train(dqn, **SHORT | dict(total_timesteps=2500, eval_episodes=1), resume=str(run_dir))
    assert summary["status"] == "finished"
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert "2100,17966" not in rows and all(len(row.split(",")) == 4 for row in rows)


def test_a_signal_after_the_network_diverged_saves_nothing_and_the_run_says_it_diverged(tmp_path, monkeypatch):
    log_update = dqn.log_update

    def log_then_signal(run, *args, **kwargs):  # a SIGTERM at the 50th update, before the first logging reads a loss
        log_update(run, *args, **kwargs)
        if run.updates == 50:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(dqn, "log_update", log_then_signal)
    summary = train(dqn, learning_rate=1e30, total_timesteps=20000, learning_starts=500, eval_frequency=400,
                    eval_episodes=1, runs_dir=str(tmp_path))
    assert summary["status"] == "diverged"
    checkpoint = torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 400  # the last one before learning, finite
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["state"]["q_network"].values())


def test_a_signal_in_the_final_evaluation_says_how_to_evaluate_the_saved_network(tmp_path, monkeypatch, capsys):
    evaluate = dqn.evaluate

    def signal_then_evaluate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(dqn, "evaluate", signal_then_evaluate)
    summary = train(dqn, total_timesteps=1000, learning_starts=500, eval_frequency=1000, eval_episodes=1,
                    runs_dir=str(tmp_path))
    assert summary["status"] == "interrupted"
    assert f"saved, evaluate it with python dqn.py --eval-checkpoint {summary['run_dir']}" in capsys.readouterr().err
    assert loadable_step(Path(summary["run_dir"])) == 1000


# ----------------------------------------------------------------------------------- one run directory, one process

def background_run(tmp_path: Path, *flags: str, hook: str = "") -> subprocess.Popen:
    """dqn.py in a child process, after `hook` (Python run first, e.g. to slow a phase down), with SIGINT restored."""
    code = f"import runpy, sys, time, pathlib\n{hook}\nsys.argv = ['dqn.py', *sys.argv[1:]]\n" \
           "runpy.run_path('dqn.py', run_name='__main__')"
    return subprocess.Popen([sys.executable, "-c", code, "--runs-dir", str(tmp_path / "runs"), *flags], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=open(tmp_path / "out.txt", "w"),
                            stderr=open(tmp_path / "err.txt", "w"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, process: subprocess.Popen, tmp_path: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, (tmp_path / "err.txt").read_text()
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_a_second_process_on_a_run_directory_is_refused_while_the_first_lives_and_not_after_kill_9(tmp_path):
    first = background_run(tmp_path, "--total-timesteps", "500000", "--learning-starts", "500",
                           "--eval-frequency", "1000", "--eval-episodes", "1")
    try:
        wait_for(lambda: list((tmp_path / "runs").glob("*/checkpoint.pt")), first, tmp_path)
        run_dir = next((tmp_path / "runs").iterdir())
        second = run_script([sys.executable, "dqn.py", "--resume", str(run_dir)])
        assert second.returncode == 2 and second.stderr == \
            f"error: {run_dir} is in use by another process (its run, or a resume of it): wait until it ends\n"
    finally:
        first.kill()  # SIGKILL: no handler runs, and the lock goes with the process
        first.wait()
    step = loadable_step(run_dir)
    resumed = run_script([sys.executable, "dqn.py", "--resume", str(run_dir), "--total-timesteps", str(step + 500),
                          "--eval-episodes", "1"])
    assert resumed.returncode == 0, resumed.stderr


# ---------------------------------------------------------------------------------------- signals at every phase

SLOW_EVALUATION = """
import gymnasium, inspect
make = gymnasium.make
def slow_make(*args, **kwargs):  # an evaluation's env: its steps are slowed down
    env = make(*args, **kwargs)
    if any(frame.function == "evaluate" for frame in inspect.stack()):
        pathlib.Path(sys.argv[2]).parent.joinpath("evaluating").touch()
        step = env.step
        env.step = lambda action: (time.sleep(0.01), step(action))[1]
    return env
gymnasium.make = slow_make
"""
SLOW_SAVE = """
import torch
save = torch.save
def slow_save(*args, **kwargs):
    pathlib.Path(sys.argv[2]).parent.joinpath("saving").touch()
    time.sleep(1.5)
    return save(*args, **kwargs)
torch.save = slow_save
"""


@pytest.mark.parametrize("phase", ["warm-up", "evaluation", "checkpoint write"])
def test_a_signal_in_any_phase_saves_a_whole_checkpoint_and_prints_the_resume_command(phase, tmp_path):
    flags = {"warm-up": ["--learning-starts", "400000", "--eval-frequency", "400000"],
             "evaluation": ["--learning-starts", "500", "--eval-frequency", "1000", "--eval-episodes", "1000"],
             "checkpoint write": ["--learning-starts", "500", "--eval-frequency", "1000", "--eval-episodes", "1"]}
    hook = {"warm-up": "", "evaluation": SLOW_EVALUATION, "checkpoint write": SLOW_SAVE}[phase]
    process = background_run(tmp_path, "--total-timesteps", "500000", *flags[phase], hook=hook)
    marker = {"warm-up": "charts/episodic_return", "evaluation": "evaluating", "checkpoint write": "saving"}[phase]
    runs = tmp_path / "runs"
    wait_for(lambda: any(marker in path.read_text() for path in runs.glob("*/metrics.csv")) if phase == "warm-up"
             else (tmp_path / marker).exists(), process, tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    stderr = (tmp_path / "err.txt").read_text()
    run_dir = next(runs.iterdir())
    assert "Traceback" not in stderr and f"saved, continue with python dqn.py --resume {run_dir}" in stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    step = loadable_step(run_dir)
    assert (step < 400000) if phase == "warm-up" else step >= 1000


# ------------------------------------------------------------------------------------------------------- secrets

def test_a_password_in_a_storage_url_is_never_printed(tmp_path):
    tuner = ROOT / "benchmarks" / "tune.py"
    for url in ["postgresql://dqn:S3CRET-PW@127.0.0.1:notaport/db", "postgresql://dqn:S3CRET-PW@127.0.0.1:1/db",
                "postgresql+nodriver://dqn:S3CRET-PW@127.0.0.1/db"]:
        result = subprocess.run([sys.executable, str(tuner), "--script", "dqn.py", "--storage", url, "--runs-dir",
                                 str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "S3CRET" not in result.stdout + result.stderr and "dqn:***@127.0.0.1" in result.stderr


def test_a_wandb_key_never_reaches_the_run_files_or_the_output(tmp_path):
    result = run_script([sys.executable, "dqn.py", "--total-timesteps", "600", "--learning-starts", "500",
                         "--eval-frequency", "600", "--eval-episodes", "1", "--track", "--runs-dir", str(tmp_path)],
                        env_extra={"WANDB_MODE": "offline", "WANDB_API_KEY": "k3y" * 14, "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr
    assert "k3y" not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"k3yk3y" not in path.read_bytes(), path


def test_the_tools_try_their_output_folders_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    blocked = str(tmp_path / "a_file" / "runs")
    runner = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--scripts", "dqn.py:CartPole-v1",
                             "--seeds", "1", "--runs-dir", blocked], capture_output=True, text=True, timeout=120)
    why = "cannot be written: not a directory\n"
    assert runner.returncode == 2 and runner.stderr == f"error: --runs-dir '{blocked}' {why}"
    output = ["--output", f"{blocked}/best.json", "--runs-dir", str(tmp_path / "runs")]
    for flags, what in [(["--runs-dir", blocked], "--runs-dir"), (output, "--output's folder")]:
        tuner = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune.py"), "--script", "dqn.py", "--storage",
                                f"sqlite:///{tmp_path / 'study.db'}", *flags], capture_output=True, text=True,
                               timeout=120)
        assert tuner.returncode == 1 and tuner.stderr == f"error: {what} '{blocked}' {why}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]  # no study, no runs


def test_a_disk_full_under_tensorboards_writer_thread_is_one_line_naming_its_events_file(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine does not let root mount a tmpfs")
    try:  # no checkpoints: metrics.csv and the events file fill the disk
        result = run_script([sys.executable, "dqn.py", "--total-timesteps", "30000", "--learning-starts", "1000",
                             "--eval-frequency", "2000", "--eval-episodes", "2", "--no-save-model", "--runs-dir",
                             str(disk)])
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1 and len(errors) == 1 and "No space left on device" in errors[0], result.stderr
        assert re.match(rf"error: cannot write {disk}/[^/]+/(metrics.csv|events.out.tfevents.\S+):", errors[0])
    finally:
        subprocess.run(["umount", str(disk)])
