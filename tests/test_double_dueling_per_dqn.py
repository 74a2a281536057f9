"""Tests of double_dueling_per_dqn.py: the Double DQN target, the dueling aggregation, the sum-tree (property-based),
prioritized sampling and importance weights, priority updates in the real training loop, n-step returns at episode
ends, the frame replay's priorities on Atari, bad input, and smoke runs on LunarLander-v3 and real Pong."""

import json
import math
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import double_dueling_per_dqn as ddp
import dqn
from conftest import StepCounterEnv, read_metrics, run_script, settings, train

GAMMA = 0.9
SMALL = dict(env_id="CartPole-v1", total_timesteps=1000, learning_starts=200, batch_size=32, buffer_size=2000,
             hidden_sizes=(32, 32), gradient_steps=1, eval_frequency=1000, eval_episodes=1)


def small(tmp_path: Path, **overrides) -> dict:
    """A small, fast run (CPU seconds, not minutes): its summary."""
    return train(ddp, **{**SMALL, "runs_dir": str(tmp_path / "runs"), **overrides})


def complete_indices(replay: ddp.FrameReplayBuffer) -> np.ndarray:
    """Every replay index of a complete transition whose obs frames are in the ring, enumerated from the ring."""
    indices = []
    for env in range(replay.num_envs):
        js = np.arange(replay.lowest_slots(np.array([env]))[0], replay.written[env] - 1)
        js = js[~replay.first[env, (js + 1) % replay.slots]]  # the last frame of an episode starts no transition
        complete = replay.windows(np.full(len(js), env), js)[1]
        indices += (env * replay.slots + js[complete] % replay.slots).tolist()
    return np.array(sorted(indices), dtype=np.int64)


# --------------------------------------------------------------------------------------------------------- Double DQN

def test_double_q_target_lets_the_online_network_pick_and_the_target_network_value():
    rewards, terminations = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0])
    next_q_online = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0], [0.0, 9.0, 0.0]])
    next_q_target = torch.tensor([[4.0, 1.0, 3.0], [2.0, 6.0, 0.0], [7.0, 0.0, 0.0]])
    # online argmax: actions 1, 0, 1 -> target values 1, 2 (and a terminated row: its reward only)
    double = ddp.double_q_target(rewards, terminations, next_q_online, next_q_target, 0.5)
    assert torch.allclose(double, torch.tensor([1.0 + 0.5 * 1.0, 0.0 + 0.5 * 2.0, 2.0]))
    # DQN's target takes the target network's own max: 4 and 6, larger than what Double DQN uses
    vanilla = ddp.td_target(rewards, terminations, next_q_target.amax(dim=1), 0.5)
    assert torch.allclose(vanilla, torch.tensor([3.0, 3.0, 2.0]))
    assert torch.all(double[:2] < vanilla[:2])


def test_double_q_target_equals_the_dqn_target_where_the_argmaxes_agree():
    generator = torch.Generator().manual_seed(0)
    next_q_online = torch.randn(64, 5, generator=generator)
    next_q_target = 3.0 * next_q_online + 1.0  # a monotone transform: the same argmax in every row
    rewards, terminations = torch.randn(64, generator=generator), (torch.rand(64, generator=generator) < 0.3).float()
    double = ddp.double_q_target(rewards, terminations, next_q_online, next_q_target, GAMMA)
    vanilla = ddp.td_target(rewards, terminations, next_q_target.amax(dim=1), GAMMA)
    assert torch.allclose(double, vanilla)
    shuffled = next_q_online[:, torch.randperm(5, generator=generator)]  # argmaxes now disagree in many rows
    differs = ddp.double_q_target(rewards, terminations, shuffled, next_q_target, GAMMA) != vanilla
    disagree = (shuffled.argmax(1) != next_q_target.argmax(1)) & (terminations == 0)
    assert disagree.sum() > 10 and torch.equal(differs, disagree)


def test_double_q_target_takes_a_discount_per_transition():
    # n-step transitions cut short by a truncation bootstrap with gamma^k for their own k
    target = ddp.double_q_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([[1.0], [1.0]]),
                                 torch.tensor([[10.0], [10.0]]), torch.tensor([0.5, 0.25]))
    assert torch.allclose(target, torch.tensor([6.0, 3.5]))


# ------------------------------------------------------------------------------------------------------------ dueling

def test_dueling_aggregation_on_hand_computed_values():
    values = torch.tensor([[2.0], [-1.0]])
    advantages = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    q_values = ddp.dueling_q_values(values, advantages)
    assert torch.allclose(q_values, torch.tensor([[1.0, 2.0, 3.0], [-3.0, -3.0, 3.0]]))
    assert torch.allclose(q_values.mean(dim=1, keepdim=True), values)  # V is recoverable: the mean of Q


