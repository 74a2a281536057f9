"""Double DQN with a dueling head, prioritized replay and n-step returns, each switchable, for vector and Atari envs.

The best-known extensions of DQN (Mnih et al. 2015, "Human-level control through deep reinforcement learning"), on
dqn_atari.py's code (its wrappers, CNN and replay; an MLP for vector observations), so that a diff against it shows
what each one adds. All are on by default; docs/double_dueling_per_dqn.md lists every departure from the papers.
  --double       van Hasselt, Guez & Silver 2016, "Deep Reinforcement Learning with Double Q-learning": double_q_target
  --dueling      Wang et al. 2016, "Dueling Network Architectures for Deep Reinforcement Learning": dueling_q_values
  --prioritized  Schaul et al. 2016, "Prioritized Experience Replay", proportional variant: PrioritizedSampler
  --n-step N     n-step returns as in Rainbow (Hessel et al. 2018; N = 3), cut at episode ends: FrameReplayBuffer

    python double_dueling_per_dqn.py                                  # LunarLander-v3, every extension on
    python double_dueling_per_dqn.py --no-prioritized --seed 2        # an ablation: uniform replay
    python double_dueling_per_dqn.py --env-id PongNoFrameskip-v4 --cuda ...     # Atari: its settings are in docs/

Reproduces: LunarLander-v3, fresh seeds 1601-1610, final networks: 10 of 10 >= 200, mean 257.8, ~4 min a run; see docs/.
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal, NamedTuple, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FRAME_STACK, FRAME_SHAPE = 4, (84, 84)  # frames per Atari observation (Mnih et al. 2015: m = 4), and their shape


@dataclass
class Args:
    env_id: str = "LunarLander-v3"
    """gymnasium id of the environment (any registered id, or `module:Env-v0`); an ale-py id is played from pixels"""
    total_timesteps: int = 200_000
    """env steps to train for, summed over all envs (LunarLander-v3: 3-8 min a run here; dqn_lunar.py: 300_000)"""
    learning_rate: float = 1e-3
    """learning rate (dqn_lunar.py's; for prioritized replay Schaul et al. divide theirs by 4)"""
    end_learning_rate: Optional[float] = 1e-5
    """learning rate at the last step, reached linearly from `learning_rate` (None: constant; dqn_lunar.py's: 1e-5)"""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """adam, or rmsprop: Mnih et al. 2015's RMSProp (see make_optimizer; the paper's --learning-rate: 2.5e-4)"""
    num_envs: int = 1
    """number of environments stepped together"""
    buffer_size: int = 50_000
    """replay capacity in transitions (rl-baselines3-zoo: 50_000), about one stored observation (or frame) each"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.003
    """target network update rate: 1 copies the online network (hard update), < 1 blends it in (Polyak averaging)"""
    target_network_frequency: int = 1
    """env steps between target network updates (dqn_lunar.py's: every step, with Polyak averaging)"""
    batch_size: int = 128
    """transitions per gradient step (dqn_lunar.py and rl-baselines3-zoo: 128, Schaul et al. 2016: 32)"""
    start_e: float = 1.0
    """exploration epsilon at the start"""
    end_e: float = 0.01
    """exploration epsilon at the end of the schedule (tuned Double DQN: 0.01; zoo's 0.1 leaves landers jittering)"""
    exploration_fraction: float = 0.2
    """fraction of `total_timesteps` over which epsilon falls linearly to `end_e` (the first 40k steps; zoo: 0.12)"""
    learning_starts: int = 1_000
    """env steps of random play that fill the buffer before learning starts (rl-baselines3-zoo: 0)"""
    train_frequency: int = 4
    """env steps between training phases (Mnih et al. 2015 and rl-baselines3-zoo: 4; dqn_lunar.py: 2, worse here)"""
    gradient_steps: int = 1
    """gradient steps per training phase (Mnih et al. 2015: 1; rl-baselines3-zoo: one per env step)"""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """hidden layer widths after the torso (dqn_lunar.py's before it took 256 256); dueling streams copy the last one"""
    loss: Literal["mse", "huber"] = "huber"
    """TD loss: mean squared error, or Huber (squared up to `huber_delta`, linear beyond; delta 1: error clipping)"""
    huber_delta: float = 10.0
    """TD error beyond which the Huber loss is linear (the paper, SB3: 1; 10 lets LunarLander's +100 count: docs)"""
    max_grad_norm: Optional[float] = 10.0
    """clip the gradient to this global L2 norm (None: no clipping; SB3's default and Wang et al. 2016: 10)"""
    double: bool = True
    """Double DQN (van Hasselt et al. 2016); --no-double: the target network picks and values the next action"""
    dueling: bool = True
    """dueling head (Wang et al. 2016): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'); --no-dueling: one linear head"""
    prioritized: bool = True
    """prioritized replay (Schaul et al. 2016, proportional variant); --no-prioritized: uniform replay"""
    alpha: float = 0.6
    """priority exponent: P(i) = p_i^alpha / sum_k p_k^alpha; 0 is uniform (Schaul et al. 2016, proportional: 0.6)"""
    beta_start: float = 0.4
    """importance-sampling exponent at the start, annealed linearly to 1 at the end (Schaul et al. 2016: 0.4)"""
    priority_epsilon: float = 1e-6
    """added to |TD error| so that every transition keeps a chance to be replayed (Schaul et al. 2016: "small")"""
    n_step: int = 3
    """n-step returns (Hessel et al. 2018: 3): a transition sums n rewards, fewer where its episode ends; 1: one-step"""
    terminal_on_life_loss: bool = True
    """Atari only: end the training episode (not the game) at a lost life (Mnih et al. 2015)"""
    noop_max: int = 30
    """Atari only: at most this many no-op actions after each reset (Mnih et al. 2015: 30)"""


# the run options (below the harness line) whose defaults are this script's own (20: LunarLander's returns vary a lot)
RUN_DEFAULTS = dict(eval_frequency=25_000, eval_episodes=20, eval_epsilon=0.0)


def check_args(args: Args, run_args) -> list[str]:
    """What is wrong with the env and the extensions' settings (the harness checks the settings every script has)."""
    problems = [f"--{name.replace('_', '-')} must be {what} (got {getattr(args, name)})" for name, ok, what in [
        ("alpha", args.alpha >= 0, ">= 0"), ("beta_start", 0 <= args.beta_start <= 1, "in [0, 1]"),
        ("priority_epsilon", args.priority_epsilon > 0, "> 0"), ("n_step", args.n_step >= 1, ">= 1"),
        ("noop_max", args.noop_max >= 0, ">= 0"), ("huber_delta", args.huber_delta > 0, "> 0"),
        ("end_learning_rate", args.end_learning_rate is None or args.end_learning_rate >= 0, ">= 0 or None")] if not ok]
    if args.learning_starts < args.n_step * args.num_envs:
        problems.append(f"--learning-starts {args.learning_starts} must be >= --n-step x --num-envs, so that the first "
                        "batch finds complete n-step transitions")
    stack = FRAME_STACK if is_atari(args.env_id) else 1
    if args.buffer_size < args.num_envs * (stack + args.n_step + 1):
        problems.append(f"--buffer-size {args.buffer_size} is too small for {args.num_envs} envs: with --n-step "
                        f"{args.n_step}, each env's part of the replay needs at least {stack + args.n_step + 1} slots")
    try:
        env = make_env(args.env_id, terminal_on_life_loss=False)()
    except (gym.error.Error, ImportError, AttributeError) as error:
        return problems + [f"cannot make env {args.env_id!r}: {error}"]
    if not isinstance(env.action_space, gym.spaces.Discrete):
        problems.append(f"{SCRIPT}.py needs a Discrete action space; {args.env_id} has {env.action_space}")
    if stack == 1 and (not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1):
        problems.append(f"{SCRIPT}.py needs a 1-D Box observation space or an ale-py game; {args.env_id} has "
                        f"{env.observation_space}")
    env.close()
    return problems


def is_atari(env_id: str) -> bool:
    """Whether `env_id` is an ale-py game; ale-py (which registers its games) is imported only for an unknown id."""
    if env_id not in gym.registry:
        try:
            import ale_py
            gym.register_envs(ale_py)
        except ImportError:
            pass
    return env_id in gym.registry and str(gym.registry[env_id].entry_point).startswith("ale_py")


def float32_observations(env: gym.Env) -> gym.Env:
    """`env` with its Box observations cast to float32, at this one boundary: the replay stores float32 and the
    network takes it, whatever dtype the env has (float64 and integer ones included); a float32 env as it is."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or space.dtype == np.float32:
        return env
    box = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: np.asarray(obs, dtype=np.float32), box)


def make_env(env_id: str, terminal_on_life_loss: bool, noop_max: int = 30, video_dir: Optional[str] = None,
             video_prefix: str = "eval") -> Callable[[], gym.Env]:
    """A thunk building one env that reports each episode's return and length in `info["episode"]`. An Atari game gets
    dqn_atari.py's wrappers (SB3's, 4-frame stacks [4, 84, 84] uint8); training envs end an episode at a lost life."""

    def thunk() -> gym.Env:
        if not is_atari(env_id):  # render_mode only when recording: a user's env may not take the argument at all
            env = gym.make(env_id, **({"render_mode": "rgb_array"} if video_dir else {}))
        else:  # frameskip=1: MaxAndSkipEnv repeats each action 4 times (ALE/*-v5 ids would skip 4 x 4 frames)
            env = gym.make(env_id, frameskip=1, render_mode="rgb_array" if video_dir else None)
            env = gym.wrappers.RecordEpisodeStatistics(env)  # innermost: the raw score of a whole game
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: episode == 0,
                                           name_prefix=video_prefix, disable_logger=True)
        if not is_atari(env_id):
            return float32_observations(gym.wrappers.RecordEpisodeStatistics(env))
        from stable_baselines3.common.atari_wrappers import AtariWrapper

        env = AtariWrapper(env, noop_max=noop_max, frame_skip=4, screen_size=FRAME_SHAPE[0],
                           terminal_on_life_loss=terminal_on_life_loss, clip_reward=True)
        env = gym.wrappers.ReshapeObservation(env, FRAME_SHAPE)  # WarpFrame's [84, 84, 1] -> [84, 84]
        return gym.wrappers.FrameStackObservation(env, FRAME_STACK, padding_type="reset")

    return thunk


class QNetwork(nn.Module):
    """A torso (the Nature CNN for Atari stacks [B, 4, 84, 84] uint8, nothing for vectors [B, D]), fully connected
    layers, and a head of Q-values [B, A]: one linear layer, or the dueling head (Wang et al. 2016, Section 3), a value
    stream V(s) [B, 1] and an advantage stream A(s, a) [B, A], each with its own copy of the last hidden layer."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, hidden_sizes: tuple[int, ...], dueling: bool):
        super().__init__()
        self.atari, self.dueling, self.n_actions = len(obs_shape) == 3, dueling, n_actions
        torso: list[nn.Module] = [
            nn.Conv2d(FRAME_STACK, 32, kernel_size=8, stride=4), nn.ReLU(),  # [B, 32, 20, 20]
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),  # [B, 64, 9, 9]
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),  # [B, 64, 7, 7]
            nn.Flatten(),  # [B, 3136]
        ] if self.atari else []
        sizes = [64 * 7 * 7 if self.atari else obs_shape[0], *hidden_sizes]
        shared, stream = (sizes[:-1], sizes[-2:]) if dueling else (sizes, sizes[-1:])
        for n_in, n_out in zip(shared[:-1], shared[1:]):
            torso += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.torso = nn.Sequential(*torso)

        def head(n_out: int) -> nn.Sequential:
            hidden = [nn.Linear(stream[0], stream[1]), nn.ReLU()] if len(stream) == 2 else []
            return nn.Sequential(*hidden, nn.Linear(stream[-1], n_out))

        self.advantage_head = head(n_actions)  # A(s, .) with the dueling head, Q(s, .) without
        self.value_head = head(1) if dueling else None
        if not self.atari:  # argmax_a Q = argmax_a A, and torso + advantage head is an MLP, which acts in NumPy (see
            # greedy_actions); it shares their parameters and is no submodule, so the state_dict holds them once
            self.__dict__["greedy_network"] = nn.Sequential(*self.torso, *self.advantage_head)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.torso(obs.float() / 255.0 if self.atari else obs)  # [B, hidden]
        advantages = self.advantage_head(features)  # [B, A]: the Q-values themselves without the dueling head
        return dueling_q_values(self.value_head(features), advantages) if self.dueling else advantages  # [B, A]


