"""Shared test helpers: put the repository root on sys.path and register small, fully observable test envs."""

import csv
import dataclasses
import itertools
import os
import subprocess
import sys
from pathlib import Path

# One torch thread per test process: the machine has 2 cores, and idle OpenMP threads spinning against other
# processes make small-network training tens of times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # the tools import their shared module, script_runs


class StepCounterEnv(gym.Env):
    """An env whose observation says exactly where it is: [instance id, episode index, time step, terminal flag].

    Episodes terminate at random (probability `p_terminate` per step) or are truncated by the TimeLimit wrapper, so a
    replay buffer's contents can be checked transition by transition: next_obs must be obs one step later in the same
    episode of the same env instance, and the stored termination must equal next_obs's terminal flag."""

    _instances = itertools.count()

    def __init__(self, p_terminate: float = 0.15):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.instance = float(next(self._instances))
        self.p_terminate = p_terminate
        self.episode, self.t = -1, 0

    def _obs(self, terminal: bool) -> np.ndarray:
        return np.array([self.instance, self.episode, self.t, float(terminal)], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(False), {}

    def step(self, action):
        self.t += 1
        terminated = bool(self.np_random.random() < self.p_terminate)
        return self._obs(terminated), float(action), terminated, False, {}


class ObservationSpaceEnv(gym.Env):
    """A do-nothing env with a given observation space, to check which spaces a script accepts."""

    def __init__(self, observation_space: gym.Space):
        self.observation_space, self.action_space = observation_space, gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, True, False, {}


gym.register("StepCounter-v0", entry_point=StepCounterEnv, max_episode_steps=8)
gym.register("ImageObs-v0", entry_point=ObservationSpaceEnv, max_episode_steps=8,
             kwargs={"observation_space": gym.spaces.Box(0, 255, shape=(84, 84, 3), dtype=np.uint8)})
gym.register("Float64Obs-v0", entry_point=ObservationSpaceEnv, max_episode_steps=8,  # as many custom envs have
             kwargs={"observation_space": gym.spaces.Box(-1, 1, shape=(3,), dtype=np.float64)})
gym.register("DictObs-v0", entry_point=ObservationSpaceEnv, max_episode_steps=8,
             kwargs={"observation_space": gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, shape=(2,))})})


def service_missing(reason: str) -> None:
    """A test's service (Slurm, PostgreSQL) is not here: skip with `reason`, which says how to get it, or fail where
    DQN_TESTS_REQUIRE_SERVICES=1 (.ci/run sets it: a green CI never hides a skipped cluster or database test)."""
    import pytest
    if os.environ.get("DQN_TESTS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (DQN_TESTS_REQUIRE_SERVICES=1: the services must be up)")
    pytest.skip(reason)


SCRIPTS = ["dqn.py", "dqn_lunar.py", "dqn_atari.py", "double_dueling_per_dqn.py"]


def settings(module, **overrides):
    """(Args, RunArgs) of a script module, with each override given to whichever of the two has that field; the run
    options start from the script's own RUN_DEFAULTS, as on its command line."""
    run_fields = {field.name for field in dataclasses.fields(module.RunArgs)}
    args = module.Args(**{name: value for name, value in overrides.items() if name not in run_fields})
    run_args = module.RunArgs(**{**module.RUN_DEFAULTS,
                                 **{name: value for name, value in overrides.items() if name in run_fields}})
    return args, run_args


def train(module, **overrides) -> dict:
    """module.main with these settings: the summary of the run."""
    return module.main(*settings(module, **overrides))


def read_metrics(run_dir) -> list[tuple[int, str, float]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as file:
        return [(int(row["global_step"]), row["name"], float(row["value"])) for row in csv.DictReader(file)]


def run_script(args: list[str], cwd=None, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    """Run a command line (e.g. [sys.executable, "dqn.py", ...]) and capture its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(args, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# A stand-in with the scripts' interface (Args, RunArgs, parse_command_line, the checks, the run directory's files) for
# the tests of the runner and the tuner, which are about running scripts, not training: no torch, one evaluation every
# --eval-frequency steps, STUB_EVAL_SECONDS apart, each seed STUB_POINTS_PER_SEED x its seed higher. STUB_FAIL_SEED
# makes that seed exit with status 1; STUB_WAIT makes the run wait (up to 60 s) for a SIGINT or SIGTERM, as a long run
# would, and end "interrupted" with a checkpoint.pt (a run resumed from it does not wait).
STUB_SCRIPT = '''"""Stand-in for a DQN script: the same flags and files, evaluations on a schedule, no training."""
import dataclasses, json, math, os, signal, sys, time
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Args:
    env_id: str = "Stub-v0"
    total_timesteps: int = 300
    learning_rate: float = 2.5e-4
    gamma: float = 0.99
    batch_size: int = 128
    target_network_frequency: int = 500
    exploration_fraction: float = 0.5
    hidden_sizes: tuple[int, ...] = (120, 84)


@dataclass
class RunArgs:
    exp_name: str = Path(__file__).stem
    seed: int = 1
    save_model: bool = True
    runs_dir: str = "runs"
    eval_frequency: int = 100
    resume: str | None = None
    eval_checkpoint: str | None = None


@dataclass
class Settings(Args, RunArgs):
    pass


def parse_command_line(argv=None):
    settings = tyro.cli(Settings, args=argv)
    args = Args(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(Args)})
    return args, RunArgs(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(RunArgs)})


def general_problems(args, run_args):
    return []


def check_args(args, run_args):
    return []


def interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupted)
    args, run_args = parse_command_line()
    if str(run_args.seed) == os.environ.get("STUB_FAIL_SEED"):
        sys.exit("boom: this seed fails on purpose")
    if run_args.resume:
        run_dir = Path(run_args.resume).parent
    else:
        run_dir = Path(run_args.runs_dir) / f"{args.env_id}__{run_args.exp_name}__{run_args.seed}__{time.time_ns()}"
        run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args) | dataclasses.asdict(run_args)))
    (run_dir / "argv.json").write_text(json.dumps(sys.argv[1:]))
    final = 100.0 - 20.0 * abs(math.log10(args.learning_rate) + 3.0) - args.batch_size / 64
    final += float(os.environ.get("STUB_POINTS_PER_SEED", "0")) * run_args.seed  # seeds that differ, if asked
    status = "finished"
    try:
        with open(run_dir / "metrics.csv", "w") as file:
            file.write("global_step,wall_time,name,value\\n")
            for step in range(run_args.eval_frequency, args.total_timesteps + 1, run_args.eval_frequency):
                time.sleep(float(os.environ.get("STUB_EVAL_SECONDS", "0")))
                file.write(f"{step},{time.time():.3f},eval/episodic_return,{final * step / args.total_timesteps}\\n")
                file.flush()
        if os.environ.get("STUB_WAIT") and not run_args.resume:
            (run_dir / "waiting").write_text(str(os.getpid()))
            time.sleep(60)
    except KeyboardInterrupt:
        status = "interrupted"
        (run_dir / "checkpoint.pt").write_bytes(b"")
    summary = {"script": "stub", "env_id": args.env_id, "seed": run_args.seed, "status": status,
               "global_step": args.total_timesteps, "wall_time_s": 0.1, "eval_mean": final, "eval_std": 0.0,
               "best_eval_mean": final, "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    sys.exit(130 if status == "interrupted" else 0)
'''