@pytest.mark.parametrize("obs_shape", [(6,), (4, 84, 84)], ids=["mlp", "nature-cnn"])
def test_dueling_network_is_identifiable_and_its_greedy_action_is_the_advantage_argmax(obs_shape):
    torch.manual_seed(0)
    network = ddp.QNetwork(obs_shape, 5, (16, 16) if len(obs_shape) == 1 else (32,), dueling=True)
    obs = torch.randint(0, 256, (8, *obs_shape), dtype=torch.uint8) if len(obs_shape) == 3 else torch.randn(8, 6)
    with torch.no_grad():
        features = network.torso(obs.float() / 255.0 if len(obs_shape) == 3 else obs)
        values, advantages = network.value_head(features), network.advantage_head(features)  # [8, 1], [8, 5]
        q_values = network(obs)
    centred = advantages - advantages.mean(dim=1, keepdim=True)
    assert torch.allclose(centred.mean(dim=1), torch.zeros(8), atol=1e-6)  # advantages of zero mean
    assert torch.allclose(q_values - q_values.mean(dim=1, keepdim=True), centred, atol=1e-5)  # Q - mean Q = A - mean A
    assert torch.allclose(q_values.mean(dim=1, keepdim=True), values, atol=1e-5)  # V recoverable
    assert np.array_equal(ddp.greedy_actions(network, obs.numpy()), q_values.argmax(dim=1).numpy())


def test_dueling_streams_each_have_their_own_last_hidden_layer_and_the_plain_head_is_dqn_py_s_network():
    dueling = ddp.QNetwork((8,), 4, (64, 32), dueling=True)
    assert [layer.out_features for layer in dueling.torso if isinstance(layer, torch.nn.Linear)] == [64]
    assert [layer.out_features for layer in dueling.value_head if isinstance(layer, torch.nn.Linear)] == [32, 1]
    assert [layer.out_features for layer in dueling.advantage_head if isinstance(layer, torch.nn.Linear)] == [32, 4]
    plain = ddp.QNetwork((8,), 4, (64, 32), dueling=False)
    assert plain.value_head is None
    assert [p.shape for p in plain.parameters()] == [p.shape for p in dqn.QNetwork(8, 4, (64, 32)).parameters()]


@pytest.mark.parametrize("dueling", [True, False])
def test_greedy_actions_follow_the_trained_and_reloaded_network(dueling):
    torch.manual_seed(1)
    network = ddp.QNetwork((4,), 6, (16, 16), dueling)
    obs = np.random.default_rng(0).normal(size=(128, 4)).astype(np.float32)

    def torch_argmax():
        with torch.no_grad():
            return network(torch.from_numpy(obs)).argmax(dim=1).numpy()

    assert np.array_equal(ddp.greedy_actions(network, obs), torch_argmax())
    before = torch_argmax()
    optimizer = torch.optim.Adam(network.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        (network(torch.from_numpy(obs))[:, 0] ** 2).mean().backward()
        optimizer.step()
    assert not np.array_equal(before, torch_argmax())
    assert np.array_equal(ddp.greedy_actions(network, obs), torch_argmax())
    network.load_state_dict(ddp.QNetwork((4,), 6, (16, 16), dueling).state_dict())
    assert np.array_equal(ddp.greedy_actions(network, obs), torch_argmax())


# ----------------------------------------------------------------------------------------------------------- sum-tree

def test_sum_tree_finds_the_leaf_of_each_prefix_sum_by_hand():
    tree = ddp.SumTree(5)  # 8 leaves, 3 levels
    tree.update(np.arange(5), np.array([1.0, 0.0, 2.0, 3.0, 0.5]))
    assert tree.depth == 3 and tree.total == 6.5
    queries = np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 6.49])
    assert tree.find(queries).tolist() == [0, 0, 2, 2, 3, 3, 4, 4]  # leaf 1 (priority 0) is never found
    tree.update(np.array([3]), np.array([0.0]))
    assert tree.total == 3.5 and tree.find(np.array([3.0, 3.2])).tolist() == [4, 4]


def prefix_sum_bounds(leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([[0.0], np.cumsum(leaves)[:-1]]), np.cumsum(leaves)


@hypothesis_settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 200),
       updates=st.lists(st.tuples(st.lists(st.integers(0, 10**6), min_size=1, max_size=40),
                                  st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e3)), min_size=40, max_size=40)),
                        min_size=1, max_size=8),
       queries=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=50))
def test_sum_tree_invariants_hold_under_random_updates(capacity, updates, queries):
    tree = ddp.SumTree(capacity)
    leaves = np.zeros(capacity)
    for raw_indices, priorities in updates:
        indices = np.unique(np.array(raw_indices) % capacity)  # each index once per update, as the sampler does
        values = np.array(priorities[: len(indices)])
        tree.update(indices, values)
        leaves[indices] = values
        inner = np.arange(1, tree.leaves)
        assert np.array_equal(tree.nodes[inner], tree.nodes[2 * inner] + tree.nodes[2 * inner + 1])  # exact
        assert np.array_equal(tree.priorities(np.arange(capacity)), leaves)
        assert np.all(tree.nodes[tree.leaves + capacity:] == 0)  # padding leaves stay empty
        assert math.isclose(tree.total, leaves.sum(), rel_tol=1e-12, abs_tol=1e-300)
    if tree.total == 0:
        return
    prefix_sums = np.array(queries) * tree.total
    found = tree.find(prefix_sums)
    lower, upper = prefix_sum_bounds(leaves)
    slack = 1e-9 * tree.total  # the tree adds in another order than cumsum
    assert np.all(lower[found] <= prefix_sums + slack) and np.all(prefix_sums < upper[found] + slack)
    # a leaf of priority 0 only within rounding of the total (the sampler draws those again)
    assert np.all((leaves[found] > 0) | (prefix_sums > tree.total - slack))


