"""Env steps per second of dqn.py on CartPole-v1, beside a naive reference loop and other versions, measured in one run.

    python benchmarks/sps.py              # a few minutes on a 2-core CPU
    python benchmarks/sps.py --steps 40000 --num-envs 1 4 16 --rounds 5
    git show v1:dqn.py > /tmp/dqn_before.py && python benchmarks/sps.py --baseline /tmp/dqn_before.py   # before/after
    python benchmarks/sps.py --cleanrl "/path/to/venv/bin/python /path/to/cleanrl/dqn.py"   # CleanRL's own too

At CleanRL's dqn.py configuration (MLP 120-84, batch 128, train every 10 steps, target every 500, buffer 10k, learning
starts 10k, Adam 2.5e-4, epsilon 1 -> 0.05 over the warm-up, so the timed steps are the learning phase), printed:
1. the floor: one vector-env step, one batch-1 action and one batch-128 update, combined into the best possible steps
   per second, the naive way (torch forward, default Adam) and dqn.py's (NumPy `greedy_actions`, fused Adam);
2. the learning-phase speed, by wall and by CPU time on one thread, of a reference loop written the textbook/CleanRL
   way (torch forward per action, SB3's ReplayBuffer, default Adam, no TensorBoard) and of dqn.py at each --num-envs;
3. with --baseline PATH, that version of dqn.py and this checkout's, as subprocesses timed by their own clocks;
4. with --cleanrl COMMAND (its python and script: it pins gymnasium 0.29, so it needs its own virtual environment,
   and its checkout on PYTHONPATH), CleanRL's dqn.py with --total-timesteps, --exploration-fraction and --no-cuda.
Rounds alternate the contenders and keep each one's median. --count-instructions counts instead the instructions of
each per learning-phase step under valgrind (cachegrind, no cache simulation): the same on a busy machine, slow.
Compare ratios, not absolute figures across machines.
"""

import contextlib
import copy
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tyro  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import dqn  # noqa: E402
from benchmarks.timing import command_from_option, learning_phase_sps, per_call, timed_run, usage_error  # noqa: E402

EXPLORATION_STEPS = 10_000  # epsilon reaches 0.05 when learning starts: the timed steps are the steady learning phase
CLEANRL = dict(hidden_sizes=(120, 84), batch_size=128, train_frequency=10, target_network_frequency=500,
               buffer_size=10_000, learning_starts=10_000, learning_rate=2.5e-4, end_e=0.05, gamma=0.99, tau=1.0)


def per_call_us(function, calls: int) -> float:
    """Best-of-5 mean CPU time of one call in microseconds (CPU time, like the minimum, is what an idle machine would
    show; the process runs one thread)."""
    return per_call(function, calls, repeats=5, warmup=min(calls, 200))[0] * 1e6


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
    forward_lean = per_call_us(lambda: dqn.greedy_actions(q_network, obs), 2000)

    batch = 128
    b_obs, b_next_obs = torch.randn(batch, 4), torch.randn(batch, 4)
    b_actions, b_rewards, b_terminations = torch.randint(0, 2, (batch,)), torch.randn(batch), torch.zeros(batch)

    def update_with(optimizer):
        def update():
            with torch.no_grad():
                targets = dqn.td_target(b_rewards, b_terminations, target_network(b_next_obs).amax(dim=1), 0.99)
            q_values = q_network(b_obs).gather(1, b_actions.unsqueeze(1)).squeeze(1)
            loss = F.mse_loss(q_values, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return update

    update_naive = per_call_us(update_with(torch.optim.Adam(q_network.parameters(), lr=2.5e-4)), 300)
    update_lean = per_call_us(update_with(torch.optim.Adam(q_network.parameters(), lr=2.5e-4, fused=True)), 300)
    envs.close()
    return dict(env_step=env_step, forward_torch=forward_torch, forward_lean=forward_lean, update_naive=update_naive,
                update_lean=update_lean)


def reference_loop(total_timesteps: int, seed: int = 1) -> None:
    """The common textbook loop (the CleanRL dqn.py pattern, written here from its description): a torch forward for
    each greedy action, SB3's ReplayBuffer, the default Adam. It stores the autoreset step as a transition like the
    pre-1.0 scripts did; that costs nothing here."""
    from stable_baselines3.common.buffers import ReplayBuffer

    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))])
    q_network = nn.Sequential(nn.Linear(4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 2))
    target_network = copy.deepcopy(q_network)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=CLEANRL["learning_rate"])
    replay_buffer = ReplayBuffer(CLEANRL["buffer_size"], envs.single_observation_space, envs.single_action_space,
                                 "cpu", handle_timeout_termination=False)
    obs, _ = envs.reset(seed=seed)
    for global_step in range(total_timesteps):
        epsilon = dqn.linear_schedule(1.0, CLEANRL["end_e"], EXPLORATION_STEPS, global_step)
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


