"""Env steps per second of dqn.py on CartPole-v1, next to the floor and a naive reference loop, measured in one run.

    python benchmarks/sps.py              # about 2 minutes on a 2-core CPU
    python benchmarks/sps.py --steps 30000 --num-envs 1 4 16

The fixed configuration is CleanRL's dqn.py default (MLP 120-84, batch 128, train every 10 steps, target every 500,
buffer 10k, learning starts 10k, Adam 2.5e-4, epsilon 1 -> 0.05 over half the run). Printed:

1. the floor: the measured cost of one vector-env step, one batch-1 action forward and one batch-128 update, combined
   into the best possible steps per second for that configuration ("naive" with plain eager PyTorch: a torch forward
   for every action and the default Adam; "lean" with what dqn.py does instead);
2. a reference loop written the way the textbook/CleanRL scripts are (torch forward per greedy action, SB3's
   ReplayBuffer, default Adam), and dqn.py itself at num_envs 1 and more, both timed over their learning phase only.

Every figure comes from this run on this machine, so compare the ratios, not the absolute numbers across machines.
"""

import argparse
import copy
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dqn  # noqa: E402

CLEANRL = dict(hidden_sizes=(120, 84), batch_size=128, train_frequency=10, target_network_frequency=500,
               buffer_size=10_000, learning_starts=10_000, learning_rate=2.5e-4, end_e=0.05, exploration_fraction=0.5,
               gamma=0.99, tau=1.0)


def per_call_us(function, calls: int, repeats: int = 5) -> float:
    """Best-of-`repeats` mean time of one call in microseconds (the minimum is the least disturbed by other load)."""
    for _ in range(min(calls, 200)):
        function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def floor_components() -> dict:
    envs = gym.vector.SyncVectorEnv([dqn.make_env("CartPole-v1")], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    actions = np.zeros(1, dtype=np.int64)
    env_step = per_call_us(lambda: envs.step(actions), 4000)

    torch.manual_seed(0)
    q_network = dqn.QNetwork(4, 2, CLEANRL["hidden_sizes"])
    target_network = copy.deepcopy(q_network)
    obs = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)

    def torch_forward():
        with torch.no_grad():
            return q_network(torch.Tensor(obs)).argmax(dim=1).numpy()

    forward_torch = per_call_us(torch_forward, 2000)
    forward_lean = per_call_us(lambda: q_network.greedy_actions(obs), 2000)

    batch = 128
    b_obs, b_next_obs = torch.randn(batch, 4), torch.randn(batch, 4)
    b_actions, b_rewards, b_terminations = torch.randint(0, 2, (batch,)), torch.randn(batch), torch.zeros(batch)

    def update_with(optimizer):
        def update():
            with torch.no_grad():
                targets = dqn.td_target(b_rewards, b_terminations, target_network(b_next_obs).amax(dim=1), 0.99)
            q_values = q_network(b_obs).gather(1, b_actions.unsqueeze(1)).squeeze(1)
            loss = F.mse_loss(q_values, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return update

    update_naive = per_call_us(update_with(torch.optim.Adam(q_network.parameters(), lr=2.5e-4)), 300)
    update_lean = per_call_us(update_with(torch.optim.Adam(q_network.parameters(), lr=2.5e-4, fused=True)), 300)
    envs.close()
    return dict(env_step=env_step, forward_torch=forward_torch, forward_lean=forward_lean,
                update_naive=update_naive, update_lean=update_lean)


def reference_loop(total_timesteps: int, seed: int = 1) -> float:
    """The common textbook loop (the CleanRL dqn.py pattern, written here from its description): a torch forward for
    each greedy action, SB3's ReplayBuffer, the default Adam. Returns env steps per second over the learning phase.
    It stores the autoreset step as a transition like the pre-1.0 scripts did; that costs nothing here."""
    from stable_baselines3.common.buffers import ReplayBuffer

    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))])
    q_network = nn.Sequential(nn.Linear(4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 2))
    target_network = copy.deepcopy(q_network)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=CLEANRL["learning_rate"])
    replay_buffer = ReplayBuffer(CLEANRL["buffer_size"], envs.single_observation_space, envs.single_action_space,
                                 "cpu", handle_timeout_termination=False)
    obs, _ = envs.reset(seed=seed)
    learning_start_time = None
    for global_step in range(total_timesteps):
        if global_step == CLEANRL["learning_starts"]:
            learning_start_time = time.perf_counter()
        epsilon = dqn.linear_schedule(1.0, CLEANRL["end_e"], CLEANRL["exploration_fraction"] * total_timesteps,
                                      global_step)
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample()])
        else:
            actions = torch.argmax(q_network(torch.Tensor(obs)), dim=1).cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        replay_buffer.add(obs, next_obs.copy(), actions, rewards, terminations, [infos])
        obs = next_obs
        if global_step > CLEANRL["learning_starts"] and global_step % CLEANRL["train_frequency"] == 0:
            data = replay_buffer.sample(CLEANRL["batch_size"])
            with torch.no_grad():
                target_max, _ = target_network(data.next_observations).max(dim=1)
                targets = data.rewards.flatten() + CLEANRL["gamma"] * target_max * (1 - data.dones.flatten())
            old_values = q_network(data.observations).gather(1, data.actions).squeeze()
            loss = F.mse_loss(targets, old_values)
            if global_step % 100 == 0:
                loss.item(), old_values.mean().item()  # what a logger would read
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if global_step % CLEANRL["target_network_frequency"] == 0:
            for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                target_param.data.copy_(param.data)
    envs.close()
    return (total_timesteps - CLEANRL["learning_starts"]) / (time.perf_counter() - learning_start_time)