def dueling_q_values(values: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al. 2016, eq. 9): subtracting the mean makes V and A
    identifiable (the advantages of each state average to 0), and is more stable than subtracting the max (eq. 8)."""
    return values + advantages - advantages.mean(dim=1, keepdim=True)  # [B, 1] + [B, A] - [B, 1] -> [B, A]


class SumTree:
    """A complete binary tree in one array (Schaul et al. 2016, Appendix B.2.1): the leaves hold the priorities, each
    inner node the sum of its two children. Node 1 is the root, node k has children 2k and 2k + 1, leaf i is node
    `leaves + i` (capacity rounded up to a power of two; extra leaves 0). `find` and `update` walk a root-to-leaf path,
    O(log N), a batch at once; sums are recomputed, never adjusted by differences, so rounding errors don't pile up."""

    def __init__(self, capacity: int):
        self.capacity, self.depth = capacity, max(capacity - 1, 0).bit_length()
        self.leaves = 1 << self.depth
        self.nodes = np.zeros(2 * self.leaves, dtype=np.float64)
        self.levels_up = np.arange(1, self.depth + 1)[:, None]  # [depth, 1]: node >> d is its ancestor d levels up

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def priorities(self, indices: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(indices) + self.leaves]

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set the leaves `indices` [B] (each index once) to `priorities` [B] and recompute their ancestors."""
        nodes = np.asarray(indices, dtype=np.int64) + self.leaves  # [B]
        self.nodes[nodes] = priorities
        ancestors = nodes >> self.levels_up  # [depth, B]: parents, grandparents, ..., the root, from the leaves up
        for parents, left, right in zip(ancestors, ancestors << 1, (ancestors << 1) + 1) if len(nodes) else ():
            self.nodes[parents] = self.nodes[left] + self.nodes[right]  # a shared parent gets the same sum twice

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each s in `prefix_sums` [B], 0 <= s < total, the leaf i with p_0 + ... + p_i-1 <= s < p_0 + ... + p_i
        (never a leaf of priority 0), found from the root: go right, less the left sum, if s >= the left sum. An s
        within a few ulps of a subtree's sum may end on an empty leaf; `PrioritizedSampler.sample` draws it again."""
        values = np.array(prefix_sums, dtype=np.float64)  # [B]
        nodes = np.ones(len(values), dtype=np.int64)  # [B]
        for _ in range(self.depth):
            nodes <<= 1  # the left children
            left_sums = self.nodes[nodes]
            go_right = values >= left_sums
            values -= left_sums * go_right
            nodes += go_right
        return nodes - self.leaves


