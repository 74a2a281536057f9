"""Tests of dqn.py: the maths on hand-computed cases, the replay buffer, episode boundaries in the real training loop,
bad input, run files, determinism, resume, copying the file alone, wandb offline, and learning CartPole."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn
from conftest import ROOT, run_script

FAST = ["--total-timesteps", "3000", "--learning-starts", "500", "--eval-frequency", "1500", "--eval-episodes", "2"]


def fast_args(tmp_path: Path, **overrides) -> dqn.Args:
    values = dict(total_timesteps=3000, learning_starts=500, eval_frequency=1500, eval_episodes=2,
                  runs_dir=str(tmp_path / "runs"))
    return dqn.Args(**{**values, **overrides})


def read_metrics(run_dir) -> list[tuple[int, str, float]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [(int(row["global_step"]), row["name"], float(row["value"])) for row in rows]


# ---------------------------------------------------------------------------------------------------------------- maths

def test_td_target_does_not_bootstrap_after_termination():
    rewards = torch.tensor([1.0, 1.0, -1.0])
    terminations = torch.tensor([0.0, 1.0, 1.0])
    next_q = torch.tensor([10.0, 10.0, 5.0])
    # 1 + 0.9 * 10 = 10; terminated rows keep only their reward
    assert torch.allclose(dqn.td_target(rewards, terminations, next_q, 0.9), torch.tensor([10.0, 1.0, -1.0]))


def test_td_target_bootstraps_after_truncation_with_the_given_gamma():
    # a truncated transition is stored with termination 0: its target bootstraps from the true final observation
    rewards, terminations, next_q = torch.tensor([0.5, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([4.0, -3.0])
    assert torch.allclose(dqn.td_target(rewards, terminations, next_q, 0.5), torch.tensor([2.5, 0.5]))
    assert torch.allclose(dqn.td_target(rewards, terminations, next_q, 0.0), rewards)
    assert torch.allclose(dqn.td_target(rewards, terminations, next_q, 1.0), torch.tensor([4.5, -1.0]))


def test_hard_target_update_copies_the_online_network_exactly():
    torch.manual_seed(0)
    online, target = dqn.QNetwork(4, 2, (8,)), dqn.QNetwork(4, 2, (8,))
    dqn.update_target(list(target.parameters()), list(online.parameters()), tau=1.0)
    for target_param, param in zip(target.parameters(), online.parameters()):
        assert torch.equal(target_param, param)


def test_soft_target_update_is_polyak_averaging():
    online, target = dqn.QNetwork(1, 1, (1,)), dqn.QNetwork(1, 1, (1,))
    with torch.no_grad():
        for param in online.parameters():
            param.fill_(2.0)
        for param in target.parameters():
            param.fill_(10.0)
    dqn.update_target(list(target.parameters()), list(online.parameters()), tau=0.25)  # 0.25 * 2 + 0.75 * 10 = 8
    assert all(torch.allclose(param, torch.full_like(param, 8.0)) for param in target.parameters())
    dqn.update_target(list(target.parameters()), list(online.parameters()), tau=0.5)  # 0.5 * 2 + 0.5 * 8 = 5
    assert all(torch.allclose(param, torch.full_like(param, 5.0)) for param in target.parameters())


def test_linear_schedule_endpoints():
    assert dqn.linear_schedule(1.0, 0.05, 1000, 0) == 1.0
    assert dqn.linear_schedule(1.0, 0.05, 1000, 500) == pytest.approx(0.525)
    assert dqn.linear_schedule(1.0, 0.05, 1000, 1000) == pytest.approx(0.05)
    assert dqn.linear_schedule(1.0, 0.05, 1000, 10**6) == pytest.approx(0.05)
    assert dqn.linear_schedule(1.0, 0.05, 0, 0) == 0.05  # exploration_fraction 0: no annealing


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_action_frequencies(epsilon):
    """Each env explores with probability epsilon, then picks each of the n actions with probability 1/n; otherwise
    it takes its greedy action. With greedy action 3 of 5: P(3) = 1 - eps + eps/5, P(other) = eps/5."""
    rng, n_envs, n_actions, rounds = np.random.default_rng(0), 8, 5, 20_000
    calls = []

    def greedy(obs):
        calls.append(len(obs))
        return np.full(len(obs), 3, dtype=np.int64)

    actions = np.stack([dqn.epsilon_greedy(greedy, np.zeros((n_envs, 2)), epsilon, n_actions, rng)
                        for _ in range(rounds)])  # [rounds, n_envs]
    assert actions.dtype == np.int64 and actions.min() >= 0 and actions.max() < n_actions
    expected = np.full(n_actions, epsilon / n_actions)
    expected[3] += 1 - epsilon
    frequencies = np.bincount(actions.ravel(), minlength=n_actions) / actions.size
    # 160k draws: the standard error of each frequency is at most 0.0013, so 0.006 is over 4 of them
    np.testing.assert_allclose(frequencies, expected, atol=0.006)
    if epsilon == 1.0:
        assert calls == []  # every env explores: no network call
    else:
        assert len(calls) > 0.99 * rounds and set(calls) == {n_envs}


def test_epsilon_greedy_draw_picks_a_uniform_action_below_epsilon():
    """The draw u that decides to explore also picks the action floor(u / eps * n), clipped to n - 1."""

    class FixedDraws:
        def __init__(self, u):
            self.u = np.asarray(u)

        def random(self, size):
            assert size == len(self.u)
            return self.u.copy()

    greedy = lambda obs: np.array([7, 7, 7, 7])  # noqa: E731
    u = [0.0, 0.0999, 0.1999999999, 0.5]
    assert dqn.epsilon_greedy(greedy, np.zeros((4, 1)), 0.2, 4, FixedDraws(u)).tolist() == [0, 1, 3, 7]
    # u just below epsilon never gives action n
    assert dqn.epsilon_greedy(greedy, np.zeros((1, 1)), 0.3, 3, FixedDraws([np.nextafter(0.3, 0)])).tolist() == [2]


@pytest.mark.parametrize("step, n, every, expected", [(10, 1, 10, 1), (9, 1, 10, 0), (12, 3, 10, 1), (9, 3, 10, 0),
                                                      (40, 16, 4, 4), (30, 3, 10, 1), (33, 3, 10, 0)])
def test_multiples_passed_counts_sync_points_crossed_by_one_iteration(step, n, every, expected):
    assert dqn.multiples_passed(step, n, every) == expected


def test_q_network_output_shape():
    network = dqn.QNetwork(6, 3, (32, 16, 8))
    assert network(torch.zeros(5, 6)).shape == (5, 3)
    linears = [layer for layer in network.network if isinstance(layer, torch.nn.Linear)]
    assert [layer.out_features for layer in linears] == [32, 16, 8, 3]


def test_greedy_actions_match_torch_argmax_after_training_steps_and_loading():
    torch.manual_seed(0)
    network = dqn.QNetwork(4, 5, (16, 16))
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)

    def torch_argmax():
        with torch.no_grad():
            return network(torch.from_numpy(obs)).argmax(dim=1).numpy()

    assert np.array_equal(network.greedy_actions(obs), torch_argmax())
    optimizer = torch.optim.Adam(network.parameters(), lr=0.5, fused=True)
    before = network.greedy_actions(obs).copy()
    for _ in range(3):  # large steps: the greedy actions must change, and the NumPy path must follow
        optimizer.zero_grad()
        (network(torch.from_numpy(obs))[:, 0] ** 2).mean().backward()
        optimizer.step()
    assert np.array_equal(network.greedy_actions(obs), torch_argmax())
    other = dqn.QNetwork(4, 5, (16, 16))
    network.load_state_dict(other.state_dict())
    assert np.array_equal(network.greedy_actions(obs), torch_argmax())
    assert not np.array_equal(before, torch_argmax()) or not np.array_equal(network.greedy_actions(obs), before)
    network.double().float()  # replaces the parameter tensors: the NumPy views must follow
    with torch.no_grad():
        network.network[0].weight.mul_(-1.0)
    assert np.array_equal(network.greedy_actions(obs), torch_argmax())


# --------------------------------------------------------------------------------------------------------- replay buffer

@pytest.mark.parametrize("num_envs", [1, 3])
def test_replay_buffer_wraps_around_and_keeps_the_newest_transitions(num_envs):
    buffer = dqn.ReplayBuffer(7, (2,), torch.device("cpu"))
    added = []
    for step in range(10):
        values = np.arange(num_envs, dtype=np.float32) + 10 * step
        obs = np.stack([values, -values], axis=1)
        buffer.add(obs, obs + 1, np.arange(num_envs), values, np.zeros(num_envs))
        added += list(values)
        assert buffer.size == min(len(added), 7)
    assert buffer.position == len(added) % 7
    assert len(added) > 7 and sorted(buffer.rewards.tolist()) == sorted(added[-7:])  # the oldest were overwritten, in order
    newest = (buffer.position - 1) % 7
    assert buffer.rewards[newest] == added[-1]
    assert np.array_equal(buffer.observations[:, 1], -buffer.observations[:, 0])
    assert np.array_equal(buffer.next_observations, buffer.observations + 1)


def test_replay_buffer_sample_shapes_and_dtypes():
    buffer = dqn.ReplayBuffer(100, (4,), torch.device("cpu"))
    for _ in range(10):
        buffer.add(np.ones((3, 4)), np.ones((3, 4)), np.array([0, 1, 1]), np.ones(3), np.array([0.0, 1.0, 0.0]))
    obs, actions, rewards, next_obs, terminations = buffer.sample(32, np.random.default_rng(0))
    assert obs.shape == next_obs.shape == (32, 4) and obs.dtype == next_obs.dtype == torch.float32
    assert actions.shape == (32,) and actions.dtype == torch.int64
    assert rewards.shape == terminations.shape == (32,) and rewards.dtype == terminations.dtype == torch.float32
    assert set(terminations.tolist()) <= {0.0, 1.0}


def test_replay_buffer_samples_only_filled_slots():
    buffer = dqn.ReplayBuffer(1000, (1,), torch.device("cpu"))
    buffer.add(np.full((2, 1), 5.0), np.zeros((2, 1)), np.zeros(2), np.ones(2), np.zeros(2))
    obs, *_ = buffer.sample(256, np.random.default_rng(0))
    assert torch.all(obs == 5.0)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_training_loop_stores_only_true_transitions(tmp_path, num_envs):
    """Run the real loop on StepCounter-v0 and check every stored transition: the reset step is never stored,
    terminations are stored, truncations (time limit 8) are stored with termination 0 and their true final obs."""
    args = fast_args(tmp_path, env_id="StepCounter-v0", num_envs=num_envs, total_timesteps=600, learning_starts=300,
                     batch_size=32, buffer_size=1000, save_replay=True, eval_episodes=1, eval_frequency=600)
    summary = dqn.main(args)
    checkpoint = torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True)
    replay = checkpoint["replay_buffer"]
    obs, next_obs = replay["observations"].numpy(), replay["next_observations"].numpy()
    terminations = replay["terminations"].numpy()
    assert len(obs) == summary["global_step"] == 600  # one stored transition per env step
    assert np.array_equal(next_obs[:, 0], obs[:, 0])  # same env instance
    assert np.array_equal(next_obs[:, 1], obs[:, 1])  # same episode: never the next episode's reset obs
    assert np.array_equal(next_obs[:, 2], obs[:, 2] + 1)  # one step later
    assert np.array_equal(terminations, next_obs[:, 3])  # terminated exactly when the env said so
    assert np.all(obs[:, 3] == 0)  # no terminal obs is ever used as a starting state
    truncated = (next_obs[:, 2] == 8) & (next_obs[:, 3] == 0)
    assert truncated.sum() > 5 and terminations.sum() > 20  # both kinds of episode end were exercised
    assert len(np.unique(obs[:, 0])) == num_envs


def test_same_step_vector_env_matches_gymnasium_sync_vector_env_step_for_step():
    """Three CartPoles with a 16-step time limit under the same random actions: every obs, reward, termination,
    truncation, final obs and episode statistic equals what gymnasium's SyncVectorEnv in SAME_STEP mode returns."""
    def thunk():
        return gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1", max_episode_steps=16))

    ours = dqn.SameStepVectorEnv([thunk] * 3)
    theirs = gym.vector.SyncVectorEnv([thunk] * 3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = ours.reset(seed=7)
    expected_obs, _ = theirs.reset(seed=7)
    assert np.array_equal(obs, expected_obs) and obs.dtype == expected_obs.dtype
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(300):
        actions = rng.integers(0, 2, size=3)
        step, expected = ours.step(actions), theirs.step(actions)
        for value, expected_value in zip(step[:4], expected[:4]):
            assert np.array_equal(value, expected_value) and value.dtype == expected_value.dtype
        infos, expected_infos = step[4], expected[4]
        assert set(infos) == set(expected_infos)
        if "_final_obs" in expected_infos:
            assert np.array_equal(infos["_final_obs"], expected_infos["_final_obs"])
            for i in np.flatnonzero(expected_infos["_final_obs"]):
                assert np.array_equal(infos["final_obs"][i], expected_infos["final_obs"][i])
            episode, expected_episode = infos["final_info"]["episode"], expected_infos["final_info"]["episode"]
            assert np.array_equal(infos["final_info"]["_episode"], expected_infos["final_info"]["_episode"])
            assert np.array_equal(episode["r"], expected_episode["r"])
            assert np.array_equal(episode["l"], expected_episode["l"])
        ends["terminated"] += int(step[2].sum())
        ends["truncated"] += int(step[3].sum())
    assert ends["terminated"] > 10 and ends["truncated"] > 10  # both kinds of episode end were exercised
    ours.close()
    theirs.close()
    assert ours.closed


# -------------------------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("overrides, message", [
    (dict(env_id="NoSuchEnv-v0"), "cannot make env 'NoSuchEnv-v0'"),
    (dict(env_id="no_such_package.module:Env-v0"), "cannot make env"),
    (dict(env_id="Pendulum-v1"), "needs a Discrete action space"),
    (dict(env_id="ImageObs-v0"), "needs a 1-D Box observation space"),
    (dict(env_id="DictObs-v0"), "needs a 1-D Box observation space"),
    (dict(batch_size=512, buffer_size=256), "--batch-size 512 is larger than --buffer-size 256"),
    (dict(learning_starts=3000), "--learning-starts 3000 must be < --total-timesteps"),
    (dict(gamma=1.5), "--gamma must be in [0, 1]"),
    (dict(gamma=-0.1), "--gamma must be in [0, 1]"),
    (dict(tau=0.0), "--tau must be in (0, 1]"),
    (dict(tau=1.5), "--tau must be in (0, 1]"),
    (dict(train_frequency=0), "--train-frequency must be >= 1"),
    (dict(target_network_frequency=-5), "--target-network-frequency must be >= 1"),
    (dict(eval_frequency=0), "--eval-frequency must be >= 1"),
    (dict(num_envs=0), "--num-envs must be >= 1"),
    (dict(resume="does/not/exist.pt"), "does not exist"),
])
def test_bad_input_gives_a_clear_error_before_any_work(tmp_path, overrides, message):
    with pytest.raises(dqn.ConfigError) as error:
        dqn.main(fast_args(tmp_path, **overrides))
    assert message in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_cli_reports_user_errors_in_one_line_without_traceback(tmp_path):
    result = run_script([sys.executable, "dqn.py", "--env-id", "Pendulum-v1", "--runs-dir", str(tmp_path / "runs")])
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: dqn.py needs a Discrete action space") and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_cuda_without_a_gpu_warns_and_uses_the_cpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    summary = dqn.main(fast_args(tmp_path, cuda=True, total_timesteps=600, learning_starts=200, batch_size=32))
    assert "CUDA is not available; using the CPU" in capsys.readouterr().err
    assert summary["global_step"] == 600


