"""DQN for Atari 2600 games from pixels: the Nature DQN on gymnasium 1.x and ale-py's bundled ROMs.

Follows Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature 518): the Nature CNN on a
stack of the last 4 grayscale 84x84 frames, frame skip 4 with max-pooling over the last two frames, up to 30 no-op
starts, a loss of life ending the training episode, rewards clipped to [-1, 1], a replay memory of 1M transitions, a
target network, epsilon-greedy exploration, and evaluation with epsilon 0.05 on full games. The optimizer and schedule
are the 10M-step recipe of CleanRL's dqn_atari.py (Huang et al. 2022); every departure from the paper is listed in the
README ("dqn_atari.py", implementation details).

The replay memory stores every 84x84 frame once (not 4 times in a stack, not twice as obs and next_obs) and rebuilds
the stacks when it samples: about 7.1 KB per transition, so the default 1M-transition memory needs about 7.1 GB.

    python dqn_atari.py --env-id PongNoFrameskip-v4 --cuda
    python dqn_atari.py --env-id BreakoutNoFrameskip-v4 --num-envs 4 --cuda --replay-on-gpu --capture-video
    python dqn_atari.py --resume runs/<run>/checkpoint.pt          # continue an interrupted run
    python dqn_atari.py --env-id PongNoFrameskip-v4 --eval-checkpoint runs/<run>/best.pt --capture-video

Reproduces (the target; see the README for what this project has measured so far): Pong final evaluation about 20 after
10M env steps, as CleanRL's dqn_atari.py (Mnih et al. 2015 report 18.9 +- 1.3).
"""

import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from stable_baselines3.common.atari_wrappers import AtariWrapper

SCRIPT = Path(__file__).stem
FRAME_STACK = 4  # frames per observation (Mnih et al. 2015: the agent history length m = 4)
FRAME_SHAPE = (84, 84)  # one grayscale frame after WarpFrame

gym.register_envs(ale_py)


@dataclass
class Args:
    exp_name: str = SCRIPT
    """name of this experiment, part of the run directory name"""
    seed: int = 1
    """seed of python, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """set `torch.backends.cudnn.deterministic`, so GPU runs repeat as closely as cuDNN allows"""
    cuda: bool = False
    """use the GPU when one is available (a warning and the CPU otherwise)"""
    torch_threads: int = 1
    """CPU threads for torch ops; 1 does not collapse on a busy CPU, 0 keeps torch's default (one per core)"""
    track: bool = False
    """log the run to Weights & Biases as well (set WANDB_MODE=offline to log locally only)"""
    wandb_project_name: str = "dqn"
    """the wandb project"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team); None uses your default entity"""
    capture_video: bool = False
    """record the first episode of every evaluation to `{run_dir}/videos/`"""
    save_model: bool = True
    """write `checkpoint.pt` (latest) and `best.pt` (best evaluation) to the run directory at every evaluation"""
    save_replay: bool = False
    """also write the frame replay to `replay.pt` (7.1 GB when full), so a resumed run continues with the same memory"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to continue from; the run goes on in that checkpoint's run directory"""
    eval_checkpoint: Optional[str] = None
    """path of a checkpoint to evaluate for `--eval-episodes` episodes, without training"""
    runs_dir: str = "runs"
    """folder under which every run gets its own directory"""
    eval_frequency: int = 250_000
    """env steps between evaluations"""
    eval_episodes: int = 10
    """full games per evaluation"""
    eval_epsilon: float = 0.05
    """probability of a random action during evaluation (Mnih et al. 2015: 0.05)"""
    target_return: Optional[float] = None
    """stop training as soon as an evaluation mean reaches this return"""

    env_id: str = "PongNoFrameskip-v4"
    """ale-py id of the game: `<Game>NoFrameskip-v4` (the paper's setting) or `ALE/<Game>-v5` (sticky actions)"""
    total_timesteps: int = 10_000_000
    """env steps (agent steps, 4 frames each) to train for, summed over all envs (Mnih et al. 2015: 50M)"""
    learning_rate: float = 1e-4
    """Adam learning rate (CleanRL; Mnih et al. 2015: RMSProp with 2.5e-4)"""
    num_envs: int = 1
    """number of environments stepped together"""
    buffer_size: int = 1_000_000
    """replay capacity in frames, about one per transition (Mnih et al. 2015: 1M transitions)"""
    gamma: float = 0.99
    """discount factor (Mnih et al. 2015)"""
    tau: float = 1.0
    """target network update rate: 1 copies the online network (hard update), < 1 blends it in (Polyak averaging)"""
    target_network_frequency: int = 1000
    """env steps between target network updates (CleanRL; Mnih et al. 2015: 10_000 agent steps)"""
    batch_size: int = 32
    """transitions per gradient step (Mnih et al. 2015)"""
    start_e: float = 1.0
    """exploration epsilon at the start (Mnih et al. 2015)"""
    end_e: float = 0.01
    """exploration epsilon at the end of the schedule (CleanRL; Mnih et al. 2015: 0.1)"""
    exploration_fraction: float = 0.10
    """fraction of `total_timesteps` over which epsilon falls from `start_e` to `end_e` (CleanRL; Mnih: 1M of 50M)"""
    learning_starts: int = 80_000
    """env steps of random play that fill the buffer before learning starts (CleanRL; Mnih et al. 2015: 50_000)"""
    train_frequency: int = 4
    """env steps between training phases (Mnih et al. 2015: update frequency 4)"""
    gradient_steps: int = 1
    """gradient steps per training phase"""
    hidden_sizes: tuple[int, ...] = (512,)
    """widths of the fully connected layers after the three convolutions (Mnih et al. 2015: one of 512)"""
    loss: Literal["mse", "huber"] = "huber"
    """TD loss: mean squared error, or Huber (smooth L1 with delta 1, the paper's error clipping)"""
    max_grad_norm: Optional[float] = None
    """clip the gradient to this global L2 norm (None: no clipping)"""
    terminal_on_life_loss: bool = True
    """end the training episode (not the game) at a lost life (Mnih et al. 2015); evaluation always plays whole games"""
    noop_max: int = 30
    """at most this many no-op actions after each reset (Mnih et al. 2015: 30)"""
    replay_on_gpu: bool = False
    """keep the frame replay on the GPU (with --cuda): no host-to-device copy per batch, but ~7.1 GB of GPU memory"""
    async_envs: bool = False
    """step the envs in subprocesses (gymnasium's AsyncVectorEnv): worth it with several envs and spare CPU cores"""


