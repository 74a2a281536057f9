"""Tests of dqn_lunar.py: the landing-rate maths, a smoke run on the real Box2D LunarLander-v3, evaluation-only mode
reproducing the training run's own final evaluation, refusal of dqn.py checkpoints, the blocks shared with dqn.py
staying byte-identical, and the training loop differing from dqn.py's only by the landing rate."""

import ast
import csv
import difflib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import dqn
import dqn_lunar
from conftest import ROOT, run_script

# every top-level function and class both scripts have; each must be the same source in both files
SHARED_BLOCKS = ["ConfigError", "check_args", "env_spaces", "make_env", "SameStepVectorEnv", "QNetwork", "ReplayBuffer",
                 "linear_schedule", "epsilon_greedy", "td_target", "update_target", "multiples_passed", "evaluate",
                 "save_checkpoint", "load_checkpoint", "RunLogger", "truncate_metrics", "choose_device",
                 "seed_everything", "evaluate_checkpoint", "cli"]
# the blocks that are meant to differ: the defaults, and the training loop that logs the landing rate
DIFFERENT_BLOCKS = ["Args", "main"]


def fast_args(tmp_path: Path, **overrides) -> dqn_lunar.Args:
    values = dict(total_timesteps=3000, learning_starts=1000, eval_frequency=1500, eval_episodes=3,
                  runs_dir=str(tmp_path / "runs"))
    return dqn_lunar.Args(**{**values, **overrides})