def dqn_settings(total_timesteps: int, num_envs: int, runs_dir: str) -> dict:
    """dqn.py's settings at the fixed configuration, with the same absolute epsilon schedule as the reference."""
    return dict(CLEANRL, total_timesteps=total_timesteps, num_envs=num_envs, eval_frequency=10 * total_timesteps,
                exploration_fraction=EXPLORATION_STEPS / total_timesteps, eval_episodes=1, save_model=False,
                runs_dir=runs_dir, seed=1)


def dqn_run(total_timesteps: int, num_envs: int, runs_dir: str) -> None:
    """dqn.py's main() in this process."""
    values = dqn_settings(total_timesteps, num_envs, runs_dir)
    run_fields = {field for field in dqn.RunArgs.__dataclass_fields__}
    args = dqn.Args(**{name: value for name, value in values.items() if name not in run_fields})
    run_args = dqn.RunArgs(**{name: value for name, value in values.items() if name in run_fields})
    with contextlib.redirect_stdout(io.StringIO()):
        dqn.main(args, run_args)


def script_flags(total_timesteps: int, runs_dir: str) -> list[str]:
    """The command-line flags of `dqn_settings` at one env, for a dqn.py run as a subprocess."""
    flags = []
    for name, value in dqn_settings(total_timesteps, 1, runs_dir).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return flags


def script_run(script: str, total_timesteps: int, runs_dir: str) -> tuple[float, float]:
    """A version of dqn.py run as a subprocess with the same settings as `dqn_run` at one env: (wall, CPU) seconds."""
    return timed_run([sys.executable, script], script_flags(total_timesteps, runs_dir), runs_dir)


