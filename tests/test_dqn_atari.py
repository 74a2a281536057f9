"""Tests of dqn_atari.py: the frame replay rebuilds exactly what the env returned, the network, the env wrappers, bad
input, and a smoke run on real Pong that writes the run files."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dqn_atari  # noqa: E402
from dqn_atari import (FRAME_STACK, Args, ConfigError, FrameReplayBuffer, QNetwork, env_spaces,  # noqa: E402
                       load_checkpoint, main, make_env)


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
    obs_slots, next_obs_slots = replay_buffer.stack_slots(env_indices, slots)
    obs = replay_buffer._gather(env_indices, obs_slots).numpy()
    next_obs = replay_buffer._gather(env_indices, next_obs_slots).numpy()
    ring = slots % replay_buffer.slots
    for k, key in enumerate(keys):
        true_obs, true_next_obs, action, reward, termination = truth[key]
        assert obs[k].tobytes() == true_obs.tobytes(), f"obs of transition {key}"
        assert next_obs[k].tobytes() == true_next_obs.tobytes(), f"next_obs of transition {key}"
        assert replay_buffer.actions[key[0], ring[k]] == action
        assert replay_buffer.rewards[key[0], ring[k]] == np.float32(reward)
        assert replay_buffer.terminations[key[0], ring[k]] == termination
    return len(keys)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_frame_replay_rebuilds_obs_and_next_obs_byte_identical_across_episodes_truncation_and_wraparound(num_envs):
    envs = gym.vector.SyncVectorEnv([fake_env_thunk(i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    replay_buffer = FrameReplayBuffer(40 * num_envs, num_envs, torch.device("cpu"))
    recorder = Recorder(envs, replay_buffer, seed=num_envs)
    for _ in range(12):  # check before the ring is full, around the first wrap, and laps later
        recorder.run(17)
        assert_rebuilds_every_transition(replay_buffer, recorder.truth)
    assert replay_buffer.written.min() > 3 * replay_buffer.slots, "the ring did not wrap around several times"
    assert recorder.terminations > 5 and recorder.truncations > 2, "too few episode ends to test the boundaries"
    # sample() returns the same stacks, as torch tensors with the dtypes the update needs
    env_indices, slots = replay_buffer.sample_indices(64, np.random.default_rng(7))
    b_obs, b_actions, b_rewards, b_next_obs, b_terminations = replay_buffer.sample(64, np.random.default_rng(7))
    assert b_obs.dtype == torch.uint8 and b_obs.shape == (64, FRAME_STACK, 84, 84) and b_next_obs.shape == b_obs.shape
    assert b_actions.dtype == torch.int64 and b_rewards.dtype == torch.float32 and b_terminations.dtype == torch.float32
    for k, key in enumerate(zip(env_indices.tolist(), slots.tolist())):
        true_obs, true_next_obs, action, reward, termination = recorder.truth[key]
        assert np.array_equal(b_obs[k].numpy(), true_obs) and np.array_equal(b_next_obs[k].numpy(), true_next_obs)
        assert b_actions[k] == action and b_rewards[k] == np.float32(reward) and b_terminations[k] == termination
    envs.close()