def test_resume_refuses_a_checkpoint_from_another_env_or_script(tmp_path):
    summary = dqn.main(fast_args(tmp_path, total_timesteps=600, learning_starts=200, batch_size=32))
    checkpoint_path = Path(summary["run_dir"]) / "checkpoint.pt"
    with pytest.raises(dqn.ConfigError, match="was trained on CartPole-v1, not Acrobot-v1"):
        dqn.main(fast_args(tmp_path, env_id="Acrobot-v1", resume=str(checkpoint_path)))
    other = torch.load(checkpoint_path, weights_only=True)
    other["script"] = "dqn_atari"
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(dqn.ConfigError, match="is not a dqn.py checkpoint .it comes from dqn_atari"):
        dqn.main(fast_args(tmp_path, resume=str(tmp_path / "other.pt")))


def test_truncated_or_corrupted_checkpoint_gives_a_clear_error(tmp_path):
    summary = dqn.main(fast_args(tmp_path, total_timesteps=600, learning_starts=200, batch_size=32))
    data = (Path(summary["run_dir"]) / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    for name in ["truncated.pt", "garbage.pt"]:
        with pytest.raises(dqn.ConfigError, match="truncated or corrupted"):
            dqn.main(fast_args(tmp_path, resume=str(tmp_path / name)))


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    dqn.save_checkpoint(path, {"script": "dqn", "env_id": "CartPole-v1", "global_step": 1})

    def crash_half_way(state, file):
        file.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        dqn.save_checkpoint(path, {"script": "dqn", "env_id": "CartPole-v1", "global_step": 2})
    monkeypatch.undo()
    assert dqn.load_checkpoint(str(path), "CartPole-v1")["global_step"] == 1


# --------------------------------------------------------------------------------------------------------- runs and files

def test_smoke_run_writes_args_metrics_and_summary(tmp_path):
    summary = dqn.main(fast_args(tmp_path, seed=4))
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("CartPole-v1__dqn__4__")
    assert json.loads((run_dir / "args.json").read_text())["seed"] == 4
    names = {name for _, name, _ in read_metrics(run_dir)}
    assert {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/SPS", "losses/td_loss",
            "losses/q_values", "eval/episodic_return"} <= names
    assert all(np.isfinite(value) for _, _, value in read_metrics(run_dir))
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["global_step"] == 3000 and saved["status"] == "finished" and len(saved["eval_returns"]) == 2
    assert all(9 <= value <= 500 for value in saved["eval_returns"])  # CartPole returns
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "best.pt").exists()