class CountingNodes:
    """Stands in for a sum-tree's node array and counts the NumPy calls on it and the nodes they read or write: an
    index reads or writes the nodes it selects (np.take those it takes); any other use of the array's contents (a
    ufunc, np.cumsum, a method such as .sum(), np.asarray or .view that hand out the whole array) counts as reading
    every node, as the test cannot see what is done with it."""

    def __init__(self, nodes: np.ndarray):
        self.array, self.calls, self.touched = nodes, 0, 0

    def count(self, touched: int) -> None:
        self.calls, self.touched = self.calls + 1, self.touched + touched

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        value = self.array[key]
        self.count(np.size(value))
        return value

    def __setitem__(self, key, value):
        self.count(np.size(self.array[key]))
        self.array[key] = value

    def __getattr__(self, name):  # only attributes CountingNodes lacks: the array's
        if name not in ("shape", "dtype", "size", "ndim"):
            self.count(self.array.size)
        return getattr(self.array, name)

    def __array__(self, dtype=None, copy=None):
        self.count(self.array.size)
        return np.array(self.array, dtype=dtype, copy=bool(copy))

    def plain(self, args):
        return tuple(self.array if arg is self else arg for arg in args)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self.count(self.array.size)
        if "out" in kwargs:
            kwargs["out"] = self.plain(kwargs["out"])
        return getattr(ufunc, method)(*self.plain(inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        result = func(*self.plain(args), **kwargs)
        self.count(np.size(result) if func is np.take else self.array.size)
        return result


def sum_tree_costs(tree_class, capacity: int, batch_size: int) -> dict:
    """(NumPy calls on the node array, nodes they read or write) of one `update` of `batch_size` distinct leaves and
    of one `find` of `batch_size` prefix sums, on a tree of `capacity` leaves; the tree checked against a plain
    ddp.SumTree given the same batch (the counting changes nothing the tree does)."""
    rng = np.random.default_rng(capacity + batch_size)
    indices, priorities = rng.choice(capacity, batch_size, replace=False), rng.uniform(0.1, 2.0, batch_size)
    reference, tree = ddp.SumTree(capacity), tree_class(capacity)
    reference.update(indices, priorities)
    counted = tree.nodes = CountingNodes(tree.nodes)
    tree.update(indices, priorities)
    update = (counted.calls, counted.touched)
    counted.calls = counted.touched = 0
    prefix_sums = rng.random(batch_size) * reference.total
    found = tree.find(prefix_sums)
    find = (counted.calls, counted.touched)
    assert tree.nodes is counted and np.array_equal(counted.array, reference.nodes)
    assert np.array_equal(found, reference.find(prefix_sums)) and np.all(np.isin(found, indices))
    return {"update": update, "find": find}


def all_sum_tree_costs(tree_class) -> tuple[dict, dict, dict]:
    """The costs of a batch of 64 at 2^10 leaves (10 levels) and at 2^20 leaves (20 levels), and of 1 at 2^20."""
    return (sum_tree_costs(tree_class, 2**10, 64), sum_tree_costs(tree_class, 2**20, 64),
            sum_tree_costs(tree_class, 2**20, 1))


def assert_cost_o_log_n(small: dict, large: dict, one_leaf: dict) -> None:
    """A batch walks one root-to-leaf path per leaf, level by level: a fixed number of NumPy calls per level (not per
    leaf: the same for a batch of 1 and of 64) and a fixed number of node reads and writes per level and leaf. From
    2^10 to 2^20 leaves both double with the depth, 10 -> 20 levels; neither grows with the 1024 times as many leaves
    (the implementation: find 1 read per level and leaf, update 2 reads and 1 write, plus the leaf's write)."""
    for method in ("update", "find"):
        (small_calls, small_touched), (large_calls, large_touched) = small[method], large[method]
        assert 0 < large_calls <= 4 * 21 and 0 < large_touched <= 4 * 21 * 64, (method, large)
        assert 1.5 <= large_calls / small_calls <= 2.5, (method, small, large)
        assert 1.5 <= large_touched / small_touched <= 2.5, (method, small, large)
        assert one_leaf[method][0] == large_calls, (method, one_leaf, large)


def test_sum_tree_update_and_find_cost_o_log_n_numpy_calls():
    tree = ddp.SumTree(1_000_000)  # 2^20 leaves -> 20 levels
    assert tree.depth == 20 and tree.leaves == 2**20 and len(tree.nodes) == 2**21
    assert_cost_o_log_n(*all_sum_tree_costs(ddp.SumTree))


class RecomputesEveryInnerNode(ddp.SumTree):
    def update(self, indices, priorities):  # O(log N) NumPy calls, but O(N) node reads and writes
        self.nodes[np.asarray(indices) + self.leaves] = priorities
        for level in reversed(range(self.depth)):
            children = self.nodes[2 << level: 4 << level]
            self.nodes[1 << level: 2 << level] = children[0::2] + children[1::2]


class FindsByCumulativeSum(ddp.SumTree):
    def find(self, prefix_sums):  # reads every leaf
        return np.searchsorted(np.cumsum(self.nodes[self.leaves:]), prefix_sums, side="right")


class WalksOneLeafAtATime(ddp.SumTree):
    def update(self, indices, priorities):  # one path per leaf, but NumPy calls that grow with the batch
        for index, priority in zip(indices, priorities):
            super().update(np.array([index]), np.array([priority]))


class ChecksEveryNodeIsFinite(ddp.SumTree):
    def update(self, indices, priorities):  # one path per leaf, then a scan of the whole tree
        super().update(indices, priorities)
        assert np.isfinite(self.nodes).all()


@pytest.mark.parametrize("tree_class", [RecomputesEveryInnerNode, FindsByCumulativeSum, WalksOneLeafAtATime,
                                        ChecksEveryNodeIsFinite])
def test_the_sum_tree_cost_test_fails_on_a_tree_that_does_more_work(tree_class):
    costs = all_sum_tree_costs(tree_class)  # a correct tree (sum_tree_costs checks it), only a slower one
    with pytest.raises(AssertionError):
        assert_cost_o_log_n(*costs)


# ---------------------------------------------------------------------------------------------- prioritized sampling

def test_prioritized_sampling_frequencies_match_p_alpha_over_the_sum():
    """Chi-square goodness of fit of 64,000 draws against P(i) = p_i^alpha / sum_k p_k^alpha, with a fixed seed."""
    td_errors = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 0.0, 8.0, 0.3, 1.5, 3.0])
    alpha, epsilon = 0.6, 0.01
    sampler = ddp.PrioritizedSampler(16, alpha, epsilon)  # 6 slots beyond the 10 transitions stay empty
    sampler.update(np.arange(10), td_errors)
    expected_p = (np.abs(td_errors) + epsilon) ** alpha / np.sum((np.abs(td_errors) + epsilon) ** alpha)
    rng = np.random.default_rng(12345)
    counts = np.zeros(16)
    draws = 0
    for _ in range(2000):
        indices, _ = sampler.sample(32, rng, beta=0.4, n=10)
        np.add.at(counts, indices, 1)
        draws += 32
    assert counts[10:].sum() == 0  # empty slots are never drawn

    def chi_square(probabilities):
        expected = draws * probabilities
        return float(np.sum((counts[:10] - expected) ** 2 / expected))

    # critical value of chi-square with 9 degrees of freedom at p = 0.001: 27.88
    assert chi_square(expected_p) < 27.88
    # the test has power: the same counts are far from proportional-to-|delta| (alpha = 1) and from uniform
    proportional = (np.abs(td_errors) + epsilon) / np.sum(np.abs(td_errors) + epsilon)
    assert chi_square(proportional) > 1000 and chi_square(np.full(10, 0.1)) > 1000