class PrioritizedSampler:
    """Proportional prioritization (Schaul et al. 2016, Algorithm 1): transition i is replayed with probability
    P(i) = p_i^alpha / sum_k p_k^alpha, p_i = |delta_i| + epsilon after its last replay, and a new one gets the largest
    p so far, so it is replayed soon. The sum-tree holds p_i^alpha per replay index, 0 where nothing can be replayed."""

    def __init__(self, capacity: int, alpha: float, epsilon: float):
        self.tree, self.alpha, self.epsilon, self.max_priority = SumTree(capacity), alpha, epsilon, 1.0

    def add(self, indices: np.ndarray) -> None:
        self.tree.update(indices, np.full(len(indices), self.max_priority ** self.alpha))

    def remove(self, indices: np.ndarray) -> None:
        self.tree.update(indices, np.zeros(len(indices)))

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices [B], importance weights [B]) among `n` stored transitions, stratified (Schaul et al., Appendix
        B.2.1): one prefix sum from each of B equal parts of [0, total) spans the distribution; each draw has P(i)."""
        total = self.tree.total
        indices = self.tree.find((np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size))  # [B]
        while not (priorities := self.tree.priorities(indices)).all():  # rounding hit an empty leaf (SumTree.find)
            empty = priorities == 0
            indices[empty] = self.tree.find(rng.random(int(empty.sum())) * total)  # draw those again
        return indices, importance_weights(priorities / total, n, beta)

    def update(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """After a replay: p_i = |delta_i| + epsilon for the replayed transitions [B] (one drawn twice: same error)."""
        priorities = np.abs(td_errors) + self.epsilon
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(indices, priorities ** self.alpha)

    def state_dict(self) -> dict:
        return {"leaves": torch.from_numpy(self.tree.nodes[self.tree.leaves:][:self.tree.capacity].copy()),
                "max_priority": self.max_priority}

    def load_state_dict(self, state: dict) -> None:
        self.tree.update(np.arange(self.tree.capacity), state["leaves"].numpy())
        self.max_priority = state["max_priority"]


def importance_weights(probabilities: np.ndarray, n: int, beta: float) -> np.ndarray:
    """w_i = (N * P(i))^-beta / max_j w_j (Schaul et al. 2016, Algorithm 1): undoes the bias of replaying transitions
    in proportion to their priority (fully at beta = 1); the division by the largest weight only scales updates down."""
    weights = (n * probabilities) ** -beta  # [B]
    return (weights / weights.max()).astype(np.float32)


class Batch(NamedTuple):
    obs: torch.Tensor  # [B, *obs_shape]
    actions: torch.Tensor  # [B] int64
    returns: torch.Tensor  # [B]: r_t + gamma r_t+1 + ... + gamma^(k-1) r_t+k-1
    next_obs: torch.Tensor  # [B, *obs_shape]: the observation k steps later
    terminations: torch.Tensor  # [B], 1.0 where the episode terminated within the k steps
    discounts: torch.Tensor  # [B]: gamma^k, k = n or fewer where the episode ended sooner
    weights: torch.Tensor  # [B]: importance-sampling weights (all 1 for uniform replay)
    indices: np.ndarray  # [B]: the transitions' replay indices, to update their priorities


class FrameReplayBuffer:
    """dqn_atari.py's replay memory for any observation, with n-step transitions and, given a PrioritizedSampler, their
    priorities. Each env has its own ring of `capacity / num_envs` slots, filled in the order it produced its frames:
    an episode's first frame (marked `first`), then per step the newest frame of the true next observation (at an
    episode's end, of the final one, not the reset one); slot j also holds the action, reward and termination of the
    step from frame j to j + 1. An observation stacks the last 4 frames (Atari) or 1, padded after a reset with the
    episode's first, as FrameStackObservation does. Transition j, with k = n steps or fewer where its episode ends
    sooner, has obs = the stack ending at frame j, next_obs = the one ending at j + k, the return r_j + gamma r_j+1 +
    ... + gamma^(k-1) r_j+k-1 and the discount gamma^k. It is complete once frame j + n is written or its episode has
    ended, replayable while its obs frames are in the ring; its index (its sum-tree leaf) is env * slots + j % slots."""

    def __init__(self, capacity: int, num_envs: int, obs_space: gym.spaces.Box, n_step: int, gamma: float,
                 device: torch.device, priorities: Optional[PrioritizedSampler] = None):
        self.num_envs, self.n_step, self.gamma, self.device = num_envs, n_step, gamma, device
        self.priorities = priorities  # with --prioritized, the sum-tree of priorities
        self.stack = FRAME_STACK if len(obs_space.shape) == 3 else 1
        self.obs_shape, self.slots = obs_space.shape, math.ceil(capacity / num_envs)  # slots per env
        frame_shape = obs_space.shape[1:] if self.stack > 1 else obs_space.shape
        self.frames = np.zeros((num_envs, self.slots, *frame_shape), dtype=obs_space.dtype)  # committed as it fills
        self.actions = np.zeros((num_envs, self.slots), dtype=np.int64)
        self.rewards = np.zeros((num_envs, self.slots), dtype=np.float32)
        self.terminations = np.zeros((num_envs, self.slots), dtype=np.bool_)
        self.first = np.zeros((num_envs, self.slots), dtype=np.bool_)
        self.written = np.zeros(num_envs, dtype=np.int64)  # frames each env has written since the start

    @staticmethod
    def bytes_needed(capacity: int, obs_space: gym.spaces.Box, prioritized: bool) -> int:
        frame_shape = obs_space.shape[1:] if len(obs_space.shape) == 3 else obs_space.shape
        return capacity * (math.prod(frame_shape) * obs_space.dtype.itemsize + 14 + 16 * prioritized)

    @property
    def size(self) -> int:
        """Frames held, about the number of transitions (one frame per step, plus one per episode)."""
        return int(np.minimum(self.written, self.slots).sum())

    def write_frames(self, env_indices: np.ndarray, obs: np.ndarray, first: bool) -> None:
        slots = self.written[env_indices] % self.slots
        self.frames[env_indices, slots] = obs[:, -1] if self.stack > 1 else obs  # the newest frame
        self.first[env_indices, slots] = first
        self.written[env_indices] += 1
        if self.priorities is not None:  # transitions enter once complete, and leave with their oldest frame
            self.priorities.add(self.completed_indices(env_indices, episode_started=first))
            stale = self.lowest_slots(env_indices) - 1  # the transition whose oldest obs frame was just overwritten
            self.priorities.remove(env_indices[stale >= 0] * self.slots + stale[stale >= 0] % self.slots)

    def start_episodes(self, obs: np.ndarray, env_indices: np.ndarray) -> None:
        """Begin new episodes in envs `env_indices`, from their reset observations `obs`."""
        self.write_frames(env_indices, obs, first=True)

    def add(self, real_next_obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminations: np.ndarray):
        """Store one step per env: its action, reward, termination, and the newest frame of its true next obs."""
        every_env, head = np.arange(self.num_envs), (self.written - 1) % self.slots  # head: the obs's newest frame
        self.actions[every_env, head], self.rewards[every_env, head] = actions, rewards
        self.terminations[every_env, head] = terminations
        self.write_frames(every_env, real_next_obs, first=False)

    def windows(self, env_indices: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k [B], complete [B]) of transitions (env_indices, absolute slots j): their return sums steps j .. j+k-1,
        and it is final if k = n or the next frame starts a new episode."""
        ahead = slots[:, None] + np.arange(1, self.n_step + 1)  # [B, n]: frames j+1 .. j+n
        written = ahead < self.written[env_indices, None]  # [B, n]
        first = written & self.first[env_indices[:, None], ahead % self.slots]  # [B, n]: a new episode starts there
        k = np.cumprod(written & ~first, axis=1).sum(axis=1)  # [B]
        return k, (k == self.n_step) | first[np.arange(len(slots)), np.minimum(k, self.n_step - 1)]

    def lowest_slots(self, env_indices: np.ndarray) -> np.ndarray:
        """The oldest transition of each env whose obs frames j-stack+1 .. j are all still in the ring."""
        return np.maximum(self.written[env_indices] - self.slots + self.stack - 1, 0)

    def completed_indices(self, env_indices: np.ndarray, episode_started: bool) -> np.ndarray:
        """Transitions completed by the frame each of `env_indices` just wrote, each once: after a step, newest - n
        (its window now reaches that frame); after an episode's first frame, the ended episode's last n - 1."""
        offsets = np.arange(2, self.n_step + 1) if episode_started else np.array([self.n_step])  # j = newest - offset
        envs = np.repeat(env_indices, len(offsets))
        slots = (self.written[env_indices, None] - 1 - offsets).ravel()
        keep = slots >= self.lowest_slots(envs)  # the obs frames are still in the ring
        envs, slots = envs[keep], slots[keep]
        k, complete = self.windows(envs, slots)
        now = complete & (slots + k + int(episode_started) == self.written[envs] - 1)
        return envs[now] * self.slots + slots[now] % self.slots

    def uniform_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Replay indices [B], uniform over complete transitions: episode ends and incomplete ones are drawn again."""
        lowest = self.lowest_slots(np.arange(self.num_envs))
        candidates = np.maximum(self.written - 1 - lowest, 0)  # j <= written - 2: frame j+1 exists
        bounds = np.cumsum(candidates)  # [num_envs]
        env_indices, slots = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        while len(env_indices) < batch_size:
            draws = rng.integers(0, bounds[-1], size=batch_size - len(env_indices))
            envs = np.searchsorted(bounds, draws, side="right")
            js = lowest[envs] + draws - (bounds[envs] - candidates[envs])
            keep = ~self.first[envs, (js + 1) % self.slots] & self.windows(envs, js)[1]
            env_indices, slots = np.concatenate([env_indices, envs[keep]]), np.concatenate([slots, js[keep]])
        return env_indices * self.slots + slots % self.slots

    def stack_slots(self, env_indices: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Absolute slots [B, stack] of the frames of the stacks ending at frames `slots` [B] of envs `env_indices`."""
        window = np.maximum(slots[:, None] + np.arange(-self.stack + 1, 1), 0)  # [B, stack]
        starts = np.where(self.first[env_indices[:, None], window % self.slots], window, -1)  # [B, stack]
        return np.maximum(window, starts.max(axis=1, keepdims=True))  # before an episode's first frame: that frame

    def gather(self, env_indices: np.ndarray, slots: np.ndarray) -> torch.Tensor:
        """The observations [B, *obs_shape] that end at frames `slots` [B] of envs `env_indices` [B], on `device`."""
        stacks = self.frames[env_indices[:, None], self.stack_slots(env_indices, slots) % self.slots]
        return torch.from_numpy(stacks.reshape(len(slots), *self.obs_shape)).to(self.device)

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float) -> Batch:
        """A minibatch: drawn by priority with importance weights (beta: their exponent), else uniformly."""
        if self.priorities is not None:
            return self.batch(*self.priorities.sample(batch_size, rng, beta, self.size))
        return self.batch(self.uniform_indices(batch_size, rng), np.ones(batch_size, dtype=np.float32))

    def batch(self, indices: np.ndarray, weights: np.ndarray) -> Batch:
        """The n-step transitions with replay indices `indices` [B], with their importance weights [B]."""
        env_indices, ring = np.divmod(indices, self.slots)
        newest = self.written[env_indices] - 1
        slots = newest - (newest - ring) % self.slots  # the absolute slot j held at that ring slot
        k, _ = self.windows(env_indices, slots)  # [B]
        steps = np.arange(self.n_step)
        rewards = self.rewards[env_indices[:, None], (slots[:, None] + steps) % self.slots]  # [B, n]: steps j .. j+n-1
        returns = np.where(steps < k[:, None], rewards, 0.0) @ self.gamma ** steps  # [B]
        terminations = self.terminations[env_indices, (slots + k - 1) % self.slots].astype(np.float32)
        arrays = (self.actions[env_indices, ring], returns.astype(np.float32), terminations,
                  (self.gamma ** k).astype(np.float32), weights)
        actions, returns, terminations, discounts, weights = (torch.from_numpy(a).to(self.device) for a in arrays)
        return Batch(self.gather(env_indices, slots), actions, returns, self.gather(env_indices, slots + k),
                     terminations, discounts, weights, indices)

    def state_dict(self) -> dict:
        n = int(min(self.written.max(), self.slots))  # slots in use
        arrays = {name: torch.from_numpy(getattr(self, name)[:, :n]) for name in ("frames", "actions", "rewards",
                                                                                   "terminations", "first")}
        return arrays | {"written": torch.from_numpy(self.written.copy()), "slots": self.slots,
                         "priorities": self.priorities.state_dict() if self.priorities is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state["slots"] != self.slots or len(state["written"]) != self.num_envs:
            raise ConfigError(f"the saved replay has {len(state['written'])} envs x {state['slots']} slots; these "
                              f"settings need {self.num_envs} x {self.slots} (keep --num-envs and --buffer-size)")
        for name in ("frames", "actions", "rewards", "terminations", "first"):
            for start in range(0, state[name].shape[1], 100_000):  # in chunks: no second copy of a large replay
                chunk = state[name][:, start:start + 100_000]
                getattr(self, name)[:, start:start + chunk.shape[1]] = chunk.numpy()
        self.written = state["written"].numpy().copy()
        if self.priorities is not None and state["priorities"] is not None:
            self.priorities.load_state_dict(state["priorities"])


def linear_schedule(start: float, end: float, duration: float, step: int) -> float:
    """Value going linearly from `start` at step 0 to `end` at `duration`, then staying at `end`."""
    return end if duration <= 0 else start + (end - start) * min(step / duration, 1.0)


def epsilon_greedy(q_network: QNetwork, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """One action per row of `obs` [N]: uniformly random with probability epsilon, else argmax_a Q(obs, a)."""
    explore = rng.random(len(obs)) < epsilon  # [N]
    n_explore = np.count_nonzero(explore)
    actions = np.zeros(len(obs), dtype=np.int64) if n_explore == len(obs) else greedy_actions(q_network, obs)  # [N]
    if n_explore:  # no network call when every env explores, no random draw when none does
        actions[explore] = rng.integers(q_network.n_actions, size=n_explore)
    return actions


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true next observation of each env. gymnasium's SAME_STEP autoreset returns, for an env whose episode just
    ended, the first observation of its next episode; the last one of the ended episode is in infos["final_obs"]."""
    if "_final_obs" not in infos:
        return next_obs
    real_next_obs = next_obs.copy()
    for i in np.flatnonzero(infos["_final_obs"]):
        real_next_obs[i] = infos["final_obs"][i]
    return real_next_obs


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma) -> torch.Tensor:
    """TD target r + gamma * next_q (DQN: max_a' Q_target(s', a')), cut at terminations (never at truncations); with
    n-step returns r is the n-step return and gamma the discount gamma^k of each transition [B]."""
    return rewards + gamma * (1.0 - terminations) * next_q  # [B]


def double_q_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q_online: torch.Tensor,
                    next_q_target: torch.Tensor, gamma) -> torch.Tensor:
    """Double DQN target (van Hasselt et al. 2016, eq. 4): the online network picks a* = argmax_a' Q(s', a'), the
    target network values it, r + gamma * Q_target(s', a*). Given the target network's own Q as `next_q_online` it is
    DQN's max_a' Q_target(s', a'), which picks and values with the same noisy estimates and so is biased upwards."""
    next_actions = next_q_online.argmax(dim=1, keepdim=True)  # [B, 1]
    return td_target(rewards, terminations, next_q_target.gather(1, next_actions).squeeze(1), gamma)  # [B]


def weighted_td_loss(q_values: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, loss: str,
                     huber_delta: float) -> torch.Tensor:
    """mean_i w_i * L(y_i - Q(s_i, a_i)), L the squared error or the Huber loss (squared up to `huber_delta`, linear
    beyond); the importance weights w [B] undo prioritized replay's bias (Schaul et al. 2016; all 1 for uniform)."""
    losses = F.mse_loss(q_values, targets, reduction="none") if loss == "mse" else \
        F.huber_loss(q_values, targets, reduction="none", delta=huber_delta)  # [B]
    return (weights * losses).mean()


@torch.no_grad()
def update_target(target_network: nn.Module, q_network: nn.Module, tau: float) -> None:
    """theta_target <- tau * theta + (1 - tau) * theta_target (Polyak averaging); tau = 1 is the paper's hard copy
    (lerp with weight 1 returns its end point exactly)."""
    for target_param, param in zip(target_network.parameters(), q_network.parameters()):
        target_param.lerp_(param, tau)


def make_optimizer(parameters, args: Args) -> torch.optim.Optimizer:
    """Adam, fused (one kernel for all parameters: 11% fewer instructions per step, benchmarks/sps.py), or Mnih et
    al. 2015's RMSProp: centered, both averages 0.95, 0.01 added to the root of the squared gradients' variance."""
    if args.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=args.learning_rate, alpha=0.95, eps=0.01, centered=True)
    return torch.optim.Adam(parameters, lr=args.learning_rate, fused=True)


def train(args: Args, run: "Run") -> None:
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id, args.terminal_on_life_loss, args.noop_max)
                                     for _ in range(args.num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_space, n_actions = envs.single_observation_space, int(envs.single_action_space.n)
    q_network = QNetwork(obs_space.shape, n_actions, args.hidden_sizes, args.dueling).to(run.device)
    eval_env = partial(make_env, args.env_id, False, args.noop_max)  # evaluation plays whole games
    if run.evaluating:  # --eval-checkpoint: load the network and evaluate it; no replay, no training
        envs.close()
        return evaluate_checkpoint(run, partial(epsilon_greedy, q_network), eval_env, q_network=q_network)
    target_network = QNetwork(obs_space.shape, n_actions, args.hidden_sizes, args.dueling).to(run.device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = make_optimizer(q_network.parameters(), args)
    check_memory(FrameReplayBuffer.bytes_needed(args.buffer_size, obs_space, args.prioritized), "--buffer-size")
    priorities = PrioritizedSampler(args.num_envs * math.ceil(args.buffer_size / args.num_envs), args.alpha,
                                    args.priority_epsilon) if args.prioritized else None  # one leaf per replay slot
    replay_buffer = FrameReplayBuffer(args.buffer_size, args.num_envs, obs_space, args.n_step, args.gamma, run.device,
                                      priorities)
    obs = start_run(run, envs, policy=partial(epsilon_greedy, q_network), eval_env=eval_env,
                    replay=replay_buffer, q_network=q_network, target_network=target_network, optimizer=optimizer)
    replay_buffer.start_episodes(obs, np.arange(args.num_envs))
    # learning starts once the replay holds learning_starts transitions: a run resumed without it fills it again
    learning_starts = args.learning_starts + (0 if run.replay_restored else run.start_step)
    exploration_steps = args.exploration_fraction * args.total_timesteps  # epsilon falls over these first steps
    # global_step: env steps so far, summed over the envs, this iteration's included
    for global_step in range(run.start_step + args.num_envs, args.total_timesteps + args.num_envs, args.num_envs):
        # act epsilon-greedily, epsilon falling linearly from start_e to end_e, and step every env once
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
        actions = epsilon_greedy(q_network, obs, epsilon, run.rng)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        log_episodes(run, global_step, infos)
        # store the step, with the newest frame of its true next obs (a truncated episode keeps terminated 0, so its
        # target bootstraps); new transitions enter the prioritized replay at the largest priority so far
        replay_buffer.add(final_observations(next_obs, infos), actions, rewards, terminations)
        if (dones := np.logical_or(terminations, truncations)).any():
            replay_buffer.start_episodes(next_obs[dones], np.flatnonzero(dones))
        obs = next_obs

        if global_step > learning_starts:
            # every train_frequency steps: a gradient step on the TD errors of a minibatch from the replay
            for _ in range(args.gradient_steps * due(global_step, args.train_frequency, args.num_envs)):
                if args.end_learning_rate is not None:  # the learning rate falls linearly over the run, if asked
                    optimizer.param_groups[0]["lr"] = linear_schedule(args.learning_rate, args.end_learning_rate,
                                                                      args.total_timesteps, global_step)
                # beta: from beta_start to 1 over the run, the full correction at the end (Schaul et al. 2016)
                beta = linear_schedule(args.beta_start, 1.0, args.total_timesteps, global_step)
                batch = replay_buffer.sample(args.batch_size, run.rng, beta)
                with torch.no_grad():  # the online network picks the next action, the target network values it
                    next_q_target = target_network(batch.next_obs)  # [B, A]
                    picker = q_network(batch.next_obs) if args.double else next_q_target  # --no-double: DQN's max
                    targets = double_q_target(batch.returns, batch.terminations, picker, next_q_target, batch.discounts)
                q_values = q_network(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)  # [B]: Q(s, a)
                loss = weighted_td_loss(q_values, targets, batch.weights, args.loss, args.huber_delta)
                optimizer.zero_grad()
                loss.backward()
                if args.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                optimizer.step()
                if args.prioritized:  # p_i = |delta_i| + epsilon for the replayed transitions
                    replay_buffer.priorities.update(batch.indices, (targets - q_values).detach().cpu().numpy())
                log_update(run, loss, q_values, epsilon=epsilon, **({"beta": beta} if args.prioritized else {}))
            # every target_network_frequency steps: the target network follows the online one
            if due(global_step, args.target_network_frequency, args.num_envs):
                update_target(target_network, q_network, args.tau)
        # every eval_frequency steps and at the last: evaluate and save the checkpoints; the progress line; stops
        if due(global_step, run.run_args.eval_frequency, args.num_envs) or global_step >= args.total_timesteps:
            evaluate_and_save(run)
        show_progress(run, args.total_timesteps)
        if stop_requested(run):  # Ctrl-C or SIGTERM (the checkpoint is saved first), divergence, --target-return
            break
    envs.close()


# %% Harness: all a run needs that is not DQN, the same text in all four scripts (a test compares it). The script above
# defines `Args`, `RUN_DEFAULTS`, `check_args(args, run_args)` and `train(args, run)`, and imports what both use (math,
# numpy, torch, gymnasium, dataclass, Optional, Callable); the rest comes in as arguments.
import contextlib, csv, dataclasses, importlib.util, json, os, random, shutil, signal, sys, tempfile  # noqa: E401, E402
import threading, time, warnings  # noqa: E401, E402
fcntl = importlib.import_module("fcntl") if os.name == "posix" else None  # the run directory's lock (not on Windows)
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # --capture-video: pygame draws off-screen, seeking no display
warnings.filterwarnings("ignore", ".*Overwriting existing videos")  # each evaluation's video has a name of its own
from pathlib import Path  # noqa: E402
from typing import Any, Literal, Union, get_args, get_origin  # noqa: E402

import tyro  # noqa: E402

SCRIPT = Path(__file__).stem


@dataclass
class RunArgs:
    """How a run is seeded, tracked, evaluated, saved and resumed: the same options in every script."""
    exp_name: str = SCRIPT  # name of this experiment, part of the run directory name
    seed: int = 1  # seed of python, numpy, torch and the environments (0 to 2**32 - 1)
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic: GPU runs repeat as closely as it can
    cuda: bool = False  # use the GPU when one is available (a warning and the CPU otherwise)
    torch_threads: int = 1  # CPU threads for torch: 1 is fastest for small networks, even on a busy CPU; 0: one a core
    track: bool = False  # log to Weights & Biases as well (with WANDB_MODE=offline, locally only)
    wandb_project_name: str = "dqn"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team); None: your default entity
    capture_video: bool = False  # record the first episode of every evaluation to {run_dir}/videos/
    save_model: bool = True  # write checkpoint.pt (the latest) and best.pt (the best evaluation) at every evaluation
    save_replay: bool = False  # with each checkpoint.pt, write the replay to replay.pt: a resumed run keeps its memory
    resume: Optional[str] = None  # a run directory (or its checkpoint.pt) to continue, there and with its settings
    eval_checkpoint: Optional[str] = None  # a checkpoint (or run directory) to evaluate for --eval-episodes episodes
    runs_dir: str = "runs"  # folder under which every run gets its own directory
    eval_frequency: int = 10_000  # env steps between evaluations (these three: each script's RUN_DEFAULTS)
    eval_episodes: int = 10  # episodes per evaluation
    eval_epsilon: float = 0.0  # probability of a random action in evaluation (0: greedy, as SB3's deterministic=True)
    target_return: Optional[float] = None  # stop training as soon as an evaluation mean reaches this return


class ConfigError(ValueError):
    """A setting, env or checkpoint this script cannot use: reported in one line, before any file is written."""


RANGES = [  # the settings that every script has: (names, test, what the test asks)
    (("total_timesteps", "num_envs", "buffer_size", "batch_size", "target_network_frequency", "train_frequency",
      "gradient_steps", "eval_frequency", "eval_episodes"), lambda x: x >= 1, ">= 1"),
    (("gamma", "start_e", "end_e", "exploration_fraction", "eval_epsilon"), lambda x: 0 <= x <= 1, "in [0, 1]"),
    (("tau",), lambda x: 0 < x <= 1, "in (0, 1]"), (("learning_rate",), lambda x: x > 0, "> 0"),
    (("max_grad_norm",), lambda x: x is None or x > 0, "> 0 or None"),
    (("learning_starts", "torch_threads"), lambda x: x >= 0, ">= 0"),
    (("seed",), lambda x: 0 <= x < 2**32, "in [0, 2**32 - 1], the seeds numpy takes")]


def general_problems(args, run_args: RunArgs) -> list[str]:
    """What is wrong with the settings that every script has, one message each."""
    settings = dataclasses.asdict(args) | dataclasses.asdict(run_args)
    infinite = [name for name, value in settings.items() if any(
        isinstance(x, float) and not math.isfinite(x) for x in (value if isinstance(value, tuple) else [value]))]
    problems = [f"--{name.replace('_', '-')} must be a finite number (got {settings[name]})" for name in infinite]
    problems += [f"--{name.replace('_', '-')} must be {what} (got {settings[name]})" for names, test, what in RANGES
                 for name in names if name not in infinite and not test(settings[name])]
    if not args.hidden_sizes or min(args.hidden_sizes) < 1:
        problems.append(f"--hidden-sizes needs one or more widths >= 1 (got {list(args.hidden_sizes)})")
    if args.batch_size > args.buffer_size:
        problems.append(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    if args.learning_starts < args.batch_size:
        problems.append(f"--learning-starts {args.learning_starts} must be >= --batch-size {args.batch_size}")
    if args.learning_starts >= args.total_timesteps:
        problems.append(f"--learning-starts {args.learning_starts} must be < --total-timesteps {args.total_timesteps}")
    if run_args.resume is not None and run_args.eval_checkpoint is not None:
        problems.append("--resume and --eval-checkpoint exclude each other")
    if run_args.capture_video and importlib.util.find_spec("moviepy") is None:  # gymnasium's RecordVideo needs it
        problems.append("--capture-video needs moviepy: pip install -r requirements.txt")
    if any(character in run_args.exp_name for character in "/\\\0") or run_args.exp_name in ("", ".", ".."):
        problems.append(f"--exp-name must be a name, not a path: it names the run's folder (got {run_args.exp_name!r})")
    return problems


def check_writable(folder: Path, what: str) -> None:
    """Try writing in `folder` (making it, then removing what was made): a ConfigError naming it and why, if not."""
    made = [path for path in [folder.absolute(), *folder.absolute().parents] if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        why = "it is a file, not a folder" if isinstance(error, FileExistsError) else error.strerror.lower()
        raise ConfigError(f"{what} {str(folder)!r} cannot be written: {why}") from None
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()


def fits(value, annotation) -> bool:
    """Whether `value` (read from an untrusted checkpoint) has the type that a setting declares."""
    origin, options = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return value in options
    if origin is Union:
        return any(fits(value, option) for option in options)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(fits(item, options[0]) for item in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return value is None if annotation is type(None) else type(value) is annotation


def due(global_step: int, every: int, num_envs: int) -> int:
    """How many multiples of `every` the env steps of this iteration, (global_step - num_envs, global_step], crossed:
    0 or 1, more when num_envs > every (so that several envs train, sync and evaluate as often as one)."""
    return global_step // every - (global_step - num_envs) // every


def greedy_actions(network: nn.Module, obs: np.ndarray) -> np.ndarray:
    """argmax over the last axis of network(obs) (or of its `greedy_network`, with the same argmax) for a NumPy batch
    obs: the greedy actions [N]. An MLP (Linear, ReLU, ..., Linear) on the CPU runs in NumPy on views of its parameters
    (torch's dispatch costs more than a batch-1 forward): a whole default run 11% shorter (docs/benchmarks.md)."""
    network = network.__dict__.get("greedy_network", network)
    cached = network.__dict__.get("numpy_views")  # (first weight, its data_ptr, views), or Nones for torch
    if cached is None or cached[0] is not None and cached[0].data_ptr() != cached[1]:  # the first call, or moved
        layers = list(network) if isinstance(network, nn.Sequential) else []
        mlp = len(layers) % 2 == 1 and all(isinstance(layer, nn.ReLU if i % 2 else nn.Linear)
                                           for i, layer in enumerate(layers)) and layers[0].weight.is_cpu
        cached = network.__dict__["numpy_views"] = (layers[0].weight, layers[0].weight.data_ptr(), [
            (layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in layers[::2]]) if mlp \
            else (None, None, None)
    if cached[2] is None:
        with torch.inference_mode():
            return network(torch.as_tensor(obs, device=next(network.parameters()).device)).argmax(dim=1).cpu().numpy()
    x = obs.astype(np.float32, copy=False)
    for weight_t, bias in cached[2][:-1]:
        x = x @ weight_t  # [N, hidden]
        x += bias
        np.maximum(x, 0.0, out=x)
    return (x @ cached[2][-1][0] + cached[2][-1][1]).argmax(axis=1)  # [N]


def evaluate(policy: Callable, env_thunk: Callable[[], gym.Env], n_episodes: int, epsilon: float, seed: int,
             stopped: Callable[[], bool] = lambda: False) -> Optional[list[float]]:
    """The undiscounted returns of `n_episodes` episodes of `policy(obs, epsilon, rng)`; None if `stopped()`."""
    env, rng, returns = env_thunk(), np.random.default_rng(seed), []
    obs, _ = env.reset(seed=seed)
    while len(returns) < n_episodes and not stopped():
        obs, _, terminated, truncated, info = env.step(int(policy(obs[None], epsilon, rng)[0]))
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    env.close()
    return returns if len(returns) == n_episodes else None


def write_atomically(path: Path, write: Callable, mode: str = "wb") -> None:
    """Write a whole file or none: `write(file)` into path.tmp, then renamed over `path`. A crash, Ctrl-C, SIGTERM or a
    full disk leaves the previous file intact; a failed write raises an OSError that names `path`."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, mode, **({} if "b" in mode else dict(newline=""))) as file:
            write(file)
            file.flush()  # then to the disk: a crash of the machine leaves a whole file too
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        failed = error if isinstance(error, OSError) else error.__context__  # torch's zip writer wraps a failed write
        if isinstance(failed, OSError):
            raise OSError(failed.errno, failed.strerror, str(path)) from None
        raise


def save_checkpoint(path: Path, state: dict) -> None:
    write_atomically(path, lambda file: torch.save(state, file))


def read_checkpoint(given: str, mmap: bool = False) -> tuple[Path, dict]:
    """The checkpoint at `given` (a run directory: its checkpoint.pt), of tensors and plain data only (weights_only)."""
    path = Path(given) / "checkpoint.pt" if Path(given).is_dir() else Path(given)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # truncated, corrupted, not a torch file, or holding Python objects
        why = "it holds Python objects, which are not loaded (only tensors and plain data: weights_only=True)" if \
            "Unsupported global" in str(error) else "it is truncated or corrupted"
        raise ConfigError(f"cannot read {str(path)!r}: {why}") from None
    if not isinstance(checkpoint, dict) or "global_step" not in checkpoint:
        raise ConfigError(f"{str(path)!r} is not a checkpoint of these scripts")
    return path, checkpoint


def optimizer_fits(thing, fresh_types: list[dict]) -> bool:
    """Whether a loaded optimizer has the setting types of a fresh one (`fresh_types`), finite settings, and moments of
    its parameters' shapes (torch checks none of these on load); anything else that loaded fits."""
    if not isinstance(thing, torch.optim.Optimizer):
        return True
    return [{key: type(value) for key, value in group.items()} for group in thing.param_groups] == fresh_types and all(
        math.isfinite(value) for group in thing.param_groups for value in group.values() if isinstance(value, float)
    ) and all(value.shape in (parameter.shape, ()) for parameter, state in thing.state.items()
              for value in state.values() if isinstance(value, torch.Tensor))


MODEL_FIELDS = dict(script=str, env_id=str, args=dict, run_args=dict, global_step=int, state=dict)  # to evaluate
RESUME_FIELDS = MODEL_FIELDS | dict(updates=int, best_eval_mean=float, replay_saved=bool, rng=dict, classes=dict)


def check_fields(path: Path, checkpoint: dict, fields: dict) -> None:
    """Refuse a checkpoint (untrusted input) that lacks one of `fields` or holds it with another type."""
    if wrong := [name for name, kind in fields.items() if type(checkpoint.get(name)) is not kind]:
        raise ConfigError(f"{str(path)!r} is not a whole checkpoint: {', '.join(wrong)} missing or of the wrong type")


class Run:
    """What the harness functions below share about one run: settings, checkpoint, device, counters, open files."""

    def __init__(self, args, run_args: RunArgs, device: torch.device, checkpoint_file: Optional[Path],
                 checkpoint: Optional[dict]):
        self.args, self.run_args, self.device, self.checkpoint_file, self.checkpoint = (args, run_args, device,
                                                                                        checkpoint_file, checkpoint)
        self.evaluating = run_args.eval_checkpoint is not None  # --eval-checkpoint: evaluate, do not train
        self.rng = np.random.default_rng(run_args.seed)  # the loop's draws: exploration and replay sampling
        self.global_step = self.start_step = self.updates = 0
        self.best_eval_mean, self.eval_returns, self.status, self.signal = -math.inf, None, "running", None
        self.run_dir, self.metrics, self.wandb_run, self.replay, self.replay_restored = None, None, None, None, False
        self.charts, self.recent_returns, self.handlers, self.lock_fd = {}, [], {}, None
        self.losses = [0.0, 0.0]  # the TD loss and the mean Q-value, as read back at the last logging
        self.start_time = self.last_print = time.perf_counter()
        self.clear_line = "\r\x1b[K" if sys.stdout.isatty() else ""  # a terminal redraws the progress line in place
        self.eval_metrics = lambda returns: {}  # more evaluation metrics, {name: value} (dqn_lunar.py: landing rate)


def open_run(args, run_args: RunArgs) -> Run:
    """Check the settings and the checkpoint to resume or evaluate, try the folder to write to, pick the device, set
    the threads and seeds: the Run, or a ConfigError before anything is written."""
    if problems := general_problems(args, run_args) or check_args(args, run_args):  # the script's own second
        raise ConfigError("; ".join(problems))
    evaluating, checkpoint_file, checkpoint = run_args.eval_checkpoint is not None, None, None
    if run_args.resume is not None or evaluating:
        checkpoint_file, checkpoint = read_checkpoint(run_args.resume or run_args.eval_checkpoint)
        check_checkpoint(checkpoint_file, checkpoint, args, resuming=not evaluating)
    if not evaluating or run_args.capture_video:  # the folder this run writes to (with --eval-checkpoint: videos)
        check_writable(checkpoint_file.parent if checkpoint_file else Path(run_args.runs_dir),
                       "--runs-dir" if checkpoint_file is None else "the run directory")
    if run_args.cuda and not torch.cuda.is_available():
        print("warning: --cuda given but CUDA is not available; using the CPU", file=sys.stderr)
    if run_args.torch_threads > 0:
        torch.set_num_threads(run_args.torch_threads)
    for seed in (random.seed, np.random.seed, torch.manual_seed):
        seed(run_args.seed)
    torch.backends.cudnn.deterministic = run_args.torch_deterministic
    device = torch.device("cuda" if run_args.cuda and torch.cuda.is_available() else "cpu")
    return Run(args, run_args, device, checkpoint_file, checkpoint)


def check_checkpoint(path: Path, checkpoint: dict, args, resuming: bool) -> None:
    """Refuse a checkpoint of another script or env, with a field missing or of the wrong type, or finished."""
    if checkpoint.get("script") != SCRIPT:
        raise ConfigError(f"{str(path)!r} is not a {SCRIPT}.py checkpoint (it comes from {checkpoint.get('script')})")
    if checkpoint["env_id"] != args.env_id:
        raise ConfigError(f"{str(path)!r} was trained on {checkpoint['env_id']}, not {args.env_id}")
    check_fields(path, checkpoint, RESUME_FIELDS if resuming else MODEL_FIELDS)
    if checkpoint["global_step"] < 0:
        raise ConfigError(f"{str(path)!r} is not a whole checkpoint: its global_step is {checkpoint['global_step']}")
    if resuming and checkpoint["global_step"] >= args.total_timesteps:
        raise ConfigError(f"{str(path)!r} is finished: it has run {checkpoint['global_step']:,} steps; training on "
                          "needs a larger --total-timesteps")


def check_memory(nbytes: int, setting: str, device: torch.device = torch.device("cpu")) -> None:
    """Refuse, before it is allocated, a replay that would take more than 80% of the memory free on `device`."""
    free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # Linux: MemAvailable, free and in caches
    for line in open("/proc/meminfo") if os.path.exists("/proc/meminfo") else ():
        free = int(line.split()[1]) * 1024 if line.startswith("MemAvailable:") else free
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else free
    if nbytes > 0.8 * free:
        raise ConfigError(f"the replay buffer needs {nbytes / 1e9:,.1f} GB and the machine has {free / 1e9:,.1f} "
                          f"GB available{' on the GPU' if device.type == 'cuda' else ''}: lower {setting}")


def load_state(run: Run, state: dict) -> None:
    """Restore `state` (networks, optimizer) from the checkpoint: each must be there, of its class and its shapes."""
    for name, thing in state.items():
        if run.checkpoint.get("classes", {}).get(name, type(thing).__name__) != type(thing).__name__:
            raise ConfigError(f"{str(run.checkpoint_file)!r} holds a {run.checkpoint['classes'][name]} as "
                              f"{name}")  # another --optimizer
        fresh = [{key: type(value) for key, value in group.items()} for group in getattr(thing, "param_groups", [])]
        try:
            thing.load_state_dict(run.checkpoint["state"][name])
            if not optimizer_fits(thing, fresh):
                raise ValueError(f"its {name} has settings of other types, not finite, or moments of other shapes")
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise ConfigError(f"{str(run.checkpoint_file)!r} does not fit these settings (another --hidden-sizes?): "
                              f"{' '.join(str(error).split())[:300]}") from None


def evaluate_checkpoint(run: Run, policy: Callable, eval_env: Callable, **networks) -> None:
    """--eval-checkpoint: load `networks` from the checkpoint and evaluate `policy` on `eval_env`; no training."""
    load_state(run, networks)
    run.global_step, run.status, step = run.checkpoint["global_step"], "evaluated", run.checkpoint["global_step"]
    video_dir = str(run.checkpoint_file.parent / "videos") if run.run_args.capture_video else None
    run.eval_returns = evaluate(policy, eval_env(video_dir, f"eval-checkpoint-step{step}"), run.run_args.eval_episodes,
                                run.run_args.eval_epsilon, run.run_args.seed)
    print(f"{run.args.env_id}: {len(run.eval_returns)} episodes, return {np.mean(run.eval_returns):.2f} "
          f"± {np.std(run.eval_returns):.2f}{metrics_text(run)} (checkpoint at step {step:,})")


def start_run(run: Run, envs: gym.vector.VectorEnv, policy: Callable, eval_env: Callable, replay,
              **state) -> np.ndarray:
    """Take what to evaluate (`policy(obs, epsilon, rng)` on `eval_env(video_dir, video_prefix)()`) and to checkpoint
    (`replay`, `state`); restore them on a resume; open the run directory and its logs; return the first obs."""
    run.policy, run.eval_env, run.replay, run.state = policy, eval_env, replay, state
    if run.checkpoint is not None:
        restore(run)
        run.run_dir = run.checkpoint_file.parent  # nothing was written before this line: an error leaves no trace
    else:
        run.run_dir = Path(run.run_args.runs_dir) / "__".join([run.args.env_id.replace("/", "-").replace(":", "-"),
                                                                run.run_args.exp_name, str(run.run_args.seed),
                                                                str(int(time.time()))])
        while True:  # two runs started in the same second take two names
            try:
                run.run_dir.mkdir(parents=True)
                break
            except FileExistsError:
                run.run_dir = run.run_dir.with_name(run.run_dir.name + "_")
    run.lock_fd = lock(run.run_dir)
    open_logs(run)
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, kill, timeout, a job scheduler: save, then stop
        run.handlers[signum] = signal.signal(signum, lambda signum, frame: on_signal(run, signum))
    run.start_time = run.last_print = time.perf_counter()
    # a resumed run restarts its episodes from fresh resets; the seed is shifted so they differ from the first ones
    return envs.reset(seed=run.run_args.seed + run.global_step)[0]


def restore(run: Run) -> None:
    """A resume: the networks, optimizer, counters and random states of the checkpoint, and its replay if saved."""
    load_state(run, run.state)
    run.global_step = run.start_step = run.checkpoint["global_step"]
    run.updates, run.best_eval_mean = run.checkpoint["updates"], run.checkpoint["best_eval_mean"]
    try:
        run.rng.bit_generator.state = run.checkpoint["rng"]["numpy"]
        torch.set_rng_state(run.checkpoint["rng"]["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{str(run.checkpoint_file)!r} is not a whole checkpoint: its rng") from None
    replay_file = run.checkpoint_file.parent / "replay.pt"
    if run.checkpoint["replay_saved"] and replay_file.exists():
        _, saved = read_checkpoint(replay_file, mmap=True)  # mmap: no second copy in memory
        check_fields(replay_file, saved, dict(global_step=int, replay=dict))
        if saved["global_step"] == run.global_step:  # else a crash came between the two writes: too new
            try:
                run.replay.load_state_dict(saved["replay"])
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
                raise ConfigError(f"{str(replay_file)!r} does not fit this replay: {error}") from None
            run.replay_restored = True


def lock(folder: Path) -> int:
    """One run directory, one process: an OS lock on the folder, which ends with this process (kill -9 too)."""
    lock_fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise ConfigError(f"{folder} is in use by another process (its run, or a resume of it): wait until it "
                          "ends") from None
    return lock_fd


def open_logs(run: Run) -> None:
    """args.json, metrics.csv (on a resume, cut back to the checkpoint's step), TensorBoard and wandb."""
    if run.checkpoint is not None:
        rows = []  # the steps after the checkpoint come again (a checkpoint copied out of its run starts afresh)
        with contextlib.suppress(FileNotFoundError), open(run.run_dir / "metrics.csv", newline="") as file:
            rows = [row for row in csv.reader(file) if len(row) == 4 and (  # a line cut short by a crash goes too
                row[0] == "global_step" or row[0].isdigit() and int(row[0]) <= run.global_step)]
        write_atomically(run.run_dir / "metrics.csv", lambda file: csv.writer(file).writerows(rows), "w")
        print(f"resuming {run.run_dir} at step {run.global_step:,}"
              + ("" if run.replay_restored else " with an empty replay buffer"))
    settings = {"args": dataclasses.asdict(run.args), "run_args": dataclasses.asdict(run.run_args)}
    flat = settings["args"] | settings["run_args"]
    write_atomically(run.run_dir / "args.json", lambda file: file.write(json.dumps(flat, indent=2)), "w")
    if run.run_args.track:
        import wandb
        run.wandb_run = wandb.init(project=run.run_args.wandb_project_name, entity=run.run_args.wandb_entity,
                                   name=run.run_dir.name, id=run.run_dir.name.replace(".", "-"), resume="allow",
                                   dir=str(run.run_dir), config=settings)
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard event files, imported only for training
    threading.excepthook = lambda hook: None if issubclass(hook.exc_type, OSError) else threading.__excepthook__(
        hook)  # its writer thread's failed write (a full disk) is reported once, by the next add_scalar
    run.tensorboard = SummaryWriter(run.run_dir, purge_step=run.global_step + 1 if run.checkpoint else None)
    table = "\n".join(f"| {name} | {value} |" for name, value in flat.items())
    run.tensorboard.add_text("hyperparameters", "| setting | value |\n| --- | --- |\n" + table, run.global_step)
    run.metrics = open(run.run_dir / "metrics.csv", "a", newline="")  # flushed per row: a crash loses nothing
    run.metrics_writer = csv.writer(run.metrics)
    if run.metrics.tell() == 0:  # a new file
        run.metrics_writer.writerow(["global_step", "wall_time", "name", "value"])


def on_signal(run: Run, signum: int) -> None:
    if run.signal is not None:  # a second Ctrl-C: stop at once
        raise KeyboardInterrupt
    run.signal = signum  # the loop stops after this step, so that the checkpoint holds whole steps


def log(run: Run, name: str, value: float) -> None:
    """One row `global_step, wall_time, name, value` of metrics.csv, the same to TensorBoard, and to wandb."""
    try:
        run.metrics_writer.writerow([run.global_step, f"{time.time():.3f}", name, f"{value:.6g}"])
        run.metrics.flush()
    except OSError as error:  # a full disk: name the file
        raise OSError(error.errno, error.strerror, run.metrics.name) from None
    try:  # TensorBoard writes in a thread of its own, which hands a failed write to the next call
        run.tensorboard.add_scalar(name, value, run.global_step)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(next(run.run_dir.glob("events.out.tfevents.*")))) from None
    if run.wandb_run is not None:
        run.wandb_run.log({name: value, "global_step": run.global_step})


def log_episodes(run: Run, global_step: int, infos: dict) -> None:
    """Log the episodes that ended at step `global_step` (in infos["final_info"]; not at an Atari lost life)."""
    run.global_step = global_step  # the step that the harness logs and saves at from now on
    final_info = infos.get("final_info", {})
    for i in np.flatnonzero(final_info["_episode"]) if "episode" in final_info else ():
        run.recent_returns = (run.recent_returns + [float(final_info["episode"]["r"][i])])[-20:]
        log(run, "charts/episodic_return", float(final_info["episode"]["r"][i]))
        log(run, "charts/episodic_length", float(final_info["episode"]["l"][i]))


def log_update(run: Run, loss: torch.Tensor, q_values: torch.Tensor, **charts: float) -> None:
    """After a gradient step: every 100, log the loss, the mean Q, `charts` and the SPS. Only then are the loss and
    Q read back (one read: on a GPU, the other updates never wait for it)."""
    run.updates, run.charts = run.updates + 1, charts
    if run.updates % 100 == 0:
        run.losses = torch.stack([loss.detach(), q_values.detach().mean()]).tolist()  # [TD loss, mean Q]
        sps = (run.global_step - run.start_step) / (time.perf_counter() - run.start_time)
        for name, value in {"losses/td_loss": run.losses[0], "losses/q_values": run.losses[1], **{
                f"charts/{name}": value for name, value in charts.items()}, "charts/SPS": sps}.items():
            log(run, name, value)


def diverged(run: Run, what: str) -> None:
    if run.status == "running":
        run.status = "diverged"  # and no checkpoint is written from now on: the last one, still finite, stays
        print(f"\nerror: {what} at step {run.global_step:,}: the Q-network diverged, most often from a too high "
              f"--learning-rate {run.args.learning_rate}; the last finite checkpoint is kept", file=sys.stderr)


def stop_requested(run: Run) -> bool:
    """Whether the loop stops after this step: Ctrl-C or SIGTERM came (then the checkpoint is saved at this step,
    and the resume command printed), the network diverged (a loss or mean Q read at the last logging, or a parameter
    at the last evaluation, is not finite), or an evaluation reached --target-return."""
    if not all(map(math.isfinite, run.losses)):  # the TD loss and the mean Q, as read at the last logging
        diverged(run, f"the TD loss is {run.losses[0]} and the mean Q-value {run.losses[1]}")
    if run.signal is not None and run.status == "running":
        if run.run_args.save_model:
            save_latest(run)  # which finds a network that is not finite, if it is one: then the run has diverged
        if run.status == "running":
            run.status, name = "interrupted", signal.Signals(run.signal).name
            then = f"continue with python {SCRIPT}.py --resume {run.run_dir}" if run.global_step < \
                run.args.total_timesteps else f"evaluate it with python {SCRIPT}.py --eval-checkpoint {run.run_dir}"
            print(f"\n{name} at step {run.global_step:,}" + (f": saved, {then}" if run.run_args.save_model else ""),
                  file=sys.stderr)
    return run.status != "running"


def evaluate_and_save(run: Run) -> None:
    """Evaluate, log, save checkpoint.pt and best.pt (never a network that is not finite), stop at the target."""
    video_dir = str(run.run_dir / "videos") if run.run_args.capture_video else None
    returns = evaluate(run.policy, run.eval_env(video_dir, f"eval-step{run.global_step}"), run.run_args.eval_episodes,
                       run.run_args.eval_epsilon, run.run_args.seed + 100_000 + run.global_step,
                       lambda: run.signal is not None)
    if returns is None:  # a signal came during the evaluation
        return
    mean, run.eval_returns = float(np.mean(returns)), returns
    for name, value in {"episodic_return": mean, "episodic_return_std": float(np.std(returns)),
                        **run.eval_metrics(returns)}.items():
        log(run, f"eval/{name}", value)
    print(f"{run.clear_line}step {run.global_step:>9,}  eval return {mean:9.2f} ± {np.std(returns):7.2f} "
          f"over {len(returns)} episodes{metrics_text(run)}", flush=True)
    best, run.best_eval_mean = mean > run.best_eval_mean, max(run.best_eval_mean, mean)
    if run.run_args.save_model:
        save_latest(run)
        if best and run.status == "running":  # (not if the network has diverged)
            save_checkpoint(run.run_dir / "best.pt", checkpoint_state(run))
    if run.run_args.target_return is not None and mean >= run.run_args.target_return:
        run.status = "target_reached"
        print(f"evaluation mean {mean:.2f} reached --target-return {run.run_args.target_return}: stopping")


def metrics_text(run: Run) -> str:  # the eval_metrics of the latest evaluation, for printing
    return "".join(f", {name} {value:.3g}" for name, value in run.eval_metrics(run.eval_returns).items())


def checkpoint_state(run: Run) -> dict:
    return {"script": SCRIPT, "env_id": run.args.env_id, "args": dataclasses.asdict(run.args),
            "run_args": dataclasses.asdict(run.run_args), "global_step": run.global_step, "updates": run.updates,
            "best_eval_mean": run.best_eval_mean, "replay_saved": run.run_args.save_replay,
            "rng": {"numpy": run.rng.bit_generator.state, "torch": torch.get_rng_state()},
            "state": {name: thing.state_dict() for name, thing in run.state.items()},
            "classes": {name: type(thing).__name__ for name, thing in run.state.items()}}


def save_latest(run: Run) -> None:
    """checkpoint.pt, and replay.pt before it (a crash between the two leaves a newer replay, which is ignored); never
    a network that is not finite: then the run has diverged, and the last finite checkpoint stays."""
    if not all(torch.isfinite(parameter).all() for thing in run.state.values() if isinstance(thing, nn.Module)
               for parameter in thing.parameters()):
        return diverged(run, "a network parameter is not finite")
    if run.run_args.save_replay:
        save_checkpoint(run.run_dir / "replay.pt", {"global_step": run.global_step, "replay": run.replay.state_dict()})
    save_checkpoint(run.run_dir / "checkpoint.pt", checkpoint_state(run))


def show_progress(run: Run, total_timesteps: int) -> None:
    """One progress line, with the time left at the speed so far (evaluations not counted): redrawn in place twice a
    second in a terminal, printed every 15 s into a log file."""
    if (now := time.perf_counter()) - run.last_print > (0.5 if run.clear_line else 15.0):
        run.last_print, sps = now, (run.global_step - run.start_step) / (now - run.start_time)
        seconds = (total_timesteps - run.global_step) / max(sps, 1e-9)
        left = f"{seconds // 3600:.0f}:{seconds % 3600 // 60:02.0f}:{seconds % 60:02.0f}"
        charts = "".join(f"  {name} {value:.3g}" for name, value in run.charts.items())
        recent = f"{np.mean(run.recent_returns):9.2f}" if run.recent_returns else "        -"
        print(f"{run.clear_line}step {run.global_step:>9,}/{total_timesteps:,}  SPS {sps:7,.0f}  left {left}{charts}  "
              f"return (last {len(run.recent_returns):2d}) {recent}", end="" if run.clear_line else "\n", flush=True)


def finish_run(run: Run) -> dict:
    """Restore the signal handlers, write summary.json, close the logs and print the result."""
    for signum, handler in run.handlers.items():
        signal.signal(signum, handler)
    run.status = "finished" if run.status == "running" else run.status
    returns = run.eval_returns if run.status in ("finished", "target_reached", "evaluated") else None
    elapsed = time.perf_counter() - run.start_time
    summary = {"script": SCRIPT, "env_id": run.args.env_id, "seed": run.run_args.seed, "status": run.status,
               "global_step": run.global_step, "wall_time_s": round(elapsed, 2),
               "sps": round((run.global_step - run.start_step) / elapsed, 1),
               "eval_mean": float(np.mean(returns)) if returns else None,
               "eval_std": float(np.std(returns)) if returns else None, "eval_returns": returns,
               **{f"eval_{name}": value for name, value in (run.eval_metrics(returns) if returns else {}).items()},
               "best_eval_mean": run.best_eval_mean if run.best_eval_mean > -math.inf else None,
               "replay_size": getattr(run.replay, "size", None), "run_dir": str(run.run_dir) if run.run_dir else None,
               "signal": signal.Signals(run.signal).name if run.signal else None}
    if run.metrics is None:  # nothing was written: evaluation only, or stopped before the logs were opened
        if run.lock_fd is not None:
            os.close(run.lock_fd)
        return summary
    try:
        write_atomically(run.run_dir / "summary.json", lambda file: file.write(json.dumps(summary, indent=2)), "w")
    except OSError as error:  # a full disk: the run's checkpoints are whole, but its summary is missing
        if run.status != "failed":  # else said already
            print(f"error: cannot write {run.run_dir / 'summary.json'}: {error.strerror}", file=sys.stderr)
        summary["status"] = "failed"
    with contextlib.suppress(OSError):
        run.metrics.close()
        run.tensorboard.close()
    if run.wandb_run is not None:
        run.wandb_run.summary.update({k: v for k, v in summary.items() if k != "eval_returns"})
        run.wandb_run.finish(exit_code=0 if returns else 1)
    if returns:
        print(f"\n{run.args.env_id}: final evaluation {np.mean(returns):.2f} ± {np.std(returns):.2f} over "
              f"{len(returns)} episodes after {run.global_step:,} steps ({elapsed:.1f} s, {summary['sps']:,.0f} SPS)")
    print(f"run directory: {run.run_dir}")
    os.close(run.lock_fd)  # last: a resume may start now
    return summary


def main(args, run_args: Optional[RunArgs] = None) -> dict:
    """Train, or evaluate a checkpoint; return the summary. Raises ConfigError, writing nothing, on bad settings."""
    run = open_run(args, run_args if run_args is not None else RunArgs(**RUN_DEFAULTS))
    try:
        train(args, run)
    except KeyboardInterrupt:  # before the loop, or a second Ctrl-C: what was saved stays as it was
        run.status, run.signal = "interrupted", run.signal or signal.SIGINT
        print(f"\ninterrupted at step {run.global_step:,}", file=sys.stderr)
    except OSError as error:  # a full disk, at any write: the checkpoints are written whole, so the last one loads
        run.status, where, free = "failed", Path(error.filename or run.run_dir or "."), ""
        with contextlib.suppress(OSError):
            free = f" ({shutil.disk_usage(where if where.is_dir() else where.parent).free / 1e6:,.1f} MB free there)"
        resume = f"; then continue with python {SCRIPT}.py --resume {run.run_dir}" if run.run_dir and (
            run.run_dir / "checkpoint.pt").exists() else ""
        print(f"\nerror: cannot write {where}: {error.strerror or error}{free}{resume}", file=sys.stderr)
    return finish_run(run)


def parse_command_line(argv: Optional[list[str]] = None) -> tuple[Any, RunArgs]:
    """The settings on the command line; with --resume or --eval-checkpoint, the checkpoint's are the defaults."""
    argv, args, run_args = sys.argv[1:] if argv is None else list(argv), Args(), RunArgs(**RUN_DEFAULTS)
    options = ("--resume", "--eval-checkpoint")
    if given := [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in options] + [
            word.split("=", 1)[1] for word in argv if word.split("=", 1)[0] in options and "=" in word]:
        path, saved = read_checkpoint(given[-1])
        try:  # the saved settings this script still has, each of the type it declares; tuples were stored as lists
            declared = {key: {field.name: field.type for field in dataclasses.fields(kind)}
                        for kind, key in ((Args, "args"), (RunArgs, "run_args"))}
            if wrong := [f"{name}={value!r}" for key in declared for name, value in saved[key].items()
                         if name in declared[key] and not fits(value, declared[key][name])]:
                raise ConfigError(f"{str(path)!r} holds settings of the wrong type: {', '.join(wrong)}"[:300])
            args, run_args = (kind(**{name: tuple(value) if isinstance(value, list) else value
                                      for name, value in saved[key].items()
                                      if name in {field.name for field in dataclasses.fields(kind)}})
                              for kind, key in ((Args, "args"), (RunArgs, "run_args")))
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"{str(path)!r} is not a {SCRIPT}.py checkpoint") from None
        run_args = dataclasses.replace(run_args, resume=None, eval_checkpoint=None)
    Settings = dataclasses.make_dataclass("Settings", [("algorithm", type(args)), ("run", RunArgs)])
    settings = tyro.cli(tyro.conf.OmitArgPrefixes[Settings], args=argv, default=Settings(args, run_args),
                        description=__doc__.split("\n\n")[0])
    return settings.algorithm, settings.run


if __name__ == "__main__":
    try:
        summary = main(*parse_command_line())
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # while reading or checking the settings
        sys.exit(130)
    except BrokenPipeError:  # `python dqn.py --help | head`: the reader has left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if summary["status"] == "interrupted":
        sys.exit(128 + signal.Signals[summary["signal"]])
    sys.exit(0 if summary["status"] in ("finished", "target_reached", "evaluated") else 1)
