"""The algorithm's small functions that several scripts share, above the harness line, must not drift apart: a fix in
one copy is made in all (the harness below the line is compared whole by tests/test_harness.py)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the functions each script shares with dqn.py, word for word (dqn_lunar.py shares all but its defaults: its own test)
SHARED_WITH_DQN = {
    "dqn_atari.py": ["linear_schedule", "epsilon_greedy", "final_observations", "td_target", "update_target"],
    "double_dueling_per_dqn.py": ["linear_schedule", "epsilon_greedy", "final_observations", "update_target",
                                  "float32_observations"],
    "dqn_lunar.py": ["float32_observations", "make_env", "QNetwork", "ReplayBuffer"],
}


def top_level_blocks(path: Path) -> dict[str, str]:
    source = path.read_text()
    return {node.name: ast.get_source_segment(source, node) for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("script", list(SHARED_WITH_DQN))
def test_the_shared_algorithm_functions_are_identical_to_dqn_py(script):
    reference, other = top_level_blocks(ROOT / "dqn.py"), top_level_blocks(ROOT / script)
    missing = [name for name in SHARED_WITH_DQN[script] if name not in other]
    drifted = [name for name in SHARED_WITH_DQN[script] if name in other and other[name] != reference[name]]
    assert not missing and not drifted, f"{script}: missing {missing}, differs from dqn.py: {drifted}"


def test_the_frame_replay_of_both_atari_scripts_stacks_frames_the_same_way():
    atari, extended = top_level_blocks(ROOT / "dqn_atari.py"), top_level_blocks(ROOT / "double_dueling_per_dqn.py")

    def method(block: str, name: str) -> str:
        tree = ast.parse(block)
        node = next(item for item in tree.body[0].body if isinstance(item, ast.FunctionDef) and item.name == name)
        return ast.get_source_segment(block, node)

    for name in ("stack_slots", "start_episodes", "size"):
        assert method(atari["FrameReplayBuffer"], name) == method(extended["FrameReplayBuffer"], name), name
