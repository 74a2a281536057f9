"""Tests of dqn_atari.py: the frame replay rebuilds exactly what the env returned, the network, the env wrappers, bad
input, and a smoke run on real Pong that writes the run files."""

import csv
import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dqn_atari  # noqa: E402
from conftest import settings, train  # noqa: E402
from dqn_atari import FRAME_STACK, ConfigError, FrameReplayBuffer, QNetwork, make_env  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test machine has 2 shared cores: a second intra-op thread only waits for the busy one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeFrameEnv(gym.Env):
    """84x84 frames that are all different (a frame counter in the first pixels, noise in the rest), with random
    terminations and truncations, including episodes that end on their first step."""

    observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, env_index: int, p_terminate: float = 0.12, p_truncate: float = 0.06):
        self.env_index, self.p_terminate, self.p_truncate = env_index, p_terminate, p_truncate
        self.counter = 0

    def _frame(self) -> np.ndarray:
        self.counter += 1
        frame = self.np_random.integers(0, 256, size=(84, 84), dtype=np.uint8)
        frame[0, :8] = np.frombuffer(np.int64(self.env_index * 10**9 + self.counter).tobytes(), np.uint8)
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._frame(), {}

    def step(self, action):
        terminated = bool(self.np_random.random() < self.p_terminate)
        truncated = not terminated and bool(self.np_random.random() < self.p_truncate)
        reward = float(self.np_random.normal())
        return self._frame(), reward, terminated, truncated, {}


def fake_env_thunk(env_index: int):
    return lambda: gym.wrappers.FrameStackObservation(FakeFrameEnv(env_index), FRAME_STACK, padding_type="reset")


class Recorder:
    """Steps `envs` with random actions and stores every step in `replay_buffer` exactly as main() does, keeping the
    ground truth: {(env, absolute slot): (obs, next_obs, action, reward, termination)} as the env returned them."""

    def __init__(self, envs: gym.vector.VectorEnv, replay_buffer: FrameReplayBuffer, seed: int):
        self.envs, self.replay_buffer, self.truth = envs, replay_buffer, {}
        self.rng = np.random.default_rng(seed)
        self.obs, _ = envs.reset(seed=seed)
        replay_buffer.start_episodes(self.obs, np.arange(envs.num_envs))
        self.terminations = self.truncations = 0

    def run(self, steps: int) -> None:
        envs, replay_buffer, obs = self.envs, self.replay_buffer, self.obs
        for _ in range(steps):
            actions = self.rng.integers(envs.single_action_space.n, size=envs.num_envs)
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            real_next_obs = next_obs
            if "_final_obs" in infos:
                real_next_obs = next_obs.copy()
                for i in np.flatnonzero(infos["_final_obs"]):
                    real_next_obs[i] = infos["final_obs"][i]
            for i in range(envs.num_envs):
                self.truth[(i, int(replay_buffer.written[i]) - 1)] = (
                    obs[i].copy(), real_next_obs[i].copy(), int(actions[i]), float(rewards[i]), bool(terminations[i]))
            replay_buffer.add(real_next_obs, actions, rewards, terminations)
            dones = np.logical_or(terminations, truncations)
            if dones.any():
                replay_buffer.start_episodes(next_obs[dones], np.flatnonzero(dones))
            obs = next_obs
            self.terminations += int(terminations.sum())
            self.truncations += int(np.sum(truncations & ~terminations))
        self.obs = obs


def sampleable(replay_buffer: FrameReplayBuffer) -> set:
    """Every (env, absolute slot) that sample() may return, enumerated from the replay's own bounds."""
    lowest = np.maximum(replay_buffer.written - replay_buffer.slots + FRAME_STACK - 1, 0)
    return {(e, j) for e in range(replay_buffer.num_envs) for j in range(lowest[e], replay_buffer.written[e] - 1)
            if not replay_buffer.first[e, (j + 1) % replay_buffer.slots]}


