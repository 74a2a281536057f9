"""DQN tuned for LunarLander-v3: land the lander reliably, on a laptop CPU, in minutes.

Follows Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature 518), with an MLP
Q-network, a replay buffer, a target network, epsilon-greedy exploration, and a TD target that bootstraps through
time-limit truncations but not through terminations. The code is `dqn.py`'s (its shared blocks are kept identical);
what differs is the defaults, measured on LunarLander-v3 starting from rl-baselines3-zoo's tuned DQN set, and the
landing rate: the fraction of evaluation episodes with a return of at least 200, the per-episode "solved" bar of
gymnasium's LunarLander documentation. Departures from the paper are listed in the README ("dqn_lunar.py").

    python dqn_lunar.py                          # train, evaluate, report mean ± std return and landing rate
    python dqn_lunar.py --capture-video          # also record evaluation episodes to runs/<run>/videos/
    python dqn_lunar.py --target-return 200      # stop at the first evaluation that is solved, keep that model
    python dqn_lunar.py --eval-checkpoint runs/<run>/best.pt --eval-episodes 100   # evaluate a saved model

Reproduces: LunarLander-v3 learned to land within 100k-200k env steps for seeds 1-3, about 6 minutes of CPU time per
300k-step seed; the final network's evaluation swings with the seed's random draws (154 ± 14 over seeds 1-3 with the
current code, 245 ± 7 with an earlier random stream); see the README.
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

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

SCRIPT = Path(__file__).stem
# an episode with at least this return is a landing: the per-episode "solved" bar of gymnasium's LunarLander docs
LANDED_RETURN = 200.0


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
    """CPU threads for torch ops; 1 is fastest for small networks, 0 keeps torch's default (one per core)"""
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
    """store the replay buffer in `checkpoint.pt` too, so a resumed run continues with the same memory"""
    resume: Optional[str] = None
    """path of a `checkpoint.pt` to continue from; the run goes on in that checkpoint's run directory"""
    eval_checkpoint: Optional[str] = None
    """path of a checkpoint to evaluate for `--eval-episodes` episodes, without training"""
    runs_dir: str = "runs"
    """folder under which every run gets its own directory"""
    eval_frequency: int = 25_000
    """env steps between evaluations"""
    eval_episodes: int = 20
    """episodes per evaluation (20: LunarLander's returns vary far more between episodes than CartPole's)"""
    eval_epsilon: float = 0.0
    """probability of a random action during evaluation (0: greedy, as SB3's `evaluate_policy(deterministic=True)`)"""
    target_return: Optional[float] = None
    """stop training as soon as an evaluation mean reaches this return"""

    env_id: str = "LunarLander-v3"
    """gymnasium id of the environment (any registered id, or `module:Env-v0`)"""
    total_timesteps: int = 300_000
    """env steps to train for, summed over all envs (our sweep; rl-baselines3-zoo: 100_000)"""
    learning_rate: float = 6.3e-4
    """Adam learning rate (rl-baselines3-zoo: 6.3e-4)"""
    num_envs: int = 1
    """number of environments stepped together"""
    buffer_size: int = 50_000
    """replay buffer capacity in transitions (rl-baselines3-zoo: 50_000)"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 1.0
    """target network update rate: 1 copies the online network (hard update), < 1 blends it in (Polyak averaging)"""
    target_network_frequency: int = 1_000
    """env steps between target network updates (our sweep: 250 gradient steps apart, as
    rl-baselines3-zoo's 250 env steps are at its one gradient step per env step)"""
    batch_size: int = 128
    """transitions per gradient step (rl-baselines3-zoo: 128)"""
    start_e: float = 1.0
    """exploration epsilon at the start"""
    end_e: float = 0.1
    """exploration epsilon at the end of the schedule (rl-baselines3-zoo: 0.1; in our sweep 0.02 left the greedy
    policy hovering until 175k steps)"""
    exploration_fraction: float = 0.2
    """fraction of `total_timesteps` over which epsilon goes linearly from `start_e` to `end_e`
    (our sweep: 60k steps; rl-baselines3-zoo: 0.12 of 100k steps)"""
    learning_starts: int = 1_000
    """env steps of random play that fill the buffer before learning starts (rl-baselines3-zoo: 0; here
    at least `batch_size`)"""
    train_frequency: int = 4
    """env steps between training phases (Mnih et al. 2015 and rl-baselines3-zoo: 4)"""
    gradient_steps: int = 1
    """gradient steps per training phase (our sweep; rl-baselines3-zoo: -1, i.e. 4, one per env step, which
    made each env step about 3x slower on our CPU)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """widths of the Q-network's hidden layers (rl-baselines3-zoo: 256 256)"""
    loss: Literal["mse", "huber"] = "huber"
    """TD loss: mean squared error, or Huber (smooth L1 with delta 1, the paper's error clipping; SB3's
    DQN and rl-baselines3-zoo)"""
    max_grad_norm: Optional[float] = 10.0
    """clip the gradient to this global L2 norm (None: no clipping; SB3's DQN and rl-baselines3-zoo: 10)"""


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
    if problems:
        raise ConfigError("; ".join(problems))


def env_spaces(env_id: str) -> tuple[tuple[int, ...], int]:
    """Build the env once and return (observation shape, number of actions), or raise ConfigError."""
    try:
        env = gym.make(env_id)
    except (gym.error.Error, ModuleNotFoundError, AttributeError) as error:
        raise ConfigError(f"cannot make env {env_id!r}: {error}") from None
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"{SCRIPT}.py needs a Discrete action space; {env_id} has {action_space}")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        hint = " (image observations: use dqn_atari.py)" if isinstance(obs_space, gym.spaces.Box) else ""
        raise ConfigError(f"{SCRIPT}.py needs a 1-D Box observation space; {env_id} has {obs_space}{hint}")
    return obs_space.shape, int(action_space.n)