def test_same_seed_on_cpu_gives_identical_metrics(tmp_path):
    runs = [dqn.main(fast_args(tmp_path / str(i), seed=7)) for i in range(2)]
    first, second = ([row for row in read_metrics(run["run_dir"]) if row[1] != "charts/SPS"] for run in runs)
    assert len(first) > 50 and first == second
    different = dqn.main(fast_args(tmp_path / "other", seed=8))
    assert [row for row in read_metrics(different["run_dir"]) if row[1] != "charts/SPS"] != first


def test_eval_checkpoint_reproduces_the_evaluation_of_the_saved_policy(tmp_path):
    summary = dqn.main(fast_args(tmp_path))
    checkpoint = str(Path(summary["run_dir"]) / "checkpoint.pt")
    first = dqn.main(dqn.Args(eval_checkpoint=checkpoint, eval_episodes=3, seed=5))
    second = dqn.main(dqn.Args(eval_checkpoint=checkpoint, eval_episodes=3, seed=5))
    assert first["eval_returns"] == second["eval_returns"] and len(first["eval_returns"]) == 3
    assert first["global_step"] == 3000


def test_resume_continues_to_the_same_step_count_and_keeps_learning(tmp_path):
    first = dqn.main(fast_args(tmp_path, total_timesteps=2000, save_replay=True))
    checkpoint_path = Path(first["run_dir"]) / "checkpoint.pt"
    saved = torch.load(checkpoint_path, weights_only=True)
    assert saved["global_step"] == 2000
    resumed = dqn.main(fast_args(tmp_path, total_timesteps=4000, resume=str(checkpoint_path)))
    assert resumed["run_dir"] == first["run_dir"] and resumed["global_step"] == 4000
    rows = read_metrics(first["run_dir"])
    losses_after = [step for step, name, _ in rows if name == "losses/td_loss" and step > 2000]
    assert len(losses_after) >= 2  # it trained after resuming (200 updates, a log every 100)
    steps = [step for step, name, _ in rows if name == "eval/episodic_return"]
    assert steps == sorted(steps) and steps[-1] == 4000
    after = torch.load(checkpoint_path, weights_only=True)
    assert not torch.equal(after["q_network"]["network.0.weight"], saved["q_network"]["network.0.weight"])


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    runs_dir = tmp_path / "runs"
    command = [sys.executable, "dqn.py", "--total-timesteps", "200000", "--learning-starts", "500",
               "--eval-frequency", "100000", "--runs-dir", str(runs_dir)]
    # output to files, not pipes: an undrained pipe could block the child before it sees the signal
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        # a test run started in the background (`cmd &`, as CI may be) has SIGINT ignored, and a child would inherit
        # that; give the child the default disposition, so Python turns Ctrl-C into KeyboardInterrupt as in a terminal
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out,
                                   stderr=err, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 240
        while time.time() < deadline and not any("losses/td_loss" in path.read_text()
                                                  for path in runs_dir.glob("*/metrics.csv")):
            time.sleep(0.2)  # wait until it is training
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=240)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"no exit after SIGINT; stderr: {(tmp_path / 'err.txt').read_text()[-2000:]}")
    stderr = (tmp_path / "err.txt").read_text()
    assert process.returncode == 0, stderr
    run_dir = next(runs_dir.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "--resume" in stderr
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"]
    assert step == summary["global_step"] > 500
    result = run_script([sys.executable, "dqn.py", "--resume", str(run_dir / "checkpoint.pt"),
                         "--total-timesteps", str(step + 1000), "--eval-episodes", "2"])
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == step + 1000


def test_the_file_copied_alone_runs_help_and_a_short_training(tmp_path):
    shutil.copy(ROOT / "dqn.py", tmp_path / "dqn.py")
    help_result = run_script([sys.executable, "dqn.py", "--help"], cwd=tmp_path)
    assert help_result.returncode == 0 and "--target-network-frequency" in help_result.stdout
    assert "env steps between target network updates" in help_result.stdout
    result = run_script([sys.executable, "dqn.py", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "final evaluation" in result.stdout
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1


def test_wandb_offline_produces_a_local_run(tmp_path):
    result = run_script([sys.executable, "dqn.py", *FAST, "--track", "--runs-dir", str(tmp_path / "runs")],
                        env_extra={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr
    offline_runs = list((tmp_path / "runs").glob("*/wandb/offline-run-*"))
    assert len(offline_runs) == 1
    assert any(offline_runs[0].glob("*.wandb"))


def test_every_flag_the_readme_mentions_for_dqn_exists():
    readme = (ROOT / "README.md").read_text()
    flags = set()
    for line in readme.splitlines():
        if "python dqn.py" in line:
            flags |= set(re.findall(r"--([a-z][a-z0-9-]*)", line.split("#")[0]))
    known = {field.replace("_", "-") for field in dqn.Args.__dataclass_fields__}
    known |= {"no-" + name for name in known} | {"help"}
    assert flags and flags <= known, flags - known


def test_eval_checkpoint_on_the_command_line_takes_env_and_network_from_the_checkpoint(tmp_path):
    summary = dqn.main(fast_args(tmp_path, env_id="Acrobot-v1", hidden_sizes=(16,), total_timesteps=600,
                                 learning_starts=200, batch_size=32, eval_episodes=1))
    result = run_script([sys.executable, "dqn.py", "--eval-checkpoint", str(Path(summary["run_dir"]) / "best.pt"),
                         "--eval-episodes", "2"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Acrobot-v1: 2 episodes, return")


# ------------------------------------------------------------------------------------------------------------- learning

def test_default_config_solves_cartpole(tmp_path):
    summary = dqn.main(dqn.Args(seed=1, runs_dir=str(tmp_path / "runs"), save_model=False))
    assert summary["eval_mean"] >= 475, summary