class ConfigError(ValueError):
    """A setting, env or checkpoint the script cannot use; reported as one line, without a traceback."""


def check_args(args: Args) -> None:
    """Raise ConfigError naming every inconsistent setting, before any env is built or file written."""
    problems = []
    if args.torch_threads < 0:
        problems.append(f"--torch-threads must be >= 0 (got {args.torch_threads})")
    positive = ["total_timesteps", "num_envs", "buffer_size", "batch_size", "target_network_frequency",
                "train_frequency", "gradient_steps", "eval_frequency", "eval_episodes"]
    problems += [f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})"
                 for name in positive if getattr(args, name) < 1]
    if not 0.0 <= args.gamma <= 1.0:
        problems.append(f"--gamma must be in [0, 1] (got {args.gamma})")
    if not 0.0 < args.tau <= 1.0:
        problems.append(f"--tau must be in (0, 1] (got {args.tau})")
    if args.learning_rate <= 0:
        problems.append(f"--learning-rate must be > 0 (got {args.learning_rate})")
    for name in ["start_e", "end_e", "eval_epsilon", "exploration_fraction"]:
        if not 0.0 <= getattr(args, name) <= 1.0:
            problems.append(f"--{name.replace('_', '-')} must be in [0, 1] (got {getattr(args, name)})")
    if args.batch_size > args.buffer_size:
        problems.append(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    if args.learning_starts < 0:
        problems.append(f"--learning-starts must be >= 0 (got {args.learning_starts})")
    if args.learning_starts >= args.total_timesteps and args.eval_checkpoint is None:
        problems.append(f"--learning-starts {args.learning_starts} must be < --total-timesteps "
                        f"{args.total_timesteps}, or no learning happens")
    if args.learning_starts < args.batch_size and args.learning_starts < args.total_timesteps:
        problems.append(f"--learning-starts {args.learning_starts} must be >= --batch-size {args.batch_size}, "
                        "so the first batch is drawn from that many transitions")
    if any(size < 1 for size in args.hidden_sizes):
        problems.append(f"--hidden-sizes must all be >= 1 (got {args.hidden_sizes})")
    if args.max_grad_norm is not None and args.max_grad_norm <= 0:
        problems.append(f"--max-grad-norm must be > 0 or None (got {args.max_grad_norm})")
    if args.resume is not None and args.eval_checkpoint is not None:
        problems.append("--resume and --eval-checkpoint exclude each other")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (gymnasium's RecordVideo writes with it)
        except ImportError:
            problems.append("--capture-video needs moviepy: pip install -r requirements.txt")
    if args.num_envs >= 1 and args.buffer_size < args.num_envs * (FRAME_STACK + 2):
        problems.append(f"--buffer-size {args.buffer_size} is too small for {args.num_envs} envs: each env's part of "
                        f"the replay needs at least {FRAME_STACK + 2} frames")
    if args.noop_max < 0:
        problems.append(f"--noop-max must be >= 0 (got {args.noop_max})")
    if args.replay_on_gpu and not args.cuda:
        problems.append("--replay-on-gpu needs --cuda")
    if problems:
        raise ConfigError("; ".join(problems))


def env_spaces(env_id: str) -> tuple[tuple[int, ...], int]:
    """Check that `env_id` is an ale-py game and return (observation shape, number of actions), or raise ConfigError."""
    try:
        spec = gym.spec(env_id)
    except (gym.error.Error, ModuleNotFoundError, AttributeError) as error:
        raise ConfigError(f"cannot make env {env_id!r}: {error}") from None
    if not str(spec.entry_point).startswith("ale_py"):
        raise ConfigError(f"{SCRIPT}.py needs an Atari env from ale-py, such as PongNoFrameskip-v4; {env_id!r} is "
                          f"not one (vector observations: use dqn.py)")
    env = make_env(env_id, terminal_on_life_loss=False)()
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    return obs_space.shape, int(action_space.n)


def make_env(env_id: str, terminal_on_life_loss: bool, noop_max: int = 30, video_dir: Optional[str] = None,
             video_prefix: str = "eval") -> Callable[[], gym.Env]:
    """Return a thunk building one Atari env with SB3's wrappers and a 4-frame stack: observations [4, 84, 84] uint8.

    Training envs end an episode at a loss of life; evaluation envs (terminal_on_life_loss=False) play full games.
    RecordEpisodeStatistics sits innermost, right on the emulator, so `info["episode"]["r"]` is the raw game score of
    a whole game (not clipped, not cut at a life) and `info["episode"]["l"]` counts emulator frames."""

    def thunk() -> gym.Env:
        # frameskip=1: MaxAndSkipEnv repeats each action 4 times (ALE/*-v5 ids would otherwise skip 4 x 4 frames)
        env = gym.make(env_id, frameskip=1, render_mode="rgb_array" if video_dir else None)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: episode == 0,
                                           name_prefix=video_prefix, disable_logger=True)
        env = AtariWrapper(env, noop_max=noop_max, frame_skip=4, screen_size=FRAME_SHAPE[0],
                           terminal_on_life_loss=terminal_on_life_loss, clip_reward=True)
        env = gym.wrappers.ReshapeObservation(env, FRAME_SHAPE)  # WarpFrame's [84, 84, 1] -> [84, 84]
        # the stack after a reset repeats the first frame 4 times; the replay rebuilds stacks the same way
        return gym.wrappers.FrameStackObservation(env, FRAME_STACK, padding_type="reset")

    return thunk


class QNetwork(nn.Module):
    """The Nature CNN (Mnih et al. 2015): uint8 frame stacks [B, 4, 84, 84] -> one Q-value per action [B, A].

    The convolutions run on channels-last tensors, which made the CPU update 3-10% cheaper in each of three benchmark
    runs (benchmarks/sps_atari.py; bf16 autocast and torch.compile were not worth it, see the README); the arithmetic,
    and the parameters' values and shapes, are those of the usual NCHW network."""

    def __init__(self, n_actions: int, hidden_sizes: tuple[int, ...] = (512,)):
        super().__init__()
        sizes = [64 * 7 * 7, *hidden_sizes]
        layers: list[nn.Module] = [
            nn.Conv2d(FRAME_STACK, 32, kernel_size=8, stride=4), nn.ReLU(),  # [B, 32, 20, 20]
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),  # [B, 64, 9, 9]
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),  # [B, 64, 7, 7]
            nn.Flatten(),  # [B, 3136]
        ]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_actions))
        self.network = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs.float() / 255.0).contiguous(memory_format=torch.channels_last)  # [B, 4, 84, 84] uint8 -> [0, 1]
        return self.network(x)  # [B, A]

    def greedy_actions(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a Q(obs, a) for a NumPy batch of frame stacks [B, 4, 84, 84] uint8 -> [B]."""
        with torch.inference_mode():
            obs_tensor = torch.as_tensor(obs, device=self.network[0].weight.device)
            return self(obs_tensor).argmax(dim=1).cpu().numpy()


class FrameReplayBuffer:
    """Replay memory that stores each 84x84 frame once and rebuilds the 4-frame stacks when it samples.

    Every env has its own ring of `capacity / num_envs` slots, filled in the order that env produced its frames: the
    first frame of an episode (marked `first`), then one frame per step, the newest frame of the true next observation
    (at an episode's end, of the final observation, not of the reset one). Slot j also holds the action, reward and
    termination of the step from frame j to frame j + 1, so transition j is
        obs      = frames j-3 .. j,    next_obs = frames j-2 .. j+1,
    where frames from before the episode's first frame are replaced by that first frame, as FrameStackObservation pads
    a stack after a reset. A slot j is a transition only if slot j+1 continues its episode (not `first`), and is
    sampled only while all of j-3 .. j+1 are still in the ring: the oldest 3 slots of a full ring are never sampled,
    since their history has been overwritten. Per transition this costs 84*84 = 7056 bytes of frame, 7 bytes of the
    rest, and one spare frame per episode (its final frame).

    Frames live in NumPy (CPU) or in a torch tensor on `storage_device` (`--replay-on-gpu`); samples come back as
    torch tensors on `device`."""

    def __init__(self, capacity: int, num_envs: int, device: torch.device,
                 storage_device: torch.device = torch.device("cpu")):
        self.num_envs, self.device, self.storage_device = num_envs, device, storage_device
        self.slots = math.ceil(capacity / num_envs)  # per env
        shape = (num_envs, self.slots, *FRAME_SHAPE)
        if storage_device.type == "cpu":
            self.frames = np.zeros(shape, dtype=np.uint8)  # lazily committed: memory grows as the ring fills
        else:
            self.frames = torch.zeros(shape, dtype=torch.uint8, device=storage_device)
        self.actions = np.zeros((num_envs, self.slots), dtype=np.uint8)  # ALE has at most 18 actions
        self.rewards = np.zeros((num_envs, self.slots), dtype=np.float32)
        self.terminations = np.zeros((num_envs, self.slots), dtype=np.bool_)
        self.first = np.zeros((num_envs, self.slots), dtype=np.bool_)
        self.written = np.zeros(num_envs, dtype=np.int64)  # frames each env has written since the start

    @property
    def size(self) -> int:
        """Frames held, about the number of transitions (one frame per step, plus one per episode)."""
        return int(np.minimum(self.written, self.slots).sum())

    def nbytes(self) -> int:
        frames = self.frames.nbytes if isinstance(self.frames, np.ndarray) else self.frames.numel()
        return frames + sum(array.nbytes for array in (self.actions, self.rewards, self.terminations, self.first))

    def _write(self, env_indices: np.ndarray, frames: np.ndarray, first: bool) -> None:
        slots = self.written[env_indices] % self.slots
        if isinstance(self.frames, np.ndarray):
            self.frames[env_indices, slots] = frames
        else:
            index = [torch.from_numpy(array).to(self.storage_device) for array in (env_indices, slots)]
            self.frames[index[0], index[1]] = torch.from_numpy(frames).to(self.storage_device)
        self.first[env_indices, slots] = first
        self.written[env_indices] += 1

    def start_episodes(self, obs: np.ndarray, env_indices: np.ndarray) -> None:
        """Begin new episodes in envs `env_indices`, from their reset observations `obs` [n, 4, 84, 84]."""
        self._write(env_indices, obs[:, -1], first=True)

    def add(self, real_next_obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            terminations: np.ndarray) -> None:
        """Store one step per env: the step's action, reward and termination, and the newest frame of its true next
        observation [num_envs, 4, 84, 84]; the older frames of that stack are already stored."""
        every_env = np.arange(self.num_envs)
        head = (self.written - 1) % self.slots  # the slot of each env's current observation's newest frame
        self.actions[every_env, head] = actions
        self.rewards[every_env, head] = rewards
        self.terminations[every_env, head] = terminations
        self._write(every_env, real_next_obs[:, -1], first=False)

    def _gather(self, env_indices: np.ndarray, absolute_slots: np.ndarray) -> torch.Tensor:
        slots = absolute_slots % self.slots  # [B, 4]
        if isinstance(self.frames, np.ndarray):
            stacks = torch.from_numpy(self.frames[env_indices[:, None], slots])  # [B, 4, 84, 84]
            return stacks.to(self.device, non_blocking=True)
        index = [torch.from_numpy(array).to(self.storage_device) for array in (env_indices[:, None], slots)]
        return self.frames[index[0], index[1]].to(self.device)

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over the stored transitions: (env indices [B], absolute slots j [B])."""
        lowest = np.maximum(self.written - self.slots + FRAME_STACK - 1, 0)  # j-3 .. j still stored
        candidates = np.maximum(self.written - 1 - lowest, 0)  # j <= written - 2: frame j+1 exists
        bounds = np.cumsum(candidates)  # [num_envs]
        if bounds[-1] == 0:
            raise RuntimeError("the replay buffer holds no transition yet")
        env_indices, slots = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        while len(env_indices) < batch_size:  # rejection: drop slots that end an episode (the next one is `first`)
            draws = rng.integers(0, bounds[-1], size=batch_size - len(env_indices))
            envs = np.searchsorted(bounds, draws, side="right")
            js = lowest[envs] + draws - (bounds[envs] - candidates[envs])
            keep = ~self.first[envs, (js + 1) % self.slots]
            env_indices, slots = np.concatenate([env_indices, envs[keep]]), np.concatenate([slots, js[keep]])
        return env_indices, slots

    def stack_slots(self, env_indices: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute slots of the frames of obs and next_obs of transitions (env_indices, slots): ([B, 4], [B, 4])."""
        window = np.maximum(slots[:, None] + np.arange(-FRAME_STACK + 1, 2), 0)  # [B, 5]: j-3 .. j+1
        starts = np.where(self.first[env_indices[:, None], window % self.slots], window, -1)  # [B, 5]
        # a frame from before its episode's first frame is replaced by that first frame (reset padding)
        obs_slots = np.maximum(window[:, :-1], starts[:, :-1].max(axis=1, keepdims=True))  # [B, 4]
        next_obs_slots = np.maximum(window[:, 1:], starts[:, 1:].max(axis=1, keepdims=True))  # [B, 4]
        return obs_slots, next_obs_slots

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(obs [B, 4, 84, 84] uint8, actions [B], rewards [B], next_obs [B, 4, 84, 84] uint8, terminations [B])."""
        env_indices, slots = self.sample_indices(batch_size, rng)
        obs_slots, next_obs_slots = self.stack_slots(env_indices, slots)
        ring = slots % self.slots
        actions = torch.from_numpy(self.actions[env_indices, ring].astype(np.int64))
        rewards = torch.from_numpy(self.rewards[env_indices, ring])
        terminations = torch.from_numpy(self.terminations[env_indices, ring].astype(np.float32))
        return (self._gather(env_indices, obs_slots), actions.to(self.device), rewards.to(self.device),
                self._gather(env_indices, next_obs_slots), terminations.to(self.device))

    def state_dict(self) -> dict:
        n = int(min(self.written.max(), self.slots))  # slots in use
        frames = self.frames[:, :n]
        return {"frames": torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames.cpu(),
                "actions": torch.from_numpy(self.actions[:, :n]), "rewards": torch.from_numpy(self.rewards[:, :n]),
                "terminations": torch.from_numpy(self.terminations[:, :n]),
                "first": torch.from_numpy(self.first[:, :n]), "written": torch.from_numpy(self.written.copy()),
                "slots": self.slots}

    def load_state_dict(self, state: dict) -> None:
        if state["slots"] != self.slots or len(state["written"]) != self.num_envs:
            raise ConfigError(f"the saved replay has {len(state['written'])} envs x {state['slots']} frames; these "
                              f"settings need {self.num_envs} x {self.slots} (keep --num-envs and --buffer-size)")
        n = state["frames"].shape[1]
        if isinstance(self.frames, np.ndarray):
            self.frames[:, :n] = state["frames"].numpy()
        else:  # in chunks: a whole 7 GB replay would briefly take twice its size in GPU memory
            for start in range(0, n, 100_000):
                chunk = slice(start, start + 100_000)
                self.frames[:, chunk] = state["frames"][:, chunk].to(self.storage_device)
        for name in ["actions", "rewards", "terminations", "first"]:
            getattr(self, name)[:, :n] = state[name].numpy()
        self.written = state["written"].numpy().copy()


def linear_schedule(start: float, end: float, duration: float, step: int) -> float:
    """Value going linearly from `start` at step 0 to `end` at `duration`, then staying at `end`."""
    if duration <= 0:
        return end
    return start + (end - start) * min(step / duration, 1.0)


def epsilon_greedy(greedy_actions: Callable[[np.ndarray], np.ndarray], obs: np.ndarray, epsilon: float,
                   n_actions: int, rng: np.random.Generator) -> np.ndarray:
    """One action per row of `obs`: uniformly random with probability `epsilon`, else `greedy_actions(obs)`.

    One uniform draw u per env both decides and, when u < epsilon, picks the action: given u < epsilon, u / epsilon
    is again uniform on [0, 1), so floor(u / epsilon * n_actions) is a uniform action. That is one cheap random call
    per step instead of three (`Generator.integers` alone costs ~12 us), and no network call when every env
    explores."""
    u = rng.random(len(obs))  # [N]
    explore = u < epsilon
    n_explore = np.count_nonzero(explore)
    actions = np.empty(len(u), dtype=np.int64) if n_explore == len(u) else greedy_actions(obs)  # [N]
    if n_explore:  # min: u / epsilon may round up to 1
        actions[explore] = np.minimum((u[explore] * (n_actions / epsilon)).astype(np.int64), n_actions - 1)
    return actions


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """One-step TD target r + gamma * max_a' Q_target(s', a'), cut at terminations (never at truncations)."""
    return rewards + gamma * (1.0 - terminations) * next_q  # [B]


@torch.no_grad()
def update_target(target_params: list[torch.Tensor], params: list[torch.Tensor], tau: float) -> None:
    """theta_target <- tau * theta + (1 - tau) * theta_target, parameter by parameter; tau = 1 copies exactly (a hard
    update). Takes the two networks' parameter lists, made once: walking the modules for them (`.parameters()`)
    costs more than a soft update itself, which runs every step."""
    for target_param, param in zip(target_params, params):
        if tau == 1.0:
            target_param.copy_(param)
        else:
            target_param.lerp_(param, tau)


def multiples_passed(step: int, steps_this_iteration: int, every: int) -> int:
    """How many multiples of `every` lie in (step - steps_this_iteration, step]: with several envs one iteration
    advances `global_step` by num_envs, which may pass a train or sync point without landing on it."""
    return step // every - (step - steps_this_iteration) // every


def evaluate(q_network: QNetwork, env_thunk: Callable[[], gym.Env], n_episodes: int, epsilon: float,
             seed: int) -> list[float]:
    """Play `n_episodes` episodes on a fresh env, acting epsilon-greedily; return their undiscounted returns."""
    env = env_thunk()
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    obs, _ = env.reset(seed=seed)
    while len(returns) < n_episodes:
        action = int(epsilon_greedy(q_network.greedy_actions, obs[None], epsilon, env.action_space.n, rng)[0])
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            obs, _ = env.reset()
    env.close()
    return returns


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash or Ctrl-C during the write leaves the previous file intact."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def load_checkpoint(path: str, env_id: str) -> dict:
    """Load a checkpoint of this script for `env_id`, or raise ConfigError saying why it cannot be used."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupted, or not a torch file at all
        raise ConfigError(f"cannot read checkpoint {path!r} (truncated or corrupted?): {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != SCRIPT:
        origin = checkpoint.get("script") if isinstance(checkpoint, dict) else None
        raise ConfigError(f"{path!r} is not a {SCRIPT}.py checkpoint (it comes from {origin or 'something else'})")
    if checkpoint["env_id"] != env_id:
        raise ConfigError(f"{path!r} was trained on {checkpoint['env_id']}, not {env_id}")
    return checkpoint


class RunLogger:
    """Appends `global_step, wall_time, name, value` rows to metrics.csv (flushed per row) and, with --track, to wandb."""

    def __init__(self, path: Path, wandb_run=None):
        new = not path.exists()
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["global_step", "wall_time", "name", "value"])
        self.wandb_run = wandb_run

    def log(self, name: str, value: float, global_step: int) -> None:
        self.writer.writerow([global_step, f"{time.time():.3f}", name, f"{value:.6g}"])
        self.file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({name: value, "global_step": global_step})

    def close(self) -> None:
        self.file.close()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after `last_step`: a resumed run replays those steps and logs them again."""
    if not path.exists():
        return
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    kept = [rows[0]] + [row for row in rows[1:] if int(row[0]) <= last_step]
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="") as file:
        csv.writer(file).writerows(kept)
    os.replace(temporary, path)


def choose_device(want_cuda: bool) -> torch.device:
    if want_cuda and not torch.cuda.is_available():
        print("warning: --cuda given but CUDA is not available; using the CPU", file=sys.stderr)
    return torch.device("cuda" if want_cuda and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, torch_deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = torch_deterministic


def evaluate_checkpoint(args: Args) -> dict:
    """--eval-checkpoint: evaluate a saved network on full games without training."""
    obs_shape, n_actions = env_spaces(args.env_id)
    checkpoint = load_checkpoint(args.eval_checkpoint, args.env_id)
    saved = checkpoint["args"]
    device = choose_device(args.cuda)
    q_network = QNetwork(n_actions, tuple(saved["hidden_sizes"])).to(device)
    q_network.load_state_dict(checkpoint["q_network"])
    video_dir = str(Path(args.eval_checkpoint).parent / "videos") if args.capture_video else None
    eval_env = make_env(args.env_id, False, args.noop_max, video_dir,
                        f"eval-checkpoint-step{checkpoint['global_step']}")
    returns = evaluate(q_network, eval_env, args.eval_episodes, args.eval_epsilon, args.seed)
    summary = {"checkpoint": args.eval_checkpoint, "global_step": checkpoint["global_step"],
               "eval_mean": float(np.mean(returns)), "eval_std": float(np.std(returns)), "eval_returns": returns}
    print(f"{args.env_id}: {args.eval_episodes} episodes, return {summary['eval_mean']:.2f} "
          f"± {summary['eval_std']:.2f} (checkpoint at step {checkpoint['global_step']})")
    return summary


def main(args: Args) -> dict:
    check_args(args)
    if args.eval_checkpoint is not None:
        return evaluate_checkpoint(args)
    obs_shape, n_actions = env_spaces(args.env_id)
    checkpoint = load_checkpoint(args.resume, args.env_id) if args.resume else None
    device = choose_device(args.cuda)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)

    seed_everything(args.seed, args.torch_deterministic)
    rng = np.random.default_rng(args.seed)
    q_network = QNetwork(n_actions, args.hidden_sizes).to(device)
    target_network = QNetwork(n_actions, args.hidden_sizes).to(device)
    target_network.load_state_dict(q_network.state_dict())
    target_params, online_params = list(target_network.parameters()), list(q_network.parameters())
    # fused Adam updates all parameters in one kernel: cheaper per update on the CPU than the default
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)
    replay_buffer = FrameReplayBuffer(args.buffer_size, args.num_envs, device,
                                      device if args.replay_on_gpu else torch.device("cpu"))
    global_step, best_eval_mean, replay_loaded = 0, -math.inf, False
    if checkpoint is not None:
        try:
            q_network.load_state_dict(checkpoint["q_network"])
            target_network.load_state_dict(checkpoint["target_network"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError) as error:
            raise ConfigError(f"{args.resume!r} does not fit these settings "
                              f"(different --hidden-sizes?): {error}") from None
        global_step, best_eval_mean = checkpoint["global_step"], checkpoint["best_eval_mean"]
        if global_step >= args.total_timesteps:
            raise ConfigError(f"{args.resume!r} is already at step {global_step:,}; "
                              f"pass a larger --total-timesteps to train further")
        rng.bit_generator.state = checkpoint["rng"]["numpy"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        replay_path = Path(args.resume).parent / "replay.pt"
        if checkpoint.get("replay_file") and replay_path.exists():
            try:  # mmap: the saved frames are copied into the ring without a second copy in memory
                replay = torch.load(replay_path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:
                raise ConfigError(f"cannot read {str(replay_path)!r} (truncated or corrupted?): {error}") from None
            if replay.get("global_step") == global_step:  # else a crash came between the two writes: too new
                replay_buffer.load_state_dict(replay["replay_buffer"])
                replay_loaded = True
            del replay

    # nothing is written before this point, so a refused setting leaves no trace
    if checkpoint is not None:
        run_dir = Path(args.resume).parent
        truncate_metrics(run_dir / "metrics.csv", global_step)
        print(f"resuming {run_dir} at step {global_step:,}" + ("" if replay_loaded else " with an empty replay buffer"))
    else:
        safe_env_id = args.env_id.replace("/", "-").replace(":", "-")
        run_dir = Path(args.runs_dir) / f"{safe_env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        while run_dir.exists():  # two runs started in the same second
            run_dir = run_dir.with_name(run_dir.name + "_")
        run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    wandb_run = None
    if args.track:
        import wandb

        wandb_run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_dir.name,
                               id=run_dir.name.replace(".", "-"), resume="allow", dir=str(run_dir),
                               config=dataclasses.asdict(args))
    logger = RunLogger(run_dir / "metrics.csv", wandb_run)
    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_env([make_env(args.env_id, args.terminal_on_life_loss, args.noop_max) for _ in range(args.num_envs)],
                      autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    def checkpoint_state() -> dict:
        return {"script": SCRIPT, "env_id": args.env_id, "args": dataclasses.asdict(args), "global_step": global_step,
                "q_network": q_network.state_dict(), "target_network": target_network.state_dict(),
                "optimizer": optimizer.state_dict(), "best_eval_mean": best_eval_mean,
                "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()},
                "replay_file": "replay.pt" if args.save_replay else None}

    def save_latest() -> None:
        """checkpoint.pt, and with --save-replay replay.pt before it: a crash between the two leaves a replay newer
        than the checkpoint, which a resume recognises by its global_step and ignores."""
        if args.save_replay:
            save_checkpoint(run_dir / "replay.pt", {"global_step": global_step,
                                                    "replay_buffer": replay_buffer.state_dict()})
        save_checkpoint(run_dir / "checkpoint.pt", checkpoint_state())

    def run_evaluation() -> list[float]:
        video_dir = str(run_dir / "videos") if args.capture_video else None
        eval_env = make_env(args.env_id, False, args.noop_max, video_dir, f"eval-step{global_step}")
        return evaluate(q_network, eval_env, args.eval_episodes, args.eval_epsilon, args.seed + 100_000 + global_step)

    # a resumed run restarts its episodes from fresh resets; the seed is shifted so they differ from the first ones
    obs, _ = envs.reset(seed=args.seed + global_step)
    replay_buffer.start_episodes(obs, np.arange(args.num_envs))
    # learning starts only once the buffer holds `learning_starts` transitions of this process
    learning_starts_at = global_step + (args.learning_starts if replay_buffer.size < args.learning_starts else 0)
    exploration_steps = args.exploration_fraction * args.total_timesteps
    start_step, start_time, last_print = global_step, time.perf_counter(), 0.0
    recent_returns: list[float] = []
    updates, status, eval_returns = 0, "finished", None
    interactive = sys.stdout.isatty()  # a terminal: one progress line, redrawn in place
    clear_line = "\r\x1b[K" if interactive else ""
    try:
        while global_step < args.total_timesteps:
            # act: epsilon-greedy, with no network call when every env explores
            epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
            actions = epsilon_greedy(q_network.greedy_actions, obs, epsilon, n_actions, rng)
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            global_step += args.num_envs

            # log finished games; SAME_STEP autoreset reports them, and the true final obs, in final_info/final_obs.
            # A lost life ends the training episode but not the game: then final_info holds no "episode"
            real_next_obs = next_obs
            if "_final_obs" in infos:
                real_next_obs = next_obs.copy()  # next_obs already holds the reset obs of the finished envs
                for i in np.flatnonzero(infos["_final_obs"]):
                    real_next_obs[i] = infos["final_obs"][i]
                if "episode" in infos["final_info"]:
                    episodes = infos["final_info"]["episode"]
                    for i in np.flatnonzero(infos["final_info"]["_episode"]):
                        recent_returns = (recent_returns + [float(episodes["r"][i])])[-20:]
                        logger.log("charts/episodic_return", float(episodes["r"][i]), global_step)
                        logger.log("charts/episodic_length", float(episodes["l"][i]), global_step)

            # store: a truncated episode keeps termination 0, so its target bootstraps from the true final obs;
            # the reset obs of the finished envs begin their next episodes
            replay_buffer.add(real_next_obs, actions, rewards, terminations)
            dones = np.logical_or(terminations, truncations)
            if dones.any():
                replay_buffer.start_episodes(next_obs[dones], np.flatnonzero(dones))
            obs = next_obs

            # train
            if global_step > learning_starts_at:
                for _ in range(multiples_passed(global_step, args.num_envs, args.train_frequency) * args.gradient_steps):
                    b_obs, b_actions, b_rewards, b_next_obs, b_terminations = replay_buffer.sample(args.batch_size, rng)
                    with torch.no_grad():
                        next_q = target_network(b_next_obs).amax(dim=1)  # [B]
                        targets = td_target(b_rewards, b_terminations, next_q, args.gamma)  # [B]
                    q_values = q_network(b_obs).gather(1, b_actions.unsqueeze(1)).squeeze(1)  # [B]
                    if args.loss == "mse":
                        loss = F.mse_loss(q_values, targets)
                    else:
                        loss = F.smooth_l1_loss(q_values, targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if args.max_grad_norm is not None:
                        nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                    optimizer.step()
                    updates += 1
                    if updates % 100 == 0:
                        sps = (global_step - start_step) / (time.perf_counter() - start_time)
                        logger.log("losses/td_loss", loss.item(), global_step)
                        logger.log("losses/q_values", q_values.mean().item(), global_step)
                        logger.log("charts/epsilon", epsilon, global_step)
                        logger.log("charts/SPS", sps, global_step)
                # sync the target network
                if multiples_passed(global_step, args.num_envs, args.target_network_frequency):
                    update_target(target_params, online_params, args.tau)

            # evaluate, checkpoint, maybe stop; the last iteration's evaluation is the final one
            if multiples_passed(global_step, args.num_envs, args.eval_frequency) or global_step >= args.total_timesteps:
                returns = eval_returns = run_evaluation()
                mean = float(np.mean(returns))
                logger.log("eval/episodic_return", mean, global_step)
                logger.log("eval/episodic_return_std", float(np.std(returns)), global_step)
                print(f"{clear_line}step {global_step:>9,}  eval return {mean:9.2f} ± {np.std(returns):7.2f} "
                      f"over {len(returns)} episodes", flush=True)
                if args.save_model:
                    if mean > best_eval_mean:
                        best_eval_mean = mean
                        save_checkpoint(run_dir / "best.pt", checkpoint_state())
                    save_latest()
                best_eval_mean = max(best_eval_mean, mean)
                if args.target_return is not None and mean >= args.target_return:
                    status = "target_reached"
                    print(f"evaluation mean {mean:.2f} reached --target-return {args.target_return}: stopping")
                    break

            now = time.perf_counter()
            if now - last_print > (0.5 if interactive else 15.0):
                last_print = now
                sps = (global_step - start_step) / (now - start_time)
                recent = f"{np.mean(recent_returns):9.2f}" if recent_returns else "        -"
                line = (f"step {global_step:>9,}/{args.total_timesteps:,}  SPS {sps:7,.0f}  epsilon {epsilon:5.3f}  "
                        f"return (last {len(recent_returns):2d}) {recent}")
                print(clear_line + line, end="" if interactive else "\n", flush=True)
    except KeyboardInterrupt:
        status = "interrupted"
        print(f"\ninterrupted at step {global_step}", file=sys.stderr)
    finally:
        envs.close()

    wall_time = time.perf_counter() - start_time
    if status == "interrupted":
        eval_returns = None  # an evaluation of an earlier step is not this run's result
        if args.save_model:
            save_latest()
            print(f"saved {run_dir / 'checkpoint.pt'}; continue with: python {SCRIPT}.py --resume "
                  f"{run_dir / 'checkpoint.pt'}", file=sys.stderr)
    summary = {"script": SCRIPT, "env_id": args.env_id, "seed": args.seed, "status": status,
               "global_step": global_step, "wall_time_s": round(wall_time, 2),
               "sps": round((global_step - start_step) / wall_time, 1),
               "eval_mean": float(np.mean(eval_returns)) if eval_returns else None,
               "eval_std": float(np.std(eval_returns)) if eval_returns else None,
               "eval_returns": eval_returns, "best_eval_mean": best_eval_mean if best_eval_mean > -math.inf else None,
               "replay_frames": replay_buffer.size, "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.close()
    if wandb_run is not None:
        wandb_run.summary.update({k: v for k, v in summary.items() if k != "eval_returns"})
        wandb_run.finish()
    if eval_returns:
        print(f"\n{args.env_id}: final evaluation {summary['eval_mean']:.2f} ± {summary['eval_std']:.2f} over "
              f"{len(eval_returns)} episodes after {global_step:,} steps ({wall_time:.1f} s, {summary['sps']:,.0f} SPS)")
    print(f"run directory: {run_dir}")
    return summary


def cli() -> Args:
    """Parse the command line. With --resume or --eval-checkpoint, the checkpoint's settings are the defaults, so
    `python dqn.py --resume runs/<run>/checkpoint.pt` needs no other flag; flags given still override them."""
    argv = sys.argv[1:]
    for flag in ["--resume", "--eval-checkpoint"]:
        path = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag), None) or \
            next((arg.split("=", 1)[1] for arg in argv if arg.startswith(flag + "=")), None)
        if path is not None and os.path.isfile(path):
            break
    else:
        return tyro.cli(Args)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)["args"]
        fields = {field.name for field in dataclasses.fields(Args)}
        # JSON-like storage turned tuples into lists; fields this script no longer has are dropped
        saved = {name: tuple(value) if isinstance(value, list) else value
                 for name, value in saved.items() if name in fields}
        saved |= {"resume": None, "eval_checkpoint": None, flag.lstrip("-").replace("-", "_"): path}
        default = Args(**saved)
    except Exception:  # unreadable, or not this script's: main() reports it properly
        return tyro.cli(Args)
    return tyro.cli(Args, default=default)


if __name__ == "__main__":
    try:
        main(cli())
    except ConfigError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # during set-up, before the training loop handles it
        sys.exit("interrupted")