def test_importance_weights_on_hand_computed_values():
    probabilities = np.array([0.5, 0.25, 0.125, 0.125])
    # (N P)^-beta with N = 8: (4, 2, 1, 1)^-beta, divided by the largest weight, that of the least likely
    assert np.allclose(ddp.importance_weights(probabilities, 8, 1.0), [0.25, 0.5, 1.0, 1.0])
    assert np.allclose(ddp.importance_weights(probabilities, 8, 0.5), [0.5, 1 / np.sqrt(2), 1.0, 1.0])
    assert np.allclose(ddp.importance_weights(probabilities, 8, 0.0), [1.0, 1.0, 1.0, 1.0])
    assert ddp.importance_weights(probabilities, 8, 0.4).dtype == np.float32


def test_sampler_returns_the_weights_of_the_probabilities_it_sampled_with():
    sampler = ddp.PrioritizedSampler(4, alpha=1.0, epsilon=1e-9)
    sampler.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))  # P = 0.1, 0.2, 0.3, 0.4
    indices, weights = sampler.sample(4, np.random.default_rng(0), beta=1.0, n=4)
    probabilities = np.array([0.1, 0.2, 0.3, 0.4])[indices]
    expected = (4 * probabilities) ** -1.0
    assert np.allclose(weights, expected / expected.max(), rtol=1e-6)


def test_new_transitions_enter_at_the_largest_priority_so_far():
    sampler = ddp.PrioritizedSampler(8, alpha=0.5, epsilon=0.0)
    sampler.add(np.array([0, 1]))
    assert np.allclose(sampler.tree.priorities([0, 1]), 1.0)  # before any replay: priority 1
    sampler.update(np.array([0, 1]), np.array([9.0, -0.25]))  # |delta|: the sign does not matter
    assert np.allclose(sampler.tree.priorities([0, 1]), [3.0, 0.5])
    sampler.add(np.array([2]))
    assert np.isclose(sampler.tree.priorities([2])[0], 3.0)  # max p = 9, stored as 9^0.5
    sampler.update(np.array([0]), np.array([0.0]))
    sampler.add(np.array([3]))
    assert np.isclose(sampler.tree.priorities([3])[0], 3.0)  # the largest ever seen, not the largest now
    sampler.remove(np.array([2]))
    assert sampler.tree.priorities([2])[0] == 0.0


def test_a_prefix_sum_rounded_onto_an_empty_leaf_is_drawn_again():
    sampler = ddp.PrioritizedSampler(4, alpha=1.0, epsilon=0.0)
    sampler.update(np.array([0, 1]), np.array([1.0, 1.0]))
    assert sampler.tree.find(np.array([2.0])).tolist() == [3]  # s = total: past the last leaf, onto an empty one

    class FirstDrawAtTheTop:
        """An rng whose first uniform draws are 1.0, so the last stratum's prefix sum is exactly the total."""
        calls = 0

        def random(self, size):
            FirstDrawAtTheTop.calls += 1
            return np.full(size, 1.0) if FirstDrawAtTheTop.calls == 1 else np.full(size, 0.25)

    indices, weights = sampler.sample(2, FirstDrawAtTheTop(), beta=1.0, n=2)
    assert indices.tolist() == [1, 0] and np.allclose(weights, 1.0) and FirstDrawAtTheTop.calls == 2