def assert_rebuilds_every_transition(replay_buffer: FrameReplayBuffer, truth: dict) -> int:
    """Every stored transition comes back byte-identical to what the env returned; returns how many were checked."""
    keys = sorted(sampleable(replay_buffer))
    assert keys, "nothing to check"
    assert set(keys) <= set(truth), "the replay offers a slot that is not a transition (an episode's final frame?)"
    # every transition whose frames are all still in the ring is offered
    oldest = {e: max(0, int(replay_buffer.written[e]) - replay_buffer.slots + FRAME_STACK - 1)
              for e in range(replay_buffer.num_envs)}
    assert {key for key in truth if key[1] >= oldest[key[0]]} == set(keys)
    env_indices = np.array([e for e, _ in keys])
    slots = np.array([j for _, j in keys])
    obs = replay_buffer.gather(env_indices, slots).numpy()
    next_obs = replay_buffer.gather(env_indices, slots + 1).numpy()
    ring = slots % replay_buffer.slots
    for k, key in enumerate(keys):
        true_obs, true_next_obs, action, reward, termination = truth[key]
        assert obs[k].tobytes() == true_obs.tobytes(), f"obs of transition {key}"
        assert next_obs[k].tobytes() == true_next_obs.tobytes(), f"next_obs of transition {key}"
        assert replay_buffer.actions[key[0], ring[k]] == action
        assert replay_buffer.rewards[key[0], ring[k]] == np.float32(reward)
        assert replay_buffer.terminations[key[0], ring[k]] == termination
    return len(keys)


