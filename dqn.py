"""DQN for environments with vector observations and discrete actions: CartPole-v1 by default, any 1-D Box env.

Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature 518), Algorithm 1, with an MLP for
the CNN: act epsilon-greedily, store each transition in a replay memory, learn from random minibatches of it, and
regress Q(s, a) on the TD target r + gamma * max_a' Q_target(s', a') of a target network that follows the online one;
the target does not bootstrap after a termination and does after a time-limit truncation. Its page in docs/ lists every
departure from the paper. Below the `# %% Harness` line: run options, logging, evaluation, checkpoints.

    python dqn.py                                       # CartPole-v1 on the CPU
    python dqn.py --env-id Acrobot-v1 --seed 3 --track --capture-video
    python dqn.py --resume runs/<run>                   # continue an interrupted run

Reproduces: CartPole-v1 solved (final evaluation mean >= 475 over 10 episodes) for seeds 1-5 within 70k env steps,
35-41 s per seed (the whole process) on a 2-core CPU; see docs/dqn.md.
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


@dataclass
class Args:
    env_id: str = "CartPole-v1"  # gymnasium id of the environment (any registered id, or `module:Env-v0`)
    total_timesteps: int = 70_000
    """env steps to train for, summed over all envs (our sweeps: CartPole-v1 holds 500 from 50-60k steps on,
    LunarLander-v3 lands from 100-200k on; CleanRL: 500_000, rl-baselines3-zoo's LunarLander-v3: 100_000)"""
    learning_rate: float = 1e-3  # Adam learning rate (CartPole-v1 and LunarLander-v3: our sweeps; CleanRL: 2.5e-4)
    end_learning_rate: Optional[float] = None
    """learning rate at the last step, reached linearly from `learning_rate` (None: constant, as in the paper;
    dqn_lunar.py: 1e-5)"""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """adam, or rmsprop: Mnih et al. 2015's centered RMSProp (squared-gradient momentum 0.95, min squared gradient
    0.01; the paper's --learning-rate: 2.5e-4)"""
    num_envs: int = 1  # number of environments stepped together
    buffer_size: int = 50_000
    """replay capacity in transitions (CartPole-v1: our sweep; LunarLander-v3: rl-baselines3-zoo's; CleanRL: 10k)"""
    gamma: float = 0.99  # discount factor
    tau: float = 0.005
    """target network update rate: 1 copies the online network (the paper's hard update), < 1 blends it in
    (Polyak averaging; in our CartPole-v1 sweep 0.005 every step held 500 for 5 of 5 seeds, a hard copy every 500
    steps for 1 of 3; CleanRL: 1)"""
    target_network_frequency: int = 1
    """env steps between target network updates (1 with Polyak averaging; CleanRL: 500 with tau 1)"""
    batch_size: int = 128  # transitions per gradient step (CleanRL and rl-baselines3-zoo: 128)
    start_e: float = 1.0  # exploration epsilon at the start
    end_e: float = 0.02
    """exploration epsilon at the end of the schedule (CartPole-v1 and LunarLander-v3: our sweeps; CleanRL: 0.05)"""
    exploration_fraction: float = 0.2857
    """fraction of `total_timesteps` over which epsilon falls linearly from `start_e` to `end_e` (our sweeps: the
    first 20k steps of CartPole-v1, 60k of LunarLander-v3; CleanRL: 0.5, rl-baselines3-zoo: 0.16)"""
    learning_starts: int = 1_000
    """env steps of random play that fill the buffer before learning (CartPole-v1: our sweep, rl-baselines3-zoo's)"""
    train_frequency: int = 4
    """env steps between training phases (Mnih et al. 2015 and rl-baselines3-zoo: 4; CleanRL: 10; LunarLander-v3: 2,
    our sweeps)"""
    gradient_steps: int = 1
    """gradient steps per training phase (rl-baselines3-zoo's LunarLander-v3: one per env step, which made each env
    step about 3x slower on our CPU)"""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """widths of the hidden layers (CartPole-v1 and LunarLander-v3: our sweeps; CleanRL: 120 84)"""
    loss: Literal["mse", "huber"] = "mse"
    """TD loss: mean squared error, or Huber (smooth L1 with delta 1: the paper's error clipping, SB3's default)"""
    max_grad_norm: Optional[float] = None
    """clip the gradient to this global L2 norm (None: no clipping; SB3's default: 10)"""


# the run options (below the harness line) whose defaults are this script's own
RUN_DEFAULTS = dict(eval_frequency=10_000, eval_episodes=10, eval_epsilon=0.0)


def check_args(args: Args, run_args) -> list[str]:
    """What is wrong with the env (the harness checks the settings every script has)."""
    try:
        env = gym.make(args.env_id)
    except (gym.error.Error, ImportError, AttributeError) as error:
        atari = " (an Atari game: use dqn_atari.py)" if "NoFrameskip" in args.env_id or "ALE/" in args.env_id else ""
        return [f"cannot make env {args.env_id!r}: {error}{atari}"]
    env.close()
    problems = [] if isinstance(env.action_space, gym.spaces.Discrete) else [
        f"{SCRIPT}.py needs a Discrete action space; {args.env_id} has {env.action_space}"]
    if args.end_learning_rate is not None and args.end_learning_rate < 0:  # the harness refuses NaN and inf
        problems.append(f"--end-learning-rate must be >= 0 or None (got {args.end_learning_rate})")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        problems.append(f"{SCRIPT}.py needs a 1-D Box observation space; {args.env_id} has {env.observation_space}"
                        + (" (images: use dqn_atari.py)" if isinstance(env.observation_space, gym.spaces.Box) else ""))
    return problems


def float32_observations(env: gym.Env) -> gym.Env:
    """`env` with its Box observations cast to float32, at this one boundary: the replay stores float32 and the
    network takes it, whatever dtype the env has (float64 and integer ones included); a float32 env as it is."""
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or space.dtype == np.float32:
        return env
    box = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: np.asarray(obs, dtype=np.float32), box)