def test_priorities_change_after_each_learning_step_for_exactly_the_sampled_transitions(tmp_path, monkeypatch):
    calls = []
    sample, update = ddp.PrioritizedSampler.sample, ddp.PrioritizedSampler.update

    def recording_sample(self, batch_size, rng, beta, n):
        indices, weights = sample(self, batch_size, rng, beta, n)
        calls.append({"sampled": indices.copy(), "beta": beta, "weights": weights})
        return indices, weights

    def recording_update(self, indices, td_errors):
        before = self.tree.priorities(np.arange(self.tree.capacity)).copy()
        update(self, indices, td_errors)
        after = self.tree.priorities(np.arange(self.tree.capacity))
        calls[-1].update(updated=np.array(indices), td_errors=np.array(td_errors), before=before, after=after.copy(),
                         alpha=self.alpha, epsilon=self.epsilon)

    monkeypatch.setattr(ddp.PrioritizedSampler, "sample", recording_sample)
    monkeypatch.setattr(ddp.PrioritizedSampler, "update", recording_update)
    summary = small(tmp_path, total_timesteps=400, learning_starts=200, train_frequency=4)
    assert len(calls) == 50  # one update of the priorities per learning step: (400 - 200) / 4
    for call in calls:
        assert np.array_equal(call["updated"], call["sampled"])
        changed = np.flatnonzero(call["after"] != call["before"])
        assert set(changed) <= set(call["sampled"].tolist())  # nothing else moved
        expected = (np.abs(call["td_errors"]) + call["epsilon"]) ** call["alpha"]
        assert np.allclose(call["after"][call["sampled"]], expected)
        assert np.all(np.isfinite(call["td_errors"])) and np.any(call["td_errors"] != 0)
    assert sum(len(np.flatnonzero(call["after"] != call["before"])) for call in calls) > 25 * 32
    # beta anneals linearly from 0.4 at step 0 to 1 at the end of the run
    assert calls[0]["beta"] == pytest.approx(0.4 + 0.6 * 204 / 400) and calls[-1]["beta"] == pytest.approx(1.0)
    assert summary["global_step"] == 400


# ------------------------------------------------------------------------------------------------------------- n-step