def make_env(env_id: str, video_dir: Optional[str] = None, video_prefix: str = "eval") -> Callable[[], gym.Env]:
    """Return a thunk building one env that reports episode returns in `info["episode"]`."""

    def thunk() -> gym.Env:
        # render_mode only when recording: a user's env may not take the argument at all
        env = gym.make(env_id, **({"render_mode": "rgb_array"} if video_dir else {}))
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: episode == 0,
                                           name_prefix=video_prefix, disable_logger=True)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


class SameStepVectorEnv(gym.vector.VectorEnv):
    """`num_envs` envs stepped one after another in this process, each reset in the same `step` that ends its
    episode: gymnasium's `SyncVectorEnv` in `SAME_STEP` autoreset mode, step for step, with the same infos.

    The returned obs of a finished env already starts its next episode; its true last obs is in
    `infos["final_obs"][i]` and its last info (with `RecordEpisodeStatistics`' `"episode"`) in `infos["final_info"]`,
    each with a mask (`infos["_final_obs"]`, ...); infos are batched by gymnasium's own `VectorEnv._add_info`.
    Written out because `SyncVectorEnv`'s generic machinery (action iteration, observation concatenation, deep
    copies) costs more than a CartPole step itself: a step takes 35-40 us there, 18-19 us here."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]):
        self.envs = [env_fn() for env_fn in env_fns]
        self.num_envs = len(self.envs)
        self.metadata = self.envs[0].metadata | {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        """Reset every env, env i with `seed + i` (as `SyncVectorEnv` does)."""
        infos, obs = {}, []
        for i, env in enumerate(self.envs):
            env_obs, env_info = env.reset(seed=None if seed is None else seed + i, options=options)
            obs.append(env_obs)
            infos = self._add_info(infos, env_info, i)
        return np.stack(obs), infos

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        n, space = self.num_envs, self.single_observation_space
        obs = np.empty((n, *space.shape), dtype=space.dtype)
        rewards, terminations, truncations = np.empty(n), np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        infos = {}
        for i, (env, action) in enumerate(zip(self.envs, actions.tolist())):  # Python ints: the cheapest to check
            env_obs, rewards[i], terminations[i], truncations[i], env_info = env.step(action)
            if terminations[i] or truncations[i]:
                infos = self._add_info(infos, {"final_obs": env_obs, "final_info": env_info}, i)
                env_obs, env_info = env.reset()
            if env_info:  # most steps of most envs report nothing
                infos = self._add_info(infos, env_info, i)
            obs[i] = env_obs
        return obs, rewards, terminations, truncations, infos

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()


class QNetwork(nn.Module):
    """MLP mapping an observation to one Q-value per action."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        sizes = [obs_dim, *hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], n_actions))
        self.network = nn.Sequential(*layers)
        self._numpy_layers: Optional[list[tuple[np.ndarray, np.ndarray]]] = None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.network(obs)  # [B, obs_dim] -> [B, A]

    def greedy_actions(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a Q(obs, a) for a NumPy batch of observations [B, obs_dim] -> [B].

        On the CPU the same layers run in NumPy on zero-copy views of the parameters: for a handful of observations
        torch spends ~10 us dispatching each op, 4-5x the arithmetic. The optimizer and `load_state_dict` write the
        parameters in place, so the views always hold the current weights (a test checks this)."""
        if self._numpy_layers is None:
            first_weight = self.network[0].weight
            if first_weight.device.type != "cpu":
                with torch.inference_mode():
                    obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=first_weight.device)
                    return self(obs_tensor).argmax(dim=1).cpu().numpy()
            linears = [layer for layer in self.network if isinstance(layer, nn.Linear)]
            self._numpy_layers = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in linears]
        x = obs.astype(np.float32, copy=False)
        for weight_t, bias in self._numpy_layers[:-1]:
            x = x @ weight_t  # [B, hidden]
            x += bias
            np.maximum(x, 0.0, out=x)
        weight_t, bias = self._numpy_layers[-1]
        return (x @ weight_t + bias).argmax(axis=1)  # [B]

    def _apply(self, fn, *args, **kwargs):
        self._numpy_layers = None  # .to(), .cuda(), .double() replace the parameters: rebuild the views
        return super()._apply(fn, *args, **kwargs)


class ReplayBuffer:
    """Ring buffer of transitions (obs, action, reward, next_obs, termination), preallocated in NumPy.

    `next_obs` is the true successor of `obs` (at an episode's end, the final observation, not the reset one).
    Samples come back as torch tensors on `device`."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], device: torch.device):
        self.capacity, self.device = capacity, device
        self.observations = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_observations = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminations = np.zeros(capacity, dtype=np.float32)
        self.position, self.size = 0, 0

    def add(self, obs, next_obs, actions, rewards, terminations) -> None:
        """Store one transition per env: each argument has a leading dimension of num_envs."""
        n = len(actions)
        slots = np.arange(self.position, self.position + n) % self.capacity if self.position + n > self.capacity \
            else slice(self.position, self.position + n)
        self.observations[slots] = obs
        self.next_observations[slots] = next_obs
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.terminations[slots] = terminations
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """Uniform sample with replacement: (obs [B, D], actions [B], rewards [B], next_obs [B, D], terminations [B])."""
        indices = rng.integers(0, self.size, size=batch_size)
        arrays = (self.observations, self.actions, self.rewards, self.next_observations, self.terminations)
        return tuple(torch.from_numpy(array[indices]).to(self.device, non_blocking=True) for array in arrays)

    def state_dict(self) -> dict:
        n = self.size
        return {"observations": torch.from_numpy(self.observations[:n]), "actions": torch.from_numpy(self.actions[:n]),
                "rewards": torch.from_numpy(self.rewards[:n]), "terminations": torch.from_numpy(self.terminations[:n]),
                "next_observations": torch.from_numpy(self.next_observations[:n]), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        n = len(state["actions"])
        if n > self.capacity:
            raise ConfigError(f"the saved replay buffer holds {n} transitions, more than --buffer-size {self.capacity}")
        for name in ["observations", "next_observations", "actions", "rewards", "terminations"]:
            getattr(self, name)[:n] = state[name].numpy()
        self.size, self.position = n, state["position"] % self.capacity


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


def success_rate(returns: list[float], threshold: float = LANDED_RETURN) -> float:
    """Fraction of episodes whose return is at least `threshold` (LunarLander: the landing rate)."""
    return sum(episode_return >= threshold for episode_return in returns) / len(returns)


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
    """--eval-checkpoint: evaluate a saved network without training."""
    obs_shape, n_actions = env_spaces(args.env_id)
    checkpoint = load_checkpoint(args.eval_checkpoint, args.env_id)
    saved = checkpoint["args"]
    q_network = QNetwork(obs_shape[0], n_actions, tuple(saved["hidden_sizes"]))
    q_network.load_state_dict(checkpoint["q_network"])
    video_dir = str(Path(args.eval_checkpoint).parent / "videos") if args.capture_video else None
    returns = evaluate(q_network, make_env(args.env_id, video_dir, f"eval-checkpoint-step{checkpoint['global_step']}"),
                       args.eval_episodes, args.eval_epsilon, args.seed)
    summary = {"checkpoint": args.eval_checkpoint, "global_step": checkpoint["global_step"],
               "eval_mean": float(np.mean(returns)), "eval_std": float(np.std(returns)), "eval_returns": returns}
    print(f"{args.env_id}: {args.eval_episodes} episodes, return {summary['eval_mean']:.2f} "
          f"± {summary['eval_std']:.2f} (checkpoint at step {checkpoint['global_step']})")
    return summary


def main(args: Args) -> dict:
    check_args(args)
    if args.eval_checkpoint is not None:
        summary = evaluate_checkpoint(args)
        summary["eval_success_rate"] = success_rate(summary["eval_returns"])
        print(f"landing rate (return >= {LANDED_RETURN:g}): {summary['eval_success_rate']:.0%}")
        return summary
    obs_shape, n_actions = env_spaces(args.env_id)
    checkpoint = load_checkpoint(args.resume, args.env_id) if args.resume else None
    device = choose_device(args.cuda)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)

    seed_everything(args.seed, args.torch_deterministic)
    rng = np.random.default_rng(args.seed)
    q_network = QNetwork(obs_shape[0], n_actions, args.hidden_sizes).to(device)
    target_network = QNetwork(obs_shape[0], n_actions, args.hidden_sizes).to(device)
    target_network.load_state_dict(q_network.state_dict())
    target_params, online_params = list(target_network.parameters()), list(q_network.parameters())
    # fused Adam updates all parameters in one kernel: 30-40% cheaper per update on the CPU than the default
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)
    replay_buffer = ReplayBuffer(args.buffer_size, obs_shape, device)
    global_step, best_eval_mean = 0, -math.inf
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
        if checkpoint.get("replay_buffer") is not None:
            replay_buffer.load_state_dict(checkpoint["replay_buffer"])

    # nothing is written before this point, so a refused setting leaves no trace
    if checkpoint is not None:
        run_dir = Path(args.resume).parent
        truncate_metrics(run_dir / "metrics.csv", global_step)
        print(f"resuming {run_dir} at step {global_step:,}"
              + ("" if checkpoint.get("replay_buffer") else " with an empty replay buffer"))
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
    envs = SameStepVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)])

    def checkpoint_state() -> dict:
        return {"script": SCRIPT, "env_id": args.env_id, "args": dataclasses.asdict(args), "global_step": global_step,
                "q_network": q_network.state_dict(), "target_network": target_network.state_dict(),
                "optimizer": optimizer.state_dict(), "best_eval_mean": best_eval_mean,
                "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()},
                "replay_buffer": replay_buffer.state_dict() if args.save_replay else None}

    def run_evaluation() -> list[float]:
        video_dir = str(run_dir / "videos") if args.capture_video else None
        return evaluate(q_network, make_env(args.env_id, video_dir, f"eval-step{global_step}"), args.eval_episodes,
                        args.eval_epsilon, args.seed + 100_000 + global_step)

    # a resumed run restarts its episodes from fresh resets; the seed is shifted so they differ from the first ones
    obs, _ = envs.reset(seed=args.seed + global_step)
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

            # log finished episodes; SAME_STEP autoreset reports them, and the true final obs, in final_info/final_obs
            real_next_obs = next_obs
            if "_final_obs" in infos:
                real_next_obs = next_obs.copy()  # next_obs already holds the reset obs of the finished envs
                for i in np.flatnonzero(infos["_final_obs"]):
                    real_next_obs[i] = infos["final_obs"][i]
                episodes = infos["final_info"]["episode"]
                for i in np.flatnonzero(infos["final_info"]["_episode"]):
                    recent_returns = (recent_returns + [float(episodes["r"][i])])[-20:]
                    logger.log("charts/episodic_return", float(episodes["r"][i]), global_step)
                    logger.log("charts/episodic_length", float(episodes["l"][i]), global_step)

            # store: a truncated episode keeps termination 0, so its target bootstraps from the true final obs
            replay_buffer.add(obs, real_next_obs, actions, rewards, terminations)
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
                logger.log("eval/success_rate", success_rate(returns), global_step)
                print(f"{clear_line}step {global_step:>9,}  eval return {mean:9.2f} ± {np.std(returns):7.2f} "
                      f"over {len(returns)} episodes, landed {success_rate(returns):4.0%}", flush=True)
                if args.save_model:
                    if mean > best_eval_mean:
                        best_eval_mean = mean
                        save_checkpoint(run_dir / "best.pt", checkpoint_state())
                    save_checkpoint(run_dir / "checkpoint.pt", checkpoint_state())
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
            save_checkpoint(run_dir / "checkpoint.pt", checkpoint_state())
            print(f"saved {run_dir / 'checkpoint.pt'}; continue with: python {SCRIPT}.py --resume "
                  f"{run_dir / 'checkpoint.pt'}", file=sys.stderr)
    summary = {"script": SCRIPT, "env_id": args.env_id, "seed": args.seed, "status": status,
               "global_step": global_step, "wall_time_s": round(wall_time, 2),
               "sps": round((global_step - start_step) / wall_time, 1),
               "eval_mean": float(np.mean(eval_returns)) if eval_returns else None,
               "eval_std": float(np.std(eval_returns)) if eval_returns else None,
               "eval_success_rate": success_rate(eval_returns) if eval_returns else None,
               "eval_returns": eval_returns, "best_eval_mean": best_eval_mean if best_eval_mean > -math.inf else None,
               "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.close()
    if wandb_run is not None:
        wandb_run.summary.update({k: v for k, v in summary.items() if k != "eval_returns"})
        wandb_run.finish()
    if eval_returns:
        print(f"\n{args.env_id}: final evaluation {summary['eval_mean']:.2f} ± {summary['eval_std']:.2f} over "
              f"{len(eval_returns)} episodes after {global_step:,} steps ({wall_time:.1f} s, {summary['sps']:,.0f} SPS)")
        print(f"landing rate (return >= {LANDED_RETURN:g}): {summary['eval_success_rate']:.0%} of "
              f"{len(eval_returns)} episodes")
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