@pytest.mark.parametrize("num_envs, storage", [(1, "numpy"), (3, "numpy"), (3, "torch")])
def test_frame_replay_rebuilds_obs_and_next_obs_byte_identical_across_episodes_truncation_and_wraparound(num_envs,
                                                                                                        storage):
    envs = gym.vector.SyncVectorEnv([fake_env_thunk(i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    replay_buffer = FrameReplayBuffer(40 * num_envs, num_envs, torch.device("cpu"))
    if storage == "torch":  # the --replay-on-gpu code path (frames in a torch tensor), here on the CPU
        replay_buffer.frames = torch.zeros(replay_buffer.frames.shape, dtype=torch.uint8)
        replay_buffer.storage_device = torch.device("cpu")
    recorder = Recorder(envs, replay_buffer, seed=num_envs)
    for _ in range(12):  # check before the ring is full, around the first wrap, and laps later
        recorder.run(17)
        assert_rebuilds_every_transition(replay_buffer, recorder.truth)
    assert replay_buffer.written.min() > 3 * replay_buffer.slots, "the ring did not wrap around several times"
    assert recorder.terminations > 5 and recorder.truncations > 2, "too few episode ends to test the boundaries"
    # sample() returns the same stacks, as torch tensors with the dtypes the update needs
    env_indices, slots = replay_buffer.sample_indices(64, np.random.default_rng(7))
    b_obs, b_actions, b_rewards, b_next_obs, b_terminations = replay_buffer.sample(64, np.random.default_rng(7))
    assert sampleable(replay_buffer) >= set(zip(env_indices.tolist(), slots.tolist()))
    assert b_obs.dtype == torch.uint8 and b_obs.shape == (64, FRAME_STACK, 84, 84) and b_next_obs.shape == b_obs.shape
    assert b_actions.dtype == torch.int64 and b_rewards.dtype == torch.float32 and b_terminations.dtype == torch.float32
    for k, key in enumerate(zip(env_indices.tolist(), slots.tolist())):
        true_obs, true_next_obs, action, reward, termination = recorder.truth[key]
        assert np.array_equal(b_obs[k].numpy(), true_obs) and np.array_equal(b_next_obs[k].numpy(), true_next_obs)
        assert b_actions[k] == action and b_rewards[k] == np.float32(reward) and b_terminations[k] == termination
    # what --save-replay writes restores the same transitions
    restored = FrameReplayBuffer(40 * num_envs, num_envs, torch.device("cpu"))
    if storage == "torch":
        restored.frames = torch.zeros(restored.frames.shape, dtype=torch.uint8)
    restored.load_state_dict(replay_buffer.state_dict())
    assert assert_rebuilds_every_transition(restored, recorder.truth) == len(sampleable(replay_buffer))
    with pytest.raises(ConfigError, match="keep --num-envs and --buffer-size"):
        FrameReplayBuffer(50 * num_envs, num_envs, torch.device("cpu")).load_state_dict(replay_buffer.state_dict())
    envs.close()


@pytest.mark.parametrize("env_id", ["PongNoFrameskip-v4", "BreakoutNoFrameskip-v4"])
def test_frame_replay_is_byte_identical_on_real_atari_with_life_losses_and_truncation(env_id):
    """Real SB3-wrapped games, 2 envs, episodic life (Breakout loses lives), a 45-step time limit for truncations."""
    def thunk():
        return gym.wrappers.TimeLimit(make_env(env_id, terminal_on_life_loss=True)(), max_episode_steps=45)

    envs = gym.vector.SyncVectorEnv([thunk, thunk], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    replay_buffer = FrameReplayBuffer(2 * 120, 2, torch.device("cpu"))
    recorder = Recorder(envs, replay_buffer, seed=3)
    for _ in range(3):
        recorder.run(100)
        assert_rebuilds_every_transition(replay_buffer, recorder.truth)
    assert replay_buffer.written.min() > replay_buffer.slots, "the ring did not wrap around"
    assert recorder.truncations >= 2
    if env_id.startswith("Breakout"):
        assert recorder.terminations >= 2, "no life was lost"
    envs.close()


def test_frame_replay_stores_each_frame_once_within_7200_bytes_per_transition():
    replay_buffer = FrameReplayBuffer(10_000, 4, torch.device("cpu"))
    assert replay_buffer.frames.nbytes == 10_000 * 84 * 84  # one 84x84 frame per slot, no stacks, no next_obs copy
    arrays = (replay_buffer.frames, replay_buffer.actions, replay_buffer.rewards, replay_buffer.terminations,
              replay_buffer.first)
    assert sum(array.nbytes for array in arrays) / 10_000 <= 7200
    assert FrameReplayBuffer.bytes_needed(10_000) == sum(array.nbytes for array in arrays)


def test_nature_cnn_maps_a_batch_of_uint8_stacks_to_one_q_value_per_action():
    q_network = QNetwork(n_actions=6)
    obs = np.random.default_rng(0).integers(0, 256, size=(5, FRAME_STACK, 84, 84), dtype=np.uint8)
    q_values = q_network(torch.from_numpy(obs))
    assert q_values.shape == (5, 6) and q_values.dtype == torch.float32
    # Mnih et al. 2015: 32 8x8/4, 64 4x4/2, 64 3x3/1, 512 units, one output per action
    expected = (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 64 * 9 + 64) + (3136 * 512 + 512) + (512 * 6 + 6)
    assert sum(p.numel() for p in q_network.parameters()) == expected
    actions = dqn_atari.greedy_actions(q_network, obs)  # the torch path: the network scales the uint8 frames
    assert actions.shape == (5,) and np.array_equal(actions, q_values.argmax(dim=1).numpy())


def wrapper_chain(env: gym.Env) -> list[str]:
    names = []
    while isinstance(env, gym.Wrapper):
        names.append(type(env).__name__)
        env = env.env
    return names + [type(env).__name__]


def test_evaluation_env_plays_full_games_and_reports_the_raw_score():
    training_env = make_env("BreakoutNoFrameskip-v4", terminal_on_life_loss=True)()
    eval_env = make_env("BreakoutNoFrameskip-v4", terminal_on_life_loss=False)()
    assert "EpisodicLifeEnv" in wrapper_chain(training_env)
    assert "EpisodicLifeEnv" not in wrapper_chain(eval_env)
    # RecordEpisodeStatistics sits right on the emulator: nothing below it clips rewards or cuts episodes
    below = wrapper_chain(eval_env)[wrapper_chain(eval_env).index("RecordEpisodeStatistics") + 1:]
    assert set(below) <= {"OrderEnforcing", "PassiveEnvChecker", "AtariEnv"}, below
    assert eval_env.observation_space.shape == (FRAME_STACK, 84, 84)
    training_env.close()

    class EndOfEpisode(gym.Wrapper):
        """Remember the lives left and the raw rewards summed when an episode ends."""
        ends: list = []

        def reset(self, **kwargs):
            self.raw_return = 0.0
            return self.env.reset(**kwargs)

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                EndOfEpisode.ends.append((self.env.unwrapped.ale.lives(), info["episode"]["r"]))
            return obs, reward, terminated, truncated, info

    policy = partial(dqn_atari.epsilon_greedy, QNetwork(4))
    returns = dqn_atari.evaluate(policy, lambda: EndOfEpisode(eval_env), n_episodes=1, epsilon=1.0, seed=0)
    assert len(EndOfEpisode.ends) == 1
    lives_left, episode_return = EndOfEpisode.ends[0]
    assert lives_left == 0, "evaluation ended an episode at a lost life, not at game over"
    assert returns == [float(episode_return)]


@pytest.mark.parametrize("env_id, message", [("CartPole-v1", "needs an Atari env"),
                                             ("FooNoFrameskip-v4", "doesn't exist")])
def test_non_atari_or_unknown_game_is_a_config_error(env_id, message):
    assert any(message in problem for problem in dqn_atari.check_args(*settings(dqn_atari, env_id=env_id)))


@pytest.mark.parametrize("overrides, message", [(dict(replay_on_gpu=True), "--replay-on-gpu needs --cuda"),
                                                 (dict(num_envs=8, buffer_size=40, batch_size=32),
                                                  "too small for 8 envs"),
                                                 (dict(noop_max=-1), "--noop-max must be >= 0")])
def test_inconsistent_settings_are_config_errors(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        dqn_atari.open_run(*settings(dqn_atari, runs_dir=str(tmp_path), **overrides))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FooNoFrameskip-v4"])
def test_cli_reports_bad_env_in_one_line_without_traceback_or_files(env_id, tmp_path):
    runs_dir = tmp_path / "runs"
    result = subprocess.run([sys.executable, str(ROOT / "dqn_atari.py"), "--env-id", env_id, "--runs-dir",
                             str(runs_dir)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and env_id in errors[0] and result.stderr.strip().endswith(errors[0])
    assert not runs_dir.exists()


def test_checkpoints_of_other_scripts_or_games_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"script": "dqn", "env_id": "CartPole-v1", "global_step": 10}, path)
    with pytest.raises(ConfigError, match="not a dqn_atari.py checkpoint"):
        dqn_atari.open_run(*settings(dqn_atari, resume=str(path)))
    torch.save({"script": "dqn_atari", "env_id": "BreakoutNoFrameskip-v4", "global_step": 10}, path)
    with pytest.raises(ConfigError, match="trained on BreakoutNoFrameskip-v4"):
        dqn_atari.open_run(*settings(dqn_atari, eval_checkpoint=str(path)))


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_smoke_run_on_pong_writes_run_files_then_resumes_with_its_replay(tmp_path, monkeypatch):
    values = dict(env_id="PongNoFrameskip-v4", runs_dir=str(tmp_path), buffer_size=4000, learning_starts=1000,
                  eval_frequency=1000, eval_episodes=1, save_replay=True)
    summary = train(dqn_atari, total_timesteps=1500, **values)
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path
    for name in ["args.json", "metrics.csv", "summary.json", "checkpoint.pt", "best.pt", "replay.pt"]:
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "args.json").read_text())["buffer_size"] == 4000
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["global_step"] == 1500 and saved["status"] == "finished"
    assert -21 <= saved["eval_mean"] <= 21 and len(saved["eval_returns"]) == 1
    rows = read_metrics(run_dir / "metrics.csv")
    names = {row["name"] for row in rows}
    assert {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/SPS", "losses/td_loss",
            "losses/q_values", "eval/episodic_return"} <= names
    assert all(math.isfinite(float(row["value"])) for row in rows)
    # a random Pong game is lost 21 points to at most a few: a raw, unclipped, whole-game score
    assert all(-21 <= float(row["value"]) <= -15 for row in rows if row["name"] == "charts/episodic_return")
    frames_before = saved["replay_size"]

    # `--resume` alone restores the checkpoint's settings (the command line) and the replay (replay.pt)
    args, run_args = dqn_atari.parse_command_line(["--resume", str(run_dir), "--total-timesteps", "1700"])
    assert args.buffer_size == 4000 and run_args.save_replay and args.total_timesteps == 1700
    resumed = dqn_atari.main(args, run_args)
    assert resumed["run_dir"] == str(run_dir) and resumed["global_step"] == 1700
    assert resumed["replay_size"] >= frames_before + 200 + 1, "the saved replay was not restored"
    steps = [int(row["global_step"]) for row in read_metrics(run_dir / "metrics.csv")]
    assert max(steps) == 1700

    evaluated = train(dqn_atari, eval_checkpoint=str(run_dir / "best.pt"), eval_episodes=1)
    assert evaluated["global_step"] in (1000, 1500) and -21 <= evaluated["eval_mean"] <= 21