def read_metrics(run_dir) -> list[tuple[int, str, float]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [(int(row["global_step"]), row["name"], float(row["value"])) for row in rows]


def top_level_blocks(path: Path) -> dict[str, str]:
    source = path.read_text()
    return {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> dict:
    """One short training run on the real LunarLander-v3, shared by the tests that read its files."""
    return dqn_lunar.main(fast_args(tmp_path_factory.mktemp("lunar"), seed=3))


# ---------------------------------------------------------------------------------------------------------------- maths

def test_success_rate_is_the_fraction_of_returns_at_or_above_200():
    assert dqn_lunar.LANDED_RETURN == 200.0
    returns = [250.3, 200.0, 199.99, -120.0, 310.0, 12.5, 200.01, -0.5]  # 200.0 itself counts as a landing
    assert dqn_lunar.success_rate(returns) == pytest.approx(4 / 8)
    assert dqn_lunar.success_rate([199.0] * 5) == 0.0
    assert dqn_lunar.success_rate([201.0] * 3) == 1.0
    assert dqn_lunar.success_rate([-50.0, 100.0], threshold=0.0) == 0.5


# --------------------------------------------------------------------------------------------------------- shared code

def test_shared_blocks_are_identical_to_dqn_py():
    ours, theirs = top_level_blocks(ROOT / "dqn_lunar.py"), top_level_blocks(ROOT / "dqn.py")
    drifted = [name for name in SHARED_BLOCKS if ours.get(name) != theirs.get(name)]
    assert not drifted, f"dqn_lunar.py differs from dqn.py in {drifted}: copy dqn.py's version"
    # a block dqn.py gains later must be copied here, and then listed as shared or as meant to differ
    assert set(theirs) <= set(ours), f"dqn.py has blocks dqn_lunar.py lacks: {set(theirs) - set(ours)}"
    assert set(ours) & set(theirs) == set(SHARED_BLOCKS) | set(DIFFERENT_BLOCKS)


def test_training_loop_differs_from_dqn_py_only_by_the_landing_rate():
    ours, theirs = top_level_blocks(ROOT / "dqn_lunar.py")["main"], top_level_blocks(ROOT / "dqn.py")["main"]
    diff = [line for line in difflib.ndiff(theirs.splitlines(), ours.splitlines()) if line[:2] in ("- ", "+ ")]
    removed = [line[2:].strip() for line in diff if line.startswith("- ")]
    added = [line[2:].strip() for line in diff if line.startswith("+ ")]
    # dqn.py's lines that dqn_lunar.py replaces: the eval-only return, and the end of the evaluation's print
    assert removed == ["return evaluate_checkpoint(args)", 'f"over {len(returns)} episodes", flush=True)'], removed
    landing_rate = ("success_rate", "LANDED_RETURN", "summary = evaluate_checkpoint(args)", "return summary",
                    'f"{len(eval_returns)} episodes")')
    assert added and all(any(part in line for part in landing_rate) for line in added), added


def test_defaults_are_lunar_lander_and_pass_the_argument_checks():
    args = dqn_lunar.Args()
    assert args.env_id == "LunarLander-v3" and args.eval_episodes == 20
    dqn_lunar.check_args(args)
    assert dqn_lunar.env_spaces(args.env_id) == ((8,), 4)


# --------------------------------------------------------------------------------------------------------- runs and files

def test_smoke_run_writes_args_metrics_and_summary_with_the_landing_rate(trained_run):
    run_dir = Path(trained_run["run_dir"])
    assert run_dir.name.startswith("LunarLander-v3__dqn_lunar__3__")
    assert json.loads((run_dir / "args.json").read_text())["env_id"] == "LunarLander-v3"
    rows = read_metrics(run_dir)
    names = {name for _, name, _ in rows}
    assert {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/SPS", "losses/td_loss",
            "losses/q_values", "eval/episodic_return", "eval/episodic_return_std", "eval/success_rate"} <= names
    assert all(np.isfinite(value) for _, _, value in rows)
    # one landing rate per evaluation, logged at the same step as the evaluation's return
    eval_steps = [step for step, name, _ in rows if name == "eval/episodic_return"]
    rates = [(step, value) for step, name, value in rows if name == "eval/success_rate"]
    assert [step for step, _ in rates] == eval_steps == [1500, 3000]
    assert all(0.0 <= value <= 1.0 for _, value in rates)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 3000 and len(summary["eval_returns"]) == 3
    assert all(-1000 < value < 400 for value in summary["eval_returns"])  # LunarLander returns, not CartPole's
    assert summary["eval_success_rate"] == dqn_lunar.success_rate(summary["eval_returns"]) == rates[-1][1]
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "best.pt").exists()


def test_eval_checkpoint_reproduces_the_training_runs_final_evaluation(trained_run):
    checkpoint = str(Path(trained_run["run_dir"]) / "checkpoint.pt")
    # the training loop evaluates with seed + 100_000 + global_step; the same seed gives the same episodes
    final_eval_seed = 3 + 100_000 + trained_run["global_step"]
    evaluation = dqn_lunar.main(dqn_lunar.Args(eval_checkpoint=checkpoint, eval_episodes=3, seed=final_eval_seed))
    assert evaluation["global_step"] == 3000
    assert evaluation["eval_returns"] == trained_run["eval_returns"]
    assert evaluation["eval_success_rate"] == trained_run["eval_success_rate"]
    other_seed = dqn_lunar.main(dqn_lunar.Args(eval_checkpoint=checkpoint, eval_episodes=3, seed=1))
    assert other_seed["eval_returns"] != trained_run["eval_returns"]  # the seed matters: the match is no accident


def test_eval_checkpoint_prints_return_and_landing_rate(trained_run, capsys):
    checkpoint = str(Path(trained_run["run_dir"]) / "best.pt")
    dqn_lunar.main(dqn_lunar.Args(eval_checkpoint=checkpoint, eval_episodes=2))
    output = capsys.readouterr().out
    assert re.search(r"LunarLander-v3: 2 episodes, return -?\d+\.\d\d ± \d+\.\d\d", output), output
    assert re.search(r"landing rate \(return >= 200\): \d+%", output), output


def test_a_dqn_py_cartpole_checkpoint_is_refused_with_a_clear_message(tmp_path):
    cartpole = dqn.main(dqn.Args(total_timesteps=700, learning_starts=500, eval_frequency=700, eval_episodes=1,
                                 runs_dir=str(tmp_path / "runs")))
    checkpoint = str(Path(cartpole["run_dir"]) / "checkpoint.pt")
    # refused for coming from dqn.py, even when the env matches
    for env_id in ["LunarLander-v3", "CartPole-v1"]:
        with pytest.raises(dqn_lunar.ConfigError, match=r"is not a dqn_lunar\.py checkpoint \(it comes from dqn\)"):
            dqn_lunar.main(dqn_lunar.Args(eval_checkpoint=checkpoint, env_id=env_id))
    with pytest.raises(dqn_lunar.ConfigError, match=r"is not a dqn_lunar\.py checkpoint"):
        dqn_lunar.main(fast_args(tmp_path, resume=checkpoint))
    result = run_script([sys.executable, "dqn_lunar.py", "--eval-checkpoint", checkpoint])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {checkpoint!r} is not a dqn_lunar.py checkpoint (it comes from dqn)"
    # nothing written for the refused runs: the only run directory is dqn.py's
    assert [path.name.split("__")[0] for path in (tmp_path / "runs").iterdir()] == ["CartPole-v1"]


def test_every_flag_the_readme_mentions_for_dqn_lunar_exists():
    readme = (ROOT / "README.md").read_text()
    flags = set()
    for line in readme.splitlines():
        if "python dqn_lunar.py" in line:
            flags |= set(re.findall(r"--([a-z][a-z0-9-]*)", line.split("#")[0]))
    known = {field.replace("_", "-") for field in dqn_lunar.Args.__dataclass_fields__}
    known |= {"no-" + name for name in known} | {"help"}
    assert flags and flags <= known, flags - known