def make_env(env_id: str, video_dir: Optional[str] = None, video_prefix: str = "eval") -> Callable[[], gym.Env]:
    """A thunk building one env that reports each episode's return and length in `info["episode"]`."""

    def thunk() -> gym.Env:
        # render_mode only when recording: a user's env may not take the argument at all
        env = gym.make(env_id, **({"render_mode": "rgb_array"} if video_dir else {}))
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: episode == 0,
                                           name_prefix=video_prefix, disable_logger=True)
        return float32_observations(gym.wrappers.RecordEpisodeStatistics(env))

    return thunk


class QNetwork(nn.Sequential):
    """MLP mapping an observation [B, obs_dim] to one Q-value per action [B, A]: Linear, ReLU, ..., Linear."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: tuple[int, ...]):
        sizes = [obs_dim, *hidden_sizes]
        hidden = [layer for n_in, n_out in zip(sizes, sizes[1:]) for layer in (nn.Linear(n_in, n_out), nn.ReLU())]
        super().__init__(*hidden, nn.Linear(sizes[-1], n_actions))
        self.n_actions = n_actions


class Batch(NamedTuple):
    obs: torch.Tensor  # [B, obs_dim]
    actions: torch.Tensor  # [B] int64
    rewards: torch.Tensor  # [B]
    next_obs: torch.Tensor  # [B, obs_dim]
    terminations: torch.Tensor  # [B], 1.0 where the episode terminated (not where it was truncated)


class ReplayBuffer:
    """The replay memory: a ring of the last `capacity` transitions (obs, action, reward, next_obs, termination), in
    preallocated NumPy arrays. `next_obs` is the true successor of `obs`, at an episode's end its final observation."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], device: torch.device):
        self.capacity, self.device = capacity, device
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminations = np.zeros(capacity, dtype=np.float32)
        self.position, self.size = 0, 0

    @staticmethod
    def bytes_needed(capacity: int, obs_shape: tuple[int, ...]) -> int:
        return capacity * (2 * 4 * math.prod(obs_shape) + 8 + 4 + 4)

    def add(self, obs, next_obs, actions, rewards, terminations) -> None:
        """Store one transition per env: every argument has one row per env."""
        for i in range(len(actions)):  # into the slot after the newest: once the ring is full, the oldest
            self.obs[self.position], self.next_obs[self.position] = obs[i], next_obs[i]
            self.actions[self.position], self.rewards[self.position] = actions[i], rewards[i]
            self.terminations[self.position] = terminations[i]
            self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + len(actions), self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A minibatch drawn uniformly, with replacement, from the stored transitions."""
        indices = rng.integers(0, self.size, size=batch_size)  # [B]
        arrays = (self.obs, self.actions, self.rewards, self.next_obs, self.terminations)
        return Batch(*(torch.from_numpy(array[indices]).to(self.device) for array in arrays))

    def state_dict(self) -> dict:
        arrays = {name: torch.from_numpy(getattr(self, name)[:self.size])
                  for name in ("obs", "next_obs", "actions", "rewards", "terminations")}
        return arrays | {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        size = len(state["actions"])
        if size > self.capacity:
            raise ConfigError(f"the saved replay holds {size} transitions, more than --buffer-size {self.capacity}")
        # a larger --buffer-size on a resume: the saved ring, oldest first, and room after it
        order = np.roll(np.arange(size), -state["position"]) if size < self.capacity else np.arange(size)
        for name in ("obs", "next_obs", "actions", "rewards", "terminations"):
            getattr(self, name)[:size] = state[name].numpy()[order]
        self.size, self.position = size, state["position"] % self.capacity if size == self.capacity else size


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


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """One-step TD target r + gamma * max_a' Q_target(s', a'), cut at terminations (never at truncations)."""
    return rewards + gamma * (1.0 - terminations) * next_q  # [B]


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
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_shape, n_actions = envs.single_observation_space.shape, int(envs.single_action_space.n)
    q_network = QNetwork(obs_shape[0], n_actions, args.hidden_sizes).to(run.device)
    eval_env = partial(make_env, args.env_id)
    if run.evaluating:  # --eval-checkpoint: load the network and evaluate it; no replay, no training
        envs.close()
        return evaluate_checkpoint(run, partial(epsilon_greedy, q_network), eval_env, q_network=q_network)
    target_network = QNetwork(obs_shape[0], n_actions, args.hidden_sizes).to(run.device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = make_optimizer(q_network.parameters(), args)
    check_memory(ReplayBuffer.bytes_needed(args.buffer_size, obs_shape), "--buffer-size")
    replay_buffer = ReplayBuffer(args.buffer_size, obs_shape, run.device)
    obs = start_run(run, envs, policy=partial(epsilon_greedy, q_network), eval_env=eval_env,
                    replay=replay_buffer, q_network=q_network, target_network=target_network, optimizer=optimizer)
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
        # store (s, a, r, s', terminated): a truncated episode keeps terminated 0, so its target bootstraps from s'
        replay_buffer.add(obs, final_observations(next_obs, infos), actions, rewards, terminations)
        obs = next_obs

        if global_step > learning_starts:
            # every train_frequency steps: a gradient step on the TD error of a minibatch from the replay
            for _ in range(args.gradient_steps * due(global_step, args.train_frequency, args.num_envs)):
                if args.end_learning_rate is not None:  # the learning rate falls linearly over the run, if asked
                    optimizer.param_groups[0]["lr"] = linear_schedule(args.learning_rate, args.end_learning_rate,
                                                                      args.total_timesteps, global_step)
                batch = replay_buffer.sample(args.batch_size, run.rng)
                with torch.no_grad():
                    next_q = target_network(batch.next_obs).amax(dim=1)  # [B]: max_a' Q_target(s', a')
                    targets = td_target(batch.rewards, batch.terminations, next_q, args.gamma)  # [B]
                q_values = q_network(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)  # [B]: Q(s, a)
                loss = F.mse_loss(q_values, targets) if args.loss == "mse" else F.smooth_l1_loss(q_values, targets)
                optimizer.zero_grad()
                loss.backward()
                if args.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                optimizer.step()
                log_update(run, loss, q_values, epsilon=epsilon)
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