def vector_replay(n: int, num_envs: int = 1, capacity: int = 40, prioritized: bool = True) -> ddp.FrameReplayBuffer:
    """A replay of one-number observations (stacks of one frame) with a sum-tree, as main() builds it."""
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    slots = -(-capacity // num_envs)
    sampler = ddp.PrioritizedSampler(num_envs * slots, 0.6, 1e-6) if prioritized else None
    return ddp.FrameReplayBuffer(capacity, num_envs, space, n, 0.5, torch.device("cpu"), sampler)


def test_n_step_transitions_on_hand_computed_episodes():
    replay = vector_replay(n=3)
    obs = lambda t: np.array([[float(t)]], dtype=np.float32)  # noqa: E731

    def step(t, reward, terminated=False, truncated=False):
        replay.add(obs(t + 1), np.array([t]), np.array([reward]), np.array([terminated]))
        if terminated or truncated:
            replay.start_episodes(obs(100 + t), np.array([0]))  # the next episode's reset obs

    def complete_batch():
        indices = np.flatnonzero(replay.priorities.tree.priorities(np.arange(replay.priorities.tree.capacity)))
        assert np.array_equal(indices, complete_indices(replay))  # the tree holds exactly the complete ones
        return replay.batch(indices, np.ones(len(indices), dtype=np.float32))

    replay.start_episodes(obs(0), np.array([0]))
    step(0, 1.0)
    step(1, 2.0)
    assert len(complete_batch().obs) == 0  # fewer than 3 rewards: nothing complete yet
    step(2, 3.0)
    first = complete_batch()  # 1 + 0.5 * 2 + 0.25 * 3 = 2.75, bootstrapping from obs 3 with 0.5^3
    assert first.obs.tolist() == [[0.0]] and first.next_obs.tolist() == [[3.0]] and first.actions.tolist() == [0]
    assert first.returns.tolist() == [2.75] and first.terminations.tolist() == [0.0] and first.discounts.tolist() == [
        0.125]
    step(3, 4.0, terminated=True)  # the episode ends: every pending step is complete, none bootstraps
    ended = complete_batch()
    assert ended.obs[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and ended.next_obs[1:, 0].tolist() == [4.0, 4.0, 4.0]
    assert np.allclose(ended.returns[1:], [2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4, 4.0])
    assert ended.terminations[1:].tolist() == [1.0, 1.0, 1.0] and np.allclose(ended.discounts[1:], [0.125, 0.25, 0.5])
    # a truncation: the same returns, but termination 0, so each bootstraps from the final obs with gamma^k
    step(0, 1.0)
    step(1, 2.0, truncated=True)
    truncated = complete_batch()
    assert truncated.obs[4:, 0].tolist() == [103.0, 1.0]  # the new episode's reset obs, then its first step's
    assert np.allclose(truncated.returns[4:], [1 + 0.5 * 2, 2.0]) and truncated.terminations[4:].tolist() == [0, 0]
    assert np.allclose(truncated.discounts[4:], [0.25, 0.5]) and truncated.next_obs[4:, 0].tolist() == [2.0, 2.0]


def test_n_step_transitions_never_mix_envs():
    replay = vector_replay(n=2, num_envs=2)
    obs = lambda t: np.array([[10.0 + t], [20.0 + t]], dtype=np.float32)  # noqa: E731  (env 0: 10+, env 1: 20+)
    replay.start_episodes(obs(0), np.arange(2))
    replay.add(obs(1), np.array([0, 1]), np.array([1.0, 10.0]), np.array([False, True]))
    replay.start_episodes(obs(50)[1:], np.array([1]))  # env 1 ended, env 0 goes on
    replay.add(obs(2), np.array([0, 1]), np.array([2.0, 20.0]), np.array([False, False]))
    indices = complete_indices(replay)
    batch = replay.batch(indices, np.ones(len(indices), dtype=np.float32))
    rows = sorted(zip(batch.obs[:, 0].tolist(), batch.returns.tolist(), batch.next_obs[:, 0].tolist()))
    assert rows == [(10.0, 1.0 + 0.5 * 2.0, 12.0), (20.0, 10.0, 21.0)]  # env 1's transition stops at its end


class StepRewardEnv(StepCounterEnv):
    """StepCounter-v0 whose reward is the time step just reached, so that n-step returns can be recomputed."""

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(self.t), terminated, truncated, info


gym.register("StepReward-v0", entry_point=StepRewardEnv, max_episode_steps=8)


@pytest.mark.parametrize("n, num_envs", [(1, 1), (3, 1), (3, 3), (5, 2)])
def test_training_loop_stores_n_step_returns_cut_at_episode_ends_within_one_env(tmp_path, n, num_envs):
    """The real loop on an env whose obs say (env instance, episode, t, terminal) and whose reward is t: every stored
    transition goes k <= n steps forward in the same episode of the same env, k < n only at an episode's end, its return
    is the discounted sum of the k rewards, it is terminal exactly when it ends on a termination, and its discount is
    gamma^k (a truncation bootstraps from the true final obs with that)."""
    values = dict(env_id="StepReward-v0", num_envs=num_envs, n_step=n, gamma=GAMMA, total_timesteps=600,
                  learning_starts=300, save_replay=True, hidden_sizes=(16,), eval_frequency=600)
    summary = small(tmp_path, **values)
    args, _ = settings(ddp, **{**SMALL, **values})
    space = gym.make("StepReward-v0").observation_space
    replay = ddp.FrameReplayBuffer(args.buffer_size, num_envs, space, n, GAMMA, torch.device("cpu"),
                                   ddp.PrioritizedSampler(num_envs * -(-args.buffer_size // num_envs), 0.6, 1e-6))
    replay.load_state_dict(torch.load(Path(summary["run_dir"]) / "replay.pt", weights_only=True)["replay"])
    indices = complete_indices(replay)
    leaves = replay.priorities.tree.priorities(np.arange(replay.priorities.tree.capacity))
    assert np.array_equal(np.flatnonzero(leaves), indices)  # the saved priorities: exactly the complete transitions
    batch = replay.batch(indices, np.ones(len(indices), dtype=np.float32))
    obs, next_obs = batch.obs.numpy(), batch.next_obs.numpy()
    returns, terminations = batch.returns.numpy(), batch.terminations.numpy()
    k = np.rint(np.log(batch.discounts.numpy()) / np.log(GAMMA)).astype(int)
    assert 600 - (n - 1) * num_envs <= len(obs) <= 600  # every step, less those still waiting for rewards
    assert np.array_equal(next_obs[:, 0], obs[:, 0]) and np.array_equal(next_obs[:, 1], obs[:, 1])  # env, episode
    assert np.all((k >= 1) & (k <= n)) and np.array_equal(next_obs[:, 2], obs[:, 2] + k)
    episode_end = (next_obs[:, 3] == 1) | (next_obs[:, 2] == 8)  # terminated, or truncated by the time limit
    assert np.all(episode_end[k < n])  # a return shorter than n only where its episode ended
    assert np.array_equal(terminations, next_obs[:, 3])  # cut (no bootstrap) exactly at terminations
    expected = np.array([sum(GAMMA**i * (t0 + 1 + i) for i in range(steps)) for t0, steps in zip(obs[:, 2], k)])
    assert np.allclose(returns, expected, rtol=1e-5)
    truncated_short = (k < n) & (terminations == 0)
    if n > 1:
        assert truncated_short.sum() > 5 and ((k < n) & (terminations == 1)).sum() > 5  # both ends exercised
    assert len(np.unique(obs[:, 0])) == num_envs


# ---------------------------------------------------------------------------------------- Atari frame replay priorities

class CountingFrameEnv(gym.Env):
    """84x84 frames that carry (env, frame counter) in their first bytes, with random terminations and truncations."""

    observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, env_index: int):
        self.env_index, self.counter = env_index, 0

    def _frame(self) -> np.ndarray:
        self.counter += 1
        frame = np.zeros((84, 84), dtype=np.uint8)
        frame[0, :8] = np.frombuffer(np.int64(self.env_index * 10**6 + self.counter).tobytes(), np.uint8)
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._frame(), {}

    def step(self, action):
        terminated = bool(self.np_random.random() < 0.1)
        truncated = not terminated and bool(self.np_random.random() < 0.05)
        return self._frame(), float(self.counter), terminated, truncated, {}


def n_step_truth(steps: list[dict], position: int, n: int, gamma: float):
    """From one env's recorded steps: (return, next_obs, termination, k, complete) of the n-step transition that
    starts at steps[position], never past its episode's end."""
    total, k = 0.0, 0
    while k < n and position + k < len(steps):
        step = steps[position + k]
        total += gamma**k * step["reward"]
        k += 1
        if step["episode_ended"]:
            return total, step["next_obs"], step["termination"], k, True
    return total, steps[position + k - 1]["next_obs"], steps[position + k - 1]["termination"], k, k == n


@pytest.mark.parametrize("n, num_envs", [(1, 1), (1, 3), (3, 1), (4, 3)])
def test_frame_replay_priorities_and_n_step_batches_match_what_the_envs_returned(n, num_envs):
    """Stepping as main() does, through several wraparounds of the ring: the slots with a positive priority are exactly
    the complete n-step transitions whose frames are all still stored, and `batch` rebuilds each from the replay as
    the envs returned it (obs, the return up to n rewards within the episode, next obs, termination, gamma^k)."""
    envs = gym.vector.SyncVectorEnv(
        [lambda i=i: gym.wrappers.FrameStackObservation(CountingFrameEnv(i), ddp.FRAME_STACK, padding_type="reset")
         for i in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    space = gym.spaces.Box(0, 255, (ddp.FRAME_STACK, 84, 84), np.uint8)
    sampler = ddp.PrioritizedSampler(40 * num_envs, 0.6, 1e-6)
    replay = ddp.FrameReplayBuffer(40 * num_envs, num_envs, space, n, GAMMA, torch.device("cpu"), sampler)
    every_env, rng = np.arange(num_envs), np.random.default_rng(0)
    steps: list[list[dict]] = [[] for _ in every_env]  # per env, every step as the env returned it
    obs, _ = envs.reset(seed=0)
    replay.start_episodes(obs, every_env)
    for iteration in range(150):
        actions = rng.integers(3, size=num_envs)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = next_obs.copy()
        for i in np.flatnonzero(infos.get("_final_obs", np.zeros(num_envs, bool))):
            real_next_obs[i] = infos["final_obs"][i]
        for i in every_env:
            steps[i].append(dict(slot=int(replay.written[i]) - 1, obs=obs[i].copy(), action=int(actions[i]),
                                 reward=float(rewards[i]), next_obs=real_next_obs[i].copy(),
                                 termination=bool(terminations[i]),
                                 episode_ended=bool(terminations[i] or truncations[i])))
        replay.add(real_next_obs, actions, rewards, terminations)
        dones = np.logical_or(terminations, truncations)
        if dones.any():
            replay.start_episodes(next_obs[dones], np.flatnonzero(dones))
        obs = next_obs
        lowest = replay.written - replay.slots + ddp.FRAME_STACK - 1
        expected = {}
        for i in every_env:
            for position, step in enumerate(steps[i]):
                truth = n_step_truth(steps[i], position, n, GAMMA)
                if step["slot"] >= lowest[i] and truth[-1]:
                    expected[i * replay.slots + step["slot"] % replay.slots] = (step, truth)
        positive = np.flatnonzero(sampler.tree.priorities(np.arange(sampler.tree.capacity)))
        assert set(positive.tolist()) == set(expected), f"iteration {iteration}"
    assert min(replay.written) > 3 * replay.slots  # the rings wrapped around several times
    b_obs, b_actions, b_returns, b_next_obs, b_terminations, b_discounts, _, _ = replay.batch(
        positive, np.ones(len(positive), dtype=np.float32))
    for row, index in enumerate(positive):
        step, (n_step_return, next_obs_k, termination, k, _) = expected[int(index)]
        assert b_obs[row].numpy().tobytes() == step["obs"].tobytes()
        assert b_next_obs[row].numpy().tobytes() == next_obs_k.tobytes()
        assert b_actions[row].item() == step["action"] and b_terminations[row].item() == termination
        assert b_returns[row].item() == pytest.approx(n_step_return, rel=1e-6)
        assert b_discounts[row].item() == pytest.approx(GAMMA**k)
    ks = np.rint(np.log(b_discounts.numpy()) / np.log(GAMMA))
    assert (ks < n).sum() > 5 if n > 1 else np.all(ks == 1)  # returns cut short at episode ends were checked
    # uniform sampling (--no-prioritized) draws from the same set
    assert set(replay.uniform_indices(512, rng).tolist()) <= set(positive.tolist())


# ---------------------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("overrides, message", [
    (dict(alpha=-0.1), "--alpha must be >= 0"),
    (dict(beta_start=1.5), "--beta-start must be in [0, 1]"),
    (dict(beta_start=-0.1), "--beta-start must be in [0, 1]"),
    (dict(n_step=0), "--n-step must be >= 1"),
    (dict(priority_epsilon=0.0), "--priority-epsilon must be > 0"),
    (dict(huber_delta=0.0), "--huber-delta must be > 0"),
    (dict(env_id="NoSuchEnv-v0"), "cannot make env 'NoSuchEnv-v0'"),
    (dict(env_id="Pendulum-v1"), "needs a Discrete action space"),
    (dict(env_id="ImageObs-v0"), "needs a 1-D Box observation space or an ale-py game"),
    (dict(env_id="DictObs-v0"), "needs a 1-D Box observation space or an ale-py game"),
    (dict(batch_size=512, buffer_size=256), "--batch-size 512 is larger than --buffer-size 256"),
    (dict(learning_starts=3000), "--learning-starts 3000 must be < --total-timesteps"),
    (dict(gamma=1.5), "--gamma must be in [0, 1]"),
    (dict(tau=0.0), "--tau must be in (0, 1]"),
    (dict(train_frequency=0), "--train-frequency must be >= 1"),
    (dict(num_envs=0), "--num-envs must be >= 1"),
    (dict(resume="does/not/exist.pt"), "does not exist"),
    (dict(n_step=40, num_envs=4, learning_starts=100), "--learning-starts 100 must be >= --n-step x --num-envs"),
    (dict(env_id="PongNoFrameskip-v4", buffer_size=5, batch_size=4), "--buffer-size 5 is too small"),
])
def test_bad_input_gives_a_clear_error_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ddp.ConfigError) as error:
        small(tmp_path, **{"batch_size": 8, "learning_starts": 100, **overrides})
    assert message in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_cli_reports_several_bad_settings_in_one_line_without_traceback(tmp_path):
    result = run_script([sys.executable, "double_dueling_per_dqn.py", "--alpha", "-1", "--beta-start", "2",
                         "--n-step", "0", "--runs-dir", str(tmp_path / "runs")])
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert all(text in result.stderr for text in ["--alpha must be >= 0", "--beta-start must be in [0, 1]",
                                                  "--n-step must be >= 1"])
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------- runs, smoke, resume

def test_smoke_run_on_lunar_lander_writes_the_run_files_then_resumes_with_its_priorities(tmp_path):
    values = dict(env_id="LunarLander-v3", learning_starts=500, eval_frequency=1000, n_step=3, save_replay=True, seed=3)
    summary = small(tmp_path, total_timesteps=2000, eval_episodes=2, **values)
    run_dir = Path(summary["run_dir"])
    assert run_dir.name.startswith("LunarLander-v3__double_dueling_per_dqn__3__")
    saved_args = json.loads((run_dir / "args.json").read_text())
    assert saved_args["double"] and saved_args["dueling"] and saved_args["prioritized"] and saved_args["n_step"] == 3
    rows = read_metrics(run_dir)
    names = {name for _, name, _ in rows}
    assert {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/SPS", "charts/beta",
            "losses/td_loss", "losses/q_values", "eval/episodic_return"} <= names
    assert all(np.isfinite(value) for _, _, value in rows)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["status"] == "finished" and saved["global_step"] == 2000 and len(saved["eval_returns"]) == 2
    assert all(-1000 < value < 400 for value in saved["eval_returns"])  # LunarLander returns
    priorities = torch.load(run_dir / "replay.pt", weights_only=True)["replay"]["priorities"]
    leaves = priorities["leaves"].numpy()
    assert 1900 < np.count_nonzero(leaves) <= 2000  # every complete transition of the 2000 steps
    assert len(np.unique(leaves)) > 100  # replayed transitions have their own priorities
    resumed = small(tmp_path, total_timesteps=2500, eval_episodes=1, resume=str(run_dir), **values)
    assert resumed["run_dir"] == str(run_dir) and resumed["global_step"] == 2500
    args, _ = settings(ddp, **{**SMALL, **values})
    replay = ddp.FrameReplayBuffer(args.buffer_size, 1, gym.make("LunarLander-v3").observation_space, 3, args.gamma,
                                   torch.device("cpu"), ddp.PrioritizedSampler(args.buffer_size, 0.6, 1e-6))
    replay.load_state_dict(torch.load(run_dir / "replay.pt", weights_only=True)["replay"])
    assert replay.written[0] > replay.slots  # the ring is full and wrapped: old transitions left the tree
    after = replay.priorities.tree.priorities(np.arange(args.buffer_size))
    assert np.array_equal(np.flatnonzero(after), complete_indices(replay))
    assert replay.priorities.max_priority >= priorities["max_priority"]


def test_every_extension_switched_off_still_trains_and_evaluates_a_checkpoint(tmp_path):
    summary = small(tmp_path, double=False, dueling=False, prioritized=False, total_timesteps=600, seed=2)
    rows = read_metrics(summary["run_dir"])
    names = {name for _, name, _ in rows}
    assert "losses/td_loss" in names and "charts/beta" not in names
    checkpoint = torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert not any("value_head" in key for key in checkpoint["state"]["q_network"])
    result = run_script([sys.executable, "double_dueling_per_dqn.py", "--eval-checkpoint",
                         str(Path(summary["run_dir"]) / "best.pt"), "--eval-episodes", "2"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CartPole-v1: 2 episodes, return")


def test_smoke_run_on_real_pong_with_every_extension_on_and_3_step_returns(tmp_path):
    summary = small(tmp_path, env_id="PongNoFrameskip-v4", total_timesteps=320, learning_starts=200, buffer_size=1000,
                    batch_size=16, hidden_sizes=(64,), train_frequency=8, eval_frequency=10**6, eval_episodes=1,
                    eval_epsilon=0.05, noop_max=2, n_step=3)
    run_dir = Path(summary["run_dir"])
    assert run_dir.name.startswith("PongNoFrameskip-v4__double_dueling_per_dqn__1__")
    rows = read_metrics(run_dir)
    assert [name for _, name, _ in rows].count("eval/episodic_return") == 1
    assert -21 <= summary["eval_mean"] <= 21  # one full game of Pong: the raw score, not clipped, not cut at a point
    q_network = torch.load(run_dir / "checkpoint.pt", weights_only=True)["state"]["q_network"]
    assert "torso.0.weight" in q_network and "value_head.2.weight" in q_network
    assert (run_dir / "summary.json").exists() and (run_dir / "args.json").exists()