def instructions(command: list[str], cwd: str) -> int:
    """The instructions `command` executes, counted by valgrind (cachegrind without its cache simulation)."""
    result = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                             *command], cwd=cwd, capture_output=True, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or not found:
        sys.exit(f"{' '.join(command[:3])} ... failed under valgrind (exit code {result.returncode}):\n"
                 f"{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def count_instructions(contenders: dict, short: int, long: int) -> None:
    """Print each contender's instructions per learning-phase step, and their ratios to the first one."""
    counts = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, command in contenders.items():
            low, high = (instructions(command(steps, runs_dir), runs_dir) for steps in (short, long))
            counts[name] = (high - low) / (long - short)
            print(f"  {name:42s} {counts[name] / 1e3:9,.1f}k instructions per step", flush=True)
    reference = next(iter(counts))
    print(f"\nsteps per instruction, as a ratio to the {reference} (a proxy for the CPU-time ratio)")
    for name, count in counts.items():
        print(f"  {name:42s} {counts[reference] / count:5.2f}x")


def cleanrl_run(command: list[str], total_timesteps: int, runs_dir: str) -> tuple[float, float]:
    """Run CleanRL's dqn.py for `total_timesteps` with the same absolute epsilon schedule; return its (wall, CPU)
    seconds, the CPU time read from the finished child's resource usage."""
    return timed_run(command, ["--total-timesteps", str(total_timesteps), "--exploration-fraction",
                               str(EXPLORATION_STEPS / total_timesteps), "--no-cuda", "--seed", "1"], runs_dir)


@dataclass
class Options:
    steps: Optional[int] = None
    """timed learning-phase env steps per contender (None: 20,000; 2,000 with --count-instructions)"""
    rounds: int = 3
    """alternating rounds; each contender's median is kept"""
    num_envs: tuple[int, ...] = (1, 4, 16)
    """num_envs values for dqn.py"""
    threads: int = 1
    """torch threads"""
    baseline: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """also time this version of dqn.py (and this checkout's) as a subprocess; repeatable"""
    cleanrl: Optional[str] = None
    """also time CleanRL's dqn.py: its python and script, e.g. '/path/to/cleanrl-venv/bin/python
    /path/to/cleanrl/cleanrl/dqn.py'"""
    count_instructions: bool = False
    """count each contender's instructions under valgrind instead of timing it"""


def main() -> None:
    options = tyro.cli(Options, description=__doc__)
    steps = options.steps or (2000 if options.count_instructions else 20_000)
    if options.count_instructions:
        if shutil.which("valgrind") is None:
            usage_error("--count-instructions needs valgrind (apt-get install valgrind)")
        short = CLEANRL["learning_starts"] + 500
        reference = [sys.executable, "-c", "from benchmarks.sps import reference_loop; import sys; "
                     "reference_loop(int(sys.argv[1]))"]
        contenders = {"naive reference loop (CleanRL pattern)": lambda n, _: [*reference, str(n)]}
        if options.cleanrl:
            command = command_from_option(options.cleanrl)
            contenders["CleanRL dqn.py"] = lambda n, runs_dir: [*command, "--total-timesteps", str(n),
                                                                 "--exploration-fraction", str(EXPLORATION_STEPS / n),
                                                                 "--no-cuda", "--seed", "1"]
        for path in [*options.baseline, str(ROOT / "dqn.py")]:
            contenders[path] = lambda n, runs_dir, path=path: [sys.executable, path, *script_flags(n, runs_dir)]
        print(f"instructions per learning-phase step over {steps:,} steps, counted by valgrind\n")
        count_instructions(contenders, short, short + steps)
        return
    if steps < 1000:
        usage_error("--steps must be at least 1000")
    for path in options.baseline:
        if not Path(path).is_file():
            usage_error(f"--baseline {path}: no such file")
    cleanrl_command = command_from_option(options.cleanrl)
    torch.set_num_threads(options.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores; CartPole-v1, "
          f"CleanRL's dqn.py configuration\n")
    c = floor_components()
    naive_step = c["env_step"] + c["forward_torch"] + c["update_naive"] / CLEANRL["train_frequency"]
    lean_step = c["env_step"] + c["forward_lean"] + c["update_lean"] / CLEANRL["train_frequency"]
    print("floor components (CPU time per call, best of 5 repeats)")
    print(f"  vector-env step, gymnasium SyncVectorEnv (SAME_STEP)       {c['env_step']:8.1f} us")
    print(f"  batch-1 action, torch eager forward                        {c['forward_torch']:8.1f} us")
    print(f"  batch-1 action, dqn.py greedy_actions (NumPy views)        {c['forward_lean']:8.1f} us")
    print(f"  batch-128 update, default Adam                             {c['update_naive']:8.1f} us")
    print(f"  batch-128 update, fused Adam (dqn.py)                      {c['update_lean']:8.1f} us")
    print(f"  naive floor: env + torch forward + update/10       {naive_step:7.1f} us/step = "
          f"{1e6 / naive_step:7,.0f} SPS")
    print(f"  dqn.py floor: env + NumPy forward + fused/10      {lean_step:7.1f} us/step = {1e6 / lean_step:7,.0f} SPS")
    print("  (both floors assume a network call on every step; with epsilon-greedy, exploring steps skip it)\n")

    # alternate the contenders over several rounds and keep each one's best: on a shared machine the least-disturbed
    # round is the closest to the true speed, and alternating exposes every contender to the same load
    short, long = CLEANRL["learning_starts"] + 2000, CLEANRL["learning_starts"] + 2000 + steps
    rates: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        references = {"naive reference loop (CleanRL pattern)": reference_loop}
        if cleanrl_command is not None:
            references["CleanRL dqn.py (subprocess)"] = lambda steps: cleanrl_run(cleanrl_command, steps, runs_dir)
        for path in options.baseline:
            references[f"{path} (subprocess)"] = lambda steps, path=path: script_run(path, steps, runs_dir)
        ours = {f"dqn.py num_envs={n}": (lambda steps, n=n: dqn_run(steps, n, runs_dir)) for n in options.num_envs}
        if options.baseline:
            here = str(Path(__file__).resolve().parent.parent / "dqn.py")
            ours["dqn.py num_envs=1 (subprocess)"] = lambda steps: script_run(here, steps, runs_dir)
        # one untimed run of each in-process contender first: its first call in this process pays one-time costs
        # (imports, first torch calls) that would otherwise fall into its first short run and inflate its rate
        for name, run in {"reference": reference_loop, **ours}.items():
            if "subprocess" not in name:
                run(short)
        contenders = references | ours
        for round_index in range(options.rounds):
            for name, run in contenders.items():
                rates.setdefault(name, []).append(learning_phase_sps(run, short, long))
            print(f"round {round_index + 1}/{options.rounds} done", flush=True)
    best = {name: (statistics.median(wall for wall, _ in runs), statistics.median(cpu for _, cpu in runs))
            for name, runs in rates.items()}
    print(f"\nenv steps per second over {steps:,} learning-phase steps (epsilon 0.05), the median of "
          f"{options.rounds} alternating rounds;\nby wall time, and by CPU time (= wall time on an idle machine, for "
          "one thread)")
    for reference in references:
        reference_wall, reference_cpu = best[reference]
        print(f"\nratios to the {reference}")
        print(f"  {'':42s} {'wall SPS':>9s} {'ratio':>6s} {'CPU SPS':>9s} {'ratio':>6s} {'vs naive floor':>15s}")
        for name, (wall, cpu) in best.items():
            print(f"  {name:42s} {wall:9,.0f} {wall / reference_wall:5.2f}x {cpu:9,.0f} {cpu / reference_cpu:5.2f}x "
                  f"{cpu * naive_step / 1e6:14.2f}x")


if __name__ == "__main__":
    main()
