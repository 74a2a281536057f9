"""Tests of dqn.py: the maths on hand-computed cases, the replay buffer, episode boundaries in the real training loop,
run files, determinism, evaluation of a checkpoint, resume, copying the file alone, wandb offline, and learning
CartPole."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dqn
from conftest import ROOT, read_metrics, run_script, train

FAST = ["--total-timesteps", "3000", "--learning-starts", "500", "--eval-frequency", "1500", "--eval-episodes", "2"]


def fast(tmp_path: Path, **overrides) -> dict:
    """A 3000-step CartPole run in tmp_path/runs: its summary."""
    values = dict(total_timesteps=3000, learning_starts=500, eval_frequency=1500, eval_episodes=2,
                  runs_dir=str(tmp_path / "runs"))
    return train(dqn, **{**values, **overrides})


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
    with torch.no_grad():
        online[0].weight.mul_(1e6)  # large and small values: a lerp that computed t + (p - t) would round them
    dqn.update_target(target, online, tau=1.0)
    for target_param, param in zip(target.parameters(), online.parameters()):
        assert torch.equal(target_param, param)


def test_soft_target_update_is_polyak_averaging():
    online, target = dqn.QNetwork(1, 1, (1,)), dqn.QNetwork(1, 1, (1,))
    with torch.no_grad():
        for param in online.parameters():
            param.fill_(2.0)
        for param in target.parameters():
            param.fill_(10.0)
    dqn.update_target(target, online, tau=0.25)  # 0.25 * 2 + 0.75 * 10 = 8
    assert all(torch.allclose(param, torch.full_like(param, 8.0)) for param in target.parameters())
    dqn.update_target(target, online, tau=0.5)  # 0.5 * 2 + 0.5 * 8 = 5
    assert all(torch.allclose(param, torch.full_like(param, 5.0)) for param in target.parameters())
    assert all(torch.equal(param, torch.full_like(param, 2.0)) for param in online.parameters())


def test_linear_schedule_endpoints():
    assert dqn.linear_schedule(1.0, 0.05, 1000, 0) == 1.0
    assert dqn.linear_schedule(1.0, 0.05, 1000, 500) == pytest.approx(0.525)
    assert dqn.linear_schedule(1.0, 0.05, 1000, 1000) == pytest.approx(0.05)
    assert dqn.linear_schedule(1.0, 0.05, 1000, 10**6) == pytest.approx(0.05)
    assert dqn.linear_schedule(1.0, 0.05, 0, 0) == 0.05  # exploration_fraction 0: no annealing


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_action_frequencies(epsilon, monkeypatch):
    """Each env explores with probability epsilon, then picks each of the n actions with probability 1/n; otherwise
    it takes its greedy action. With greedy action 3 of 5: P(3) = 1 - eps + eps/5, P(other) = eps/5."""
    rng, n_envs, n_actions, rounds = np.random.default_rng(0), 8, 5, 20_000
    calls = []

    def greedy(network, obs):
        calls.append(len(obs))
        return np.full(len(obs), 3, dtype=np.int64)

    monkeypatch.setattr(dqn, "greedy_actions", greedy)
    network = dqn.QNetwork(2, n_actions, (4,))
    actions = np.stack([dqn.epsilon_greedy(network, np.zeros((n_envs, 2), np.float32), epsilon, rng)
                        for _ in range(rounds)])  # [rounds, n_envs]
    assert actions.min() >= 0 and actions.max() < n_actions and np.issubdtype(actions.dtype, np.integer)
    expected = np.full(n_actions, epsilon / n_actions)
    expected[3] += 1 - epsilon
    frequencies = np.bincount(actions.ravel(), minlength=n_actions) / actions.size
    # 160k draws: the standard error of each frequency is at most 0.0013, so 0.006 is over 4 of them
    np.testing.assert_allclose(frequencies, expected, atol=0.006)
    if epsilon == 1.0:
        assert calls == []  # every env explores: no network call
    else:
        assert len(calls) > 0.99 * rounds and set(calls) == {n_envs}


def test_q_network_is_an_mlp_with_one_output_per_action():
    network = dqn.QNetwork(6, 3, (32, 16, 8))
    assert network(torch.zeros(5, 6)).shape == (5, 3) and network.n_actions == 3
    assert [layer.out_features for layer in network if isinstance(layer, torch.nn.Linear)] == [32, 16, 8, 3]


def test_final_observations_replace_the_reset_obs_of_finished_envs_only():
    next_obs = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], dtype=np.float32)
    assert dqn.final_observations(next_obs, {}) is next_obs
    final_obs = np.empty(3, dtype=object)  # as gymnasium batches it: None where no episode ended
    final_obs[1] = np.array([9.0, 9.0], dtype=np.float32)
    infos = {"_final_obs": np.array([False, True, False]), "final_obs": final_obs}
    real = dqn.final_observations(next_obs, infos)
    assert real.tolist() == [[0.0, 0.0], [9.0, 9.0], [2.0, 2.0]] and next_obs[1].tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------------------------------- replay buffer

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
    assert sorted(buffer.rewards.tolist()) == sorted(added[-7:])  # the oldest were overwritten
    assert buffer.rewards[(buffer.position - 1) % 7] == added[-1]
    assert np.array_equal(buffer.obs[:, 1], -buffer.obs[:, 0]) and np.array_equal(buffer.next_obs, buffer.obs + 1)


def test_replay_buffer_samples_batches_of_filled_slots_with_the_dtypes_of_the_update():
    buffer = dqn.ReplayBuffer(100, (4,), torch.device("cpu"))
    for _ in range(10):
        buffer.add(np.ones((3, 4)), np.ones((3, 4)), np.array([0, 1, 1]), np.ones(3), np.array([0.0, 1.0, 0.0]))
    batch = buffer.sample(32, np.random.default_rng(0))
    assert batch.obs.shape == batch.next_obs.shape == (32, 4) and batch.obs.dtype == torch.float32
    assert batch.actions.shape == (32,) and batch.actions.dtype == torch.int64
    assert batch.rewards.dtype == batch.terminations.dtype == torch.float32
    assert set(batch.terminations.tolist()) <= {0.0, 1.0}
    small = dqn.ReplayBuffer(1000, (1,), torch.device("cpu"))
    small.add(np.full((2, 1), 5.0), np.zeros((2, 1)), np.zeros(2), np.ones(2), np.zeros(2))
    assert torch.all(small.sample(256, np.random.default_rng(0)).obs == 5.0)  # never an empty slot
    restored = dqn.ReplayBuffer(1000, (4,), torch.device("cpu"))
    restored.load_state_dict(buffer.state_dict())
    assert restored.size == 30 and np.array_equal(restored.actions[:30], buffer.actions[:30])


@pytest.mark.parametrize("capacity", [4, 6, 8])
def test_a_saved_full_replay_loads_into_the_same_or_a_larger_one_and_goes_on_overwriting_the_oldest(capacity):
    saved = dqn.ReplayBuffer(4, (1,), torch.device("cpu"))
    for reward in range(6):  # 0..5 into 4 slots: [4, 5, 2, 3], the oldest (2) next to go
        saved.add(np.full((1, 1), reward), np.zeros((1, 1)), np.zeros(1), np.array([reward]), np.zeros(1))
    restored = dqn.ReplayBuffer(capacity, (1,), torch.device("cpu"))
    restored.load_state_dict(saved.state_dict())
    for reward in (6, 7, 8):
        restored.add(np.full((1, 1), reward), np.zeros((1, 1)), np.zeros(1), np.array([reward]), np.zeros(1))
    held = sorted(restored.rewards[:restored.size].tolist())
    assert held == list(range(9))[-min(capacity, 7):]  # the newest, never a slot that was not written
    assert np.array_equal(restored.obs[:restored.size, 0], restored.rewards[:restored.size])


@pytest.mark.parametrize("num_envs", [1, 3])
def test_training_loop_stores_only_true_transitions(tmp_path, num_envs):
    """Run the real loop on StepCounter-v0 and check every stored transition: the reset step is never stored,
    terminations are stored, truncations (time limit 8) are stored with termination 0 and their true final obs."""
    summary = fast(tmp_path, env_id="StepCounter-v0", num_envs=num_envs, total_timesteps=600, learning_starts=300,
                   batch_size=32, buffer_size=1000, save_replay=True, eval_episodes=1, eval_frequency=600)
    replay = torch.load(Path(summary["run_dir"]) / "replay.pt", weights_only=True)["replay"]
    obs, next_obs, terminations = replay["obs"].numpy(), replay["next_obs"].numpy(), replay["terminations"].numpy()
    assert len(obs) == summary["global_step"] == 600  # one stored transition per env step
    assert np.array_equal(next_obs[:, 0], obs[:, 0])  # same env instance
    assert np.array_equal(next_obs[:, 1], obs[:, 1])  # same episode: never the next episode's reset obs
    assert np.array_equal(next_obs[:, 2], obs[:, 2] + 1)  # one step later
    assert np.array_equal(terminations, next_obs[:, 3])  # terminated exactly when the env said so
    assert np.all(obs[:, 3] == 0)  # no terminal obs is ever used as a starting state
    truncated = (next_obs[:, 2] == 8) & (next_obs[:, 3] == 0)
    assert truncated.sum() > 5 and terminations.sum() > 20  # both kinds of episode end were exercised
    assert len(np.unique(obs[:, 0])) == num_envs


# ------------------------------------------------------------------------------------------------------ runs and files

def test_smoke_run_writes_args_metrics_summary_and_checkpoints(tmp_path):
    summary = fast(tmp_path, seed=4)
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("CartPole-v1__dqn__4__")
    saved_args = json.loads((run_dir / "args.json").read_text())
    assert saved_args["seed"] == 4 and saved_args["learning_rate"] == 1e-3  # algorithm and run options, flat
    rows = read_metrics(run_dir)
    assert {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/SPS", "losses/td_loss",
            "losses/q_values", "eval/episodic_return", "eval/episodic_return_std"} <= {name for _, name, _ in rows}
    assert all(np.isfinite(value) for _, _, value in rows)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["global_step"] == 3000 and saved["status"] == "finished" and len(saved["eval_returns"]) == 2
    assert all(9 <= value <= 500 for value in saved["eval_returns"])  # CartPole returns
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["script"] == "dqn" and checkpoint["global_step"] == 3000 and not checkpoint["replay_saved"]
    assert set(checkpoint["state"]) == {"q_network", "target_network", "optimizer"}
    assert (run_dir / "best.pt").exists() and not (run_dir / "replay.pt").exists()


def test_end_learning_rate_is_reached_linearly_at_the_last_step(tmp_path):
    """The checkpoints of the evaluations at steps 1500 and 3000 hold the optimizer's learning rate then."""
    summary = fast(tmp_path, learning_rate=1e-3, end_learning_rate=1e-4, eval_frequency=1500)
    run_dir = Path(summary["run_dir"])
    best = torch.load(run_dir / "best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for checkpoint in (best, last):  # 1e-3 + (1e-4 - 1e-3) * step / 3000
        expected = 1e-3 - 9e-4 * checkpoint["global_step"] / 3000
        assert checkpoint["state"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected)
    assert last["global_step"] == 3000


def test_same_seed_on_cpu_gives_identical_metrics(tmp_path):
    runs = [fast(tmp_path / str(i), seed=7) for i in range(2)]
    first, second = ([row for row in read_metrics(run["run_dir"]) if row[1] != "charts/SPS"] for run in runs)
    assert len(first) > 50 and first == second
    different = fast(tmp_path / "other", seed=8)
    assert [row for row in read_metrics(different["run_dir"]) if row[1] != "charts/SPS"] != first


def test_eval_checkpoint_reproduces_the_evaluation_and_writes_nothing(tmp_path):
    checkpoint = str(Path(fast(tmp_path)["run_dir"]) / "checkpoint.pt")
    before = sorted(path.name for path in Path(checkpoint).parent.iterdir())
    first = train(dqn, eval_checkpoint=checkpoint, eval_episodes=3, seed=5)
    second = train(dqn, eval_checkpoint=checkpoint, eval_episodes=3, seed=5)
    assert first["status"] == "evaluated" and first["eval_returns"] == second["eval_returns"]
    assert len(first["eval_returns"]) == 3 and first["global_step"] == 3000
    assert sorted(path.name for path in Path(checkpoint).parent.iterdir()) == before


def test_eval_checkpoint_on_the_command_line_takes_env_and_network_from_the_checkpoint(tmp_path):
    summary = fast(tmp_path, env_id="Acrobot-v1", hidden_sizes=(16,), total_timesteps=600, learning_starts=200,
                   batch_size=32, eval_episodes=1)
    result = run_script([sys.executable, "dqn.py", "--eval-checkpoint", str(Path(summary["run_dir"]) / "best.pt"),
                         "--eval-episodes", "2"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Acrobot-v1: 2 episodes, return")


def test_resume_continues_to_the_same_step_count_and_keeps_learning(tmp_path):
    first = fast(tmp_path, total_timesteps=2000, save_replay=True)
    checkpoint_path = Path(first["run_dir"]) / "checkpoint.pt"
    saved = torch.load(checkpoint_path, weights_only=True)
    assert saved["global_step"] == 2000
    resumed = fast(tmp_path, total_timesteps=4000, resume=str(checkpoint_path))
    assert resumed["run_dir"] == first["run_dir"] and resumed["global_step"] == 4000
    rows = read_metrics(first["run_dir"])
    assert len([step for step, name, _ in rows if name == "losses/td_loss" and step > 2000]) >= 2  # it trained on
    steps = [step for step, name, _ in rows if name == "eval/episodic_return"]
    assert steps == sorted(steps) and steps[-1] == 4000 and len(steps) == len(set(steps))  # no doubled rows
    after = torch.load(checkpoint_path, weights_only=True)
    assert not torch.equal(after["state"]["q_network"]["0.weight"], saved["state"]["q_network"]["0.weight"])


def test_resume_refuses_a_checkpoint_from_another_env_or_script(tmp_path):
    summary = fast(tmp_path, total_timesteps=600, learning_starts=200, batch_size=32)
    checkpoint_path = Path(summary["run_dir"]) / "checkpoint.pt"
    with pytest.raises(dqn.ConfigError, match="was trained on CartPole-v1, not Acrobot-v1"):
        fast(tmp_path, env_id="Acrobot-v1", resume=str(checkpoint_path))
    other = torch.load(checkpoint_path, weights_only=True)
    other["script"] = "dqn_atari"
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(dqn.ConfigError, match="is not a dqn.py checkpoint .it comes from dqn_atari"):
        fast(tmp_path, resume=str(tmp_path / "other.pt"))
    with pytest.raises(dqn.ConfigError, match="does not fit these settings"):
        fast(tmp_path, hidden_sizes=(7,), resume=str(checkpoint_path))


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
    assert dqn.read_checkpoint(str(path))[1]["global_step"] == 1


def test_cuda_without_a_gpu_warns_and_uses_the_cpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    summary = fast(tmp_path, cuda=True, total_timesteps=600, learning_starts=200, batch_size=32)
    assert "CUDA is not available; using the CPU" in capsys.readouterr().err
    assert summary["global_step"] == 600


def test_the_file_copied_alone_runs_help_and_a_short_training(tmp_path):
    shutil.copy(ROOT / "dqn.py", tmp_path / "dqn.py")
    help_result = run_script([sys.executable, "dqn.py", "--help"], cwd=tmp_path)
    assert help_result.returncode == 0 and "--target-network-frequency" in help_result.stdout
    result = run_script([sys.executable, "dqn.py", *FAST], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "final evaluation" in result.stdout
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1


def test_wandb_offline_produces_a_local_run(tmp_path):
    result = run_script([sys.executable, "dqn.py", *FAST, "--track", "--runs-dir", str(tmp_path / "runs")],
                        env_extra={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr
    offline_runs = list((tmp_path / "runs").glob("*/wandb/offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].glob("*.wandb"))


# ------------------------------------------------------------------------------------------------------------- learning

def test_default_config_solves_cartpole(tmp_path):
    summary = train(dqn, seed=1, runs_dir=str(tmp_path / "runs"), save_model=False)
    assert summary["eval_mean"] >= 475, summary


def test_capture_video_records_each_evaluation_and_prints_no_display_error_or_overwrite_warning(tmp_path):
    """--capture-video on a machine without a display: pygame must not print SDL's 'error: XDG_RUNTIME_DIR ...' (read
    as the script's own error), nor gymnasium warn of 'overwriting' videos when each evaluation writes a new file."""
    env = {key: value for key, value in os.environ.items() if key not in ("SDL_VIDEODRIVER", "DISPLAY")}
    result = subprocess.run([sys.executable, str(ROOT / "dqn.py"), "--total-timesteps", "1000", "--learning-starts",
                             "500", "--eval-frequency", "500", "--eval-episodes", "1", "--capture-video",
                             "--runs-dir", str(tmp_path)], env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr and "Overwriting" not in result.stderr, result.stderr
    videos = sorted(path.name for path in tmp_path.glob("*/videos/*.mp4"))
    assert videos == ["eval-step1000-episode-0.mp4", "eval-step500-episode-0.mp4"]