def dqn_learning_phase_sps(total_timesteps: int, num_envs: int, runs_dir: str) -> float:
    """Run dqn.py's main() at the fixed configuration; SPS between its first and last loss log (learning phase,
    final evaluation excluded)."""
    args = dqn.Args(**CLEANRL, total_timesteps=total_timesteps, num_envs=num_envs, eval_frequency=10 * total_timesteps,
                    eval_episodes=1, save_model=False, runs_dir=runs_dir, seed=1)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        summary = dqn.main(args)
    with open(Path(summary["run_dir"]) / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["name"] == "losses/td_loss"]
    steps = int(rows[-1]["global_step"]) - int(rows[0]["global_step"])
    return steps / (float(rows[-1]["wall_time"]) - float(rows[0]["wall_time"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60_000, help="env steps per timed run (learning starts at 10k)")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 16], help="num_envs values for dqn.py")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    options = parser.parse_args()
    if options.steps <= CLEANRL["learning_starts"] + 5000:
        parser.error("--steps must exceed the 10k learning-starts by at least 5000")
    torch.set_num_threads(options.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores; CartPole-v1, "
          f"CleanRL's dqn.py configuration, {options.steps:,} steps per run (learning starts at 10k)\n")
    c = floor_components()
    naive_step = c["env_step"] + c["forward_torch"] + c["update_naive"] / CLEANRL["train_frequency"]
    lean_step = c["env_step"] + c["forward_lean"] + c["update_lean"] / CLEANRL["train_frequency"]
    print("floor components (best of 5 repeats)")
    print(f"  vector-env step (SyncVectorEnv + RecordEpisodeStatistics)  {c['env_step']:8.1f} us")
    print(f"  batch-1 action, torch eager forward                        {c['forward_torch']:8.1f} us")
    print(f"  batch-1 action, dqn.py greedy_actions (NumPy views)        {c['forward_lean']:8.1f} us")
    print(f"  batch-128 update, default Adam                             {c['update_naive']:8.1f} us")
    print(f"  batch-128 update, fused Adam (dqn.py)                      {c['update_lean']:8.1f} us")
    print(f"  naive floor: env + torch forward + update/10   {naive_step:7.1f} us/step = {1e6 / naive_step:7,.0f} SPS")
    print(f"  lean floor:  env + NumPy forward + fused/10    {lean_step:7.1f} us/step = {1e6 / lean_step:7,.0f} SPS")
    print("  (both floors assume a network call on every step; with epsilon-greedy, exploring steps skip it)\n")

    with tempfile.TemporaryDirectory() as runs_dir:
        reference = reference_loop(options.steps)
        print(f"naive reference loop (CleanRL pattern), learning phase   {reference:8,.0f} SPS   1.00x")
        for num_envs in options.num_envs:
            sps = dqn_learning_phase_sps(options.steps, num_envs, runs_dir)
            print(f"dqn.py num_envs={num_envs:<3d} learning phase                     {sps:8,.0f} SPS   "
                  f"{sps / reference:4.2f}x   ({sps / (1e6 / naive_step):4.2f}x the naive floor)")


if __name__ == "__main__":
    main()
