"""The scripts repeat their shared building blocks on purpose (each file is the whole program); these tests make sure
the copies never drift apart: a fix in one copy must be made in all."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# blocks every script shares with dqn.py
SHARED_BY_ALL = ["ConfigError", "linear_schedule", "epsilon_greedy", "td_target", "update_target", "multiples_passed",
                 "evaluate", "save_checkpoint", "load_checkpoint", "RunLogger", "truncate_metrics", "choose_device",
                 "seed_everything", "cli"]
# blocks the vector-observation scripts also share
SHARED_BY_VECTOR_SCRIPTS = ["check_args", "env_spaces", "make_env", "QNetwork", "ReplayBuffer"]
# the lean vector env: every script except dqn_atari.py (which also offers gymnasium's AsyncVectorEnv)
SHARED_VECTOR_ENV = ["SameStepVectorEnv"]

PAIRS = [("dqn_lunar.py", SHARED_BY_ALL + SHARED_BY_VECTOR_SCRIPTS + SHARED_VECTOR_ENV),
         ("dqn_atari.py", SHARED_BY_ALL), ("double_dueling_per_dqn.py", SHARED_BY_ALL + SHARED_VECTOR_ENV)]


def top_level_blocks(path: Path) -> dict[str, str]:
    source = path.read_text()
    tree = ast.parse(source)
    return {node.name: ast.get_source_segment(source, node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def test_dqn_defines_every_shared_block():
    blocks = top_level_blocks(ROOT / "dqn.py")
    assert set(SHARED_BY_ALL + SHARED_BY_VECTOR_SCRIPTS + SHARED_VECTOR_ENV) <= set(blocks)


@pytest.mark.parametrize("script, names", PAIRS, ids=[script for script, _ in PAIRS])
def test_shared_blocks_are_identical_to_dqn(script, names):
    if not (ROOT / script).exists():
        pytest.skip(f"{script} does not exist yet")
    reference, other = top_level_blocks(ROOT / "dqn.py"), top_level_blocks(ROOT / script)
    missing = [name for name in names if name not in other]
    drifted = [name for name in names if name in other and other[name] != reference[name]]
    assert not missing and not drifted, f"{script}: missing {missing}, differs from dqn.py: {drifted}"
