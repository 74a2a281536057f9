"""Tests of dqn_lunar.py: the landing-rate maths, its diff to dqn.py (defaults, docstring, the landing rate and nothing
else), a smoke run on the real Box2D LunarLander-v3, evaluation-only mode reproducing the training run's own final
evaluation, and refusal of dqn.py checkpoints."""

import difflib
import json
import math
import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn
import dqn_lunar
from conftest import ROOT, read_metrics, run_script, settings, train


def fast(tmp_path: Path, **overrides) -> dict:
    values = dict(total_timesteps=3000, learning_starts=1000, eval_frequency=1500, eval_episodes=3,
                  runs_dir=str(tmp_path / "runs"))
    return train(dqn_lunar, **{**values, **overrides})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> dict:
    """One short training run on the real LunarLander-v3, shared by the tests that read its files."""
    return fast(tmp_path_factory.mktemp("lunar"), seed=3)


def greedy_returns(checkpoint: Path, episodes: int, seed: int) -> list[float]:
    """The undiscounted returns of `episodes` greedy episodes of a checkpoint's network on a plain LunarLander-v3, the
    first reset with `seed` and the others unseeded, as evaluate() plays them: computed here without the script."""
    saved = torch.load(checkpoint, weights_only=True)
    network = dqn_lunar.QNetwork(8, 4, tuple(saved["args"]["hidden_sizes"]))
    network.load_state_dict(saved["state"]["q_network"])
    env, returns = gym.make("LunarLander-v3"), []
    obs, _ = env.reset(seed=seed)
    while len(returns) < episodes:
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = int(network(torch.as_tensor(obs, dtype=torch.float32)[None]).argmax(dim=1)[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
        obs, _ = env.reset()
    env.close()
    return returns


def test_the_landing_rate_is_the_fraction_of_returns_at_or_above_200():
    returns = [250.3, 200.0, 199.99, -120.0, 310.0, 12.5, 200.01, -0.5]  # 200.0 itself counts as a landing
    assert dqn_lunar.landing_rate(returns) == {"success_rate": pytest.approx(4 / 8)}
    assert dqn_lunar.landing_rate([199.0] * 5)["success_rate"] == 0.0
    assert dqn_lunar.landing_rate([201.0] * 3)["success_rate"] == 1.0


def test_dqn_lunar_differs_from_dqn_only_by_defaults_docstring_and_the_landing_rate():
    ours, theirs = (ROOT / "dqn_lunar.py").read_text().splitlines(), (ROOT / "dqn.py").read_text().splitlines()
    matcher = difflib.SequenceMatcher(None, theirs, ours, autojunk=False)  # as `diff dqn.py dqn_lunar.py` counts
    changed = [f"-{line}" for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal" for line in theirs[i1:i2]]
    changed += [f"+{line}" for tag, _, _, j1, j2 in matcher.get_opcodes() if tag != "equal" for line in ours[j1:j2]]
    assert len(changed) <= 40, f"{len(changed)} changed lines"
    docstring_end = next(i for i, line in enumerate(ours) if i > 0 and line.startswith('"""'))
    for line in changed:
        text = line[1:]
        in_docstring = text in ours[:docstring_end] or text in theirs[:docstring_end]
        a_default = re.match(r"    \w+: [\w\[\], .\"]+ = .+", text) or text.startswith("RUN_DEFAULTS = ")
        landing = "landing_rate" in text or "success_rate" in text or "200" in text or text.strip() == ""
        assert in_docstring or a_default or landing, f"an unexpected difference: {line}"


def test_defaults_are_lunar_lander_and_pass_the_checks(tmp_path):
    args, run_args = settings(dqn_lunar, runs_dir=str(tmp_path))
    assert args.env_id == "LunarLander-v3" and run_args.eval_episodes == 20 and run_args.eval_frequency == 25_000
    dqn_lunar.open_run(args, run_args)  # raises on a setting it cannot use


def test_smoke_run_logs_the_landing_rate_with_every_evaluation(trained_run):
    run_dir = Path(trained_run["run_dir"])
    assert run_dir.name.startswith("LunarLander-v3__dqn_lunar__3__")
    assert json.loads((run_dir / "args.json").read_text())["env_id"] == "LunarLander-v3"
    rows = read_metrics(run_dir)
    assert {"charts/episodic_return", "charts/epsilon", "losses/td_loss", "eval/episodic_return",
            "eval/success_rate"} <= {name for _, name, _ in rows}
    assert all(np.isfinite(value) for _, _, value in rows)
    eval_steps = [step for step, name, _ in rows if name == "eval/episodic_return"]
    rates = [(step, value) for step, name, value in rows if name == "eval/success_rate"]
    assert [step for step, _ in rates] == eval_steps == [1500, 3000]
    # each rate counts the 3 episodes at or above 200: k / 3. No one of n returns of mean m and std s (np.std) lies
    # beyond m +- s * sqrt(n - 1): where the logged m + s * sqrt(2) < 200 none landed, where m - s * sqrt(2) >= 200 all
    logged = {(step, name): value for step, name, value in rows}
    for step, rate in rates:
        landings, mean = round(rate * 3), logged[step, "eval/episodic_return"]
        spread = logged[step, "eval/episodic_return_std"] * math.sqrt(2)
        assert rate == pytest.approx(landings / 3, abs=1e-6), (step, rate)
        assert landings == 0 or mean + spread >= 199.99, (step, rate)  # 0.01: the logged values are rounded
        assert landings == 3 or mean - spread < 200.01, (step, rate)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 3000 and len(summary["eval_returns"]) == 3
    assert logged[3000, "eval/episodic_return"] == pytest.approx(np.mean(summary["eval_returns"]), rel=1e-5)
    assert logged[3000, "eval/episodic_return_std"] == pytest.approx(np.std(summary["eval_returns"]), rel=1e-5)
    # the returns are those of LunarLander-v3 episodes, not CartPole's nor anything else in (-1000, 400): the sums of
    # the rewards of 3 greedy episodes of the final network, the evaluation seeded with seed + 100_000 + global_step
    assert summary["eval_returns"] == pytest.approx(greedy_returns(run_dir / "checkpoint.pt", 3, 3 + 100_000 + 3000),
                                                    rel=1e-9)
    assert summary["eval_success_rate"] == dqn_lunar.landing_rate(summary["eval_returns"])["success_rate"] \
        == rates[-1][1]


def test_eval_checkpoint_reproduces_the_training_runs_final_evaluation(trained_run, capsys):
    checkpoint = str(Path(trained_run["run_dir"]) / "checkpoint.pt")
    # the training loop evaluates with seed + 100_000 + global_step; the same seed gives the same episodes
    evaluation = train(dqn_lunar, eval_checkpoint=checkpoint, eval_episodes=3, seed=3 + 100_000 + 3000)
    assert evaluation["global_step"] == 3000 and evaluation["eval_returns"] == trained_run["eval_returns"]
    assert evaluation["eval_success_rate"] == trained_run["eval_success_rate"]
    output = capsys.readouterr().out
    assert re.search(r"LunarLander-v3: 3 episodes, return -?\d+\.\d\d ± \d+\.\d\d, success_rate [\d.]+ \(checkpoint",
                     output), output
    other_seed = train(dqn_lunar, eval_checkpoint=checkpoint, eval_episodes=3, seed=1)
    assert other_seed["eval_returns"] != trained_run["eval_returns"]  # the seed matters: the match is no accident


def test_a_dqn_py_cartpole_checkpoint_is_refused_with_a_clear_message(tmp_path):
    cartpole = train(dqn, total_timesteps=700, learning_starts=500, eval_frequency=700, eval_episodes=1,
                     runs_dir=str(tmp_path / "runs"))
    checkpoint = str(Path(cartpole["run_dir"]) / "checkpoint.pt")
    for env_id in ["LunarLander-v3", "CartPole-v1"]:  # refused for coming from dqn.py, even when the env matches
        with pytest.raises(dqn_lunar.ConfigError, match=r"is not a dqn_lunar\.py checkpoint \(it comes from dqn\)"):
            train(dqn_lunar, eval_checkpoint=checkpoint, env_id=env_id)
    with pytest.raises(dqn_lunar.ConfigError, match=r"is not a dqn_lunar\.py checkpoint"):
        fast(tmp_path, resume=checkpoint)
    result = run_script([sys.executable, "dqn_lunar.py", "--eval-checkpoint", checkpoint])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: ") and result.stderr.count("\n") == 1
    assert [path.name.split("__")[0] for path in (tmp_path / "runs").iterdir()] == ["CartPole-v1"]  # nothing else

