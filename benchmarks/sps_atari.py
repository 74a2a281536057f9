"""Speed and memory of dqn_atari.py on this machine, measured in one run so that the ratios compare like with like.

    python benchmarks/sps_atari.py                         # everything: ~15 CPU-minutes
    python benchmarks/sps_atari.py --parts floor main      # only sections 1 and 2
    python benchmarks/sps_atari.py --parts main --num-envs 1 --main-rounds 3 \
        --cleanrl "/path/to/venv/bin/python /path/to/cleanrl/cleanrl/dqn_atari.py"   # against CleanRL's own script

Printed, by CPU time on one torch thread beside wall time (compare ratios, not figures across machines):
1. the floor: one env step (PongNoFrameskip-v4, SB3's wrappers, 4-frame stack), one batch-1 action, storing a step,
   one batch-32 update, combined into 1 / (env + act + store + update / train_frequency) steps per second;
2. dqn_atari.main() at the default settings over its learning phase (two runs that differ only in length), epsilon
   at 0.01 throughout; with --cleanrl COMMAND (its python and script, in its own virtual environment for gymnasium
   0.29, its checkout on PYTHONPATH), CleanRL's dqn_atari.py set up alike, its replay cut to 100k (1M frame stacks
   would need 28 GB); --main-rounds N alternates the contenders and keeps each one's best;
3. the update with channels-last, fused Adam, bf16 autocast, torch.compile or 2 threads, beside dqn_atari.py's plain
   eager fp32 one (the 2-thread rows' CPU time counts both threads: compare their wall time);
4. in a child process: bytes per transition and peak RSS of a replay holding 200k transitions of real Pong.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tyro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dqn_atari  # noqa: E402
from benchmarks.timing import command_from_option, learning_phase_sps, per_call, timed_run  # noqa: E402
from dqn_atari import FrameReplayBuffer, QNetwork, make_env, td_target  # noqa: E402

ENV_ID = "PongNoFrameskip-v4"
LEARNING_STARTS = 1000  # the timed steps come after it


def per_call_ms(function, calls: int, repeats: int = 3) -> tuple[float, float]:
    """(CPU ms, wall ms) of one call: the best of `repeats` means over `calls` calls, after a warm-up."""
    cpu, wall = per_call(function, calls, repeats, warmup=min(calls, 5))
    return cpu * 1e3, wall * 1e3


def filled_replay(steps: int, capacity: int = 10_000, num_envs: int = 1,
                  seed: int = 0) -> tuple[FrameReplayBuffer, gym.vector.VectorEnv, np.ndarray]:
    """A replay of `capacity` frames after `steps` steps of random Pong, stored as main() stores them; also the env
    and its latest observation."""
    envs = gym.vector.SyncVectorEnv([make_env(ENV_ID, True) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    replay_buffer = FrameReplayBuffer(capacity, num_envs, torch.device("cpu"))
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    replay_buffer.start_episodes(obs, np.arange(num_envs))
    for _ in range(steps // num_envs):
        actions = rng.integers(envs.single_action_space.n, size=num_envs)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = next_obs
        if "_final_obs" in infos:
            real_next_obs = next_obs.copy()
            for i in np.flatnonzero(infos["_final_obs"]):
                real_next_obs[i] = infos["final_obs"][i]
        replay_buffer.add(real_next_obs, actions, rewards, terminations)
        dones = np.logical_or(terminations, truncations)
        if dones.any():
            replay_buffer.start_episodes(next_obs[dones], np.flatnonzero(dones))
        obs = next_obs
    return replay_buffer, envs, obs


def make_update(replay_buffer: FrameReplayBuffer, n_actions: int, channels_last: bool = False, bf16: bool = False,
                compile_loss: bool = False, fused: bool = False):
    """One gradient step as main() takes it (Huber loss, Adam); the options change how, not what, it computes."""
    torch.manual_seed(0)
    q_network, target_network = QNetwork(n_actions), QNetwork(n_actions)
    if channels_last:
        q_network.network.to(memory_format=torch.channels_last)
        target_network.network.to(memory_format=torch.channels_last)
        forward = lambda network, obs: network.network(  # noqa: E731
            (obs.float() / 255.0).contiguous(memory_format=torch.channels_last))
    else:
        forward = lambda network, obs: network(obs)  # noqa: E731  (dqn_atari's QNetwork as it is)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=1e-4, fused=fused)
    rng = np.random.default_rng(0)

    def loss_of(b_obs, b_actions, b_rewards, b_next_obs, b_terminations):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                next_q = forward(target_network, b_next_obs).float().amax(dim=1)  # [B]
                targets = td_target(b_rewards, b_terminations, next_q, 0.99)  # [B]
            q_values = forward(q_network, b_obs).float().gather(1, b_actions.unsqueeze(1)).squeeze(1)  # [B]
        return F.smooth_l1_loss(q_values, targets)

    if compile_loss:
        loss_of = torch.compile(loss_of)

    def update():
        loss = loss_of(*replay_buffer.sample(32, rng))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return update, q_network


def section_floor() -> dict:
    replay_buffer, envs, obs = filled_replay(3000)
    n_actions = int(envs.single_action_space.n)
    rng = np.random.default_rng(1)
    env_cpu, env_wall = per_call_ms(lambda: envs.step(rng.integers(n_actions, size=1)), 300)
    update, q_network = make_update(replay_buffer, n_actions)
    act_cpu, act_wall = per_call_ms(lambda: dqn_atari.greedy_actions(q_network, obs), 200)
    update_cpu, update_wall = per_call_ms(update, 20)
    sample_cpu, _ = per_call_ms(lambda: replay_buffer.sample(32, rng), 200)
    actions, rewards, terminations = np.zeros(1, np.int64), np.zeros(1, np.float32), np.zeros(1, bool)
    store_cpu, _ = per_call_ms(lambda: replay_buffer.add(obs, actions, rewards, terminations), 2000)
    envs.close()
    step_cpu = env_cpu + act_cpu + store_cpu + update_cpu / 4
    return {"env_step_ms": env_cpu, "act_forward_ms": act_cpu, "store_ms": store_cpu, "sample_ms": sample_cpu,
            "update_ms": update_cpu, "floor_ms_per_step": step_cpu, "floor_sps": 1e3 / step_cpu,
            "wall": {"env_step_ms": env_wall, "act_forward_ms": act_wall, "update_ms": update_wall}}


def timed_main(total_timesteps: int, num_envs: int) -> None:
    """A whole dqn_atari.main() run at the default settings, except its length, an early start of learning, epsilon at
    its end value throughout, and a single one-game evaluation at the end."""
    with tempfile.TemporaryDirectory() as runs_dir, contextlib.redirect_stdout(io.StringIO()):
        args = dqn_atari.Args(env_id=ENV_ID, learning_starts=LEARNING_STARTS, exploration_fraction=0.0,
                              total_timesteps=total_timesteps, num_envs=num_envs)
        run_args = dqn_atari.RunArgs(torch_threads=1, eval_frequency=10**9, eval_episodes=1, eval_epsilon=0.05,
                                     save_model=False, runs_dir=runs_dir)
        dqn_atari.main(args, run_args)


def timed_cleanrl(command: list[str], total_timesteps: int) -> tuple[float, float]:
    """(wall s, CPU s) of a whole run of CleanRL's dqn_atari.py, set up as `timed_main` sets up dqn_atari.py; the CPU
    time is the finished child's own."""
    with tempfile.TemporaryDirectory() as runs_dir:
        return timed_run(command, ["--env-id", ENV_ID, "--total-timesteps", str(total_timesteps), "--learning-starts",
                                   str(LEARNING_STARTS), "--exploration-fraction", str(1 / total_timesteps),
                                   "--buffer-size", "100000", "--no-cuda", "--seed", "1"], runs_dir)


def section_main(num_envs: int, short: int, long: int, timed=None) -> dict:
    timed = timed or (lambda total_timesteps: timed_main(total_timesteps, num_envs))
    sps_wall, sps_cpu = learning_phase_sps(timed, LEARNING_STARTS + short, LEARNING_STARTS + long)
    return {"num_envs": num_envs, "timed_steps": long - short, "sps_cpu": sps_cpu, "sps_wall": sps_wall}


def section_options(rounds: int, compile_too: bool, slow_too: bool = True) -> list[dict]:
    replay_buffer, envs, _ = filled_replay(2000)
    n_actions = int(envs.single_action_space.n)
    envs.close()
    variants = {"fp32 NCHW (plain eager: dqn_atari)": (1, dict()),
                "fp32 channels-last": (1, dict(channels_last=True)), "fused Adam": (1, dict(fused=True))}
    if slow_too:
        variants["bf16 autocast"] = (1, dict(bf16=True))
        variants["bf16 autocast, channels-last"] = (1, dict(bf16=True, channels_last=True))
    if compile_too:
        variants["torch.compile"] = (1, dict(compile_loss=True))
        variants["torch.compile, channels-last"] = (1, dict(compile_loss=True, channels_last=True))
    if slow_too:
        variants["fp32 NCHW, 2 threads"] = (2, dict())
        variants["fp32 channels-last, 2 threads"] = (2, dict(channels_last=True))
    updates = {}
    for name, (threads, options) in variants.items():
        torch.set_num_threads(threads)
        update, _ = make_update(replay_buffer, n_actions, **options)
        start = time.perf_counter()
        update()  # compiles, for torch.compile
        updates[name] = (threads, update, time.perf_counter() - start)
    cpu, wall = {name: [] for name in variants}, {name: [] for name in variants}
    for _ in range(rounds):  # interleaved, so a change of load hits every variant alike
        for name, (threads, update, _) in updates.items():
            torch.set_num_threads(threads)
            calls = 2 if "bf16" in name else 8
            round_cpu, round_wall = per_call_ms(update, calls, repeats=1)
            cpu[name].append(round_cpu)
            wall[name].append(round_wall)
    torch.set_num_threads(1)
    plain = "fp32 NCHW (plain eager: dqn_atari)"
    base_cpu, base_wall = np.median(cpu[plain]), np.median(wall[plain])
    return [{"variant": name, "threads": updates[name][0], "cpu_ms": float(np.median(cpu[name])),
             "wall_ms": float(np.median(wall[name])), "first_call_s": updates[name][2],
             "cpu_vs_plain": float(np.median(cpu[name]) / base_cpu),
             "wall_vs_plain": float(np.median(wall[name]) / base_wall)} for name in variants]


def section_memory(transitions: int) -> dict:
    """In a child process: peak RSS before and after a replay of `transitions` frames filled with real Pong."""
    code = f"""
import json, os, resource, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import numpy as np, sps_atari
with open("/proc/self/statm") as file:  # resident pages now (ru_maxrss would include the imports' transient peak)
    baseline_kb = int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
replay_buffer, envs, _ = sps_atari.filled_replay({transitions}, capacity={transitions})
envs.close()
lowest = np.maximum(replay_buffer.written - replay_buffer.slots + sps_atari.dqn_atari.FRAME_STACK - 1, 0)
held = sum(int(np.sum(~replay_buffer.first[e, (np.arange(lowest[e], replay_buffer.written[e] - 1) + 1)
                                            % replay_buffer.slots])) for e in range(replay_buffer.num_envs))
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
nbytes = sum(getattr(replay_buffer, name).nbytes for name in ("frames", "actions", "rewards", "terminations", "first"))
print(json.dumps({{"frame_slots": replay_buffer.slots * replay_buffer.num_envs, "transitions_held": held,
                  "replay_bytes": nbytes, "bytes_per_transition": nbytes / held,
                  "baseline_rss_mb": baseline_kb / 1024, "peak_rss_mb": peak_kb / 1024}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class Options:
    parts: tuple[Literal["floor", "main", "options", "memory"], ...] = ("floor", "main", "options", "memory")
    """sections to run"""
    steps: tuple[int, int] = (400, 2400)
    """learning steps of the short and the long main() run"""
    num_envs: tuple[int, ...] = (1, 4)
    """num_envs values of section 2"""
    rounds: int = 3
    """interleaved rounds of the option comparison"""
    compile: bool = True
    """torch.compile in the option comparison (--no-compile: left out, its first call is slow)"""
    slow: bool = True
    """the bf16 and 2-thread rows (--no-slow: left out)"""
    replay_transitions: int = 200_000
    """replay size for the memory figures"""
    cleanrl: Optional[str] = None
    """also time CleanRL's dqn_atari.py in section 2: its python and script, e.g.
    '/path/to/cleanrl-venv/bin/python /path/to/cleanrl/cleanrl/dqn_atari.py'"""
    main_rounds: int = 1
    """alternating rounds of section 2 (best kept)"""


def main() -> None:
    options = tyro.cli(Options, description=__doc__)
    cleanrl_command = command_from_option(options.cleanrl)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start",
          flush=True)
    report = {}
    if "floor" in options.parts:
        floor = report["floor"] = section_floor()
        print(f"\n1. floor, CPU ms on one thread: env step {floor['env_step_ms']:.2f}, batch-1 action forward "
              f"{floor['act_forward_ms']:.2f}, store {floor['store_ms']:.3f}, batch-32 update {floor['update_ms']:.1f} "
              f"(sampling {floor['sample_ms']:.2f} of it)\n   floor: {floor['floor_ms_per_step']:.2f} ms per env step "
              f"= {floor['floor_sps']:.0f} steps/s (wall clock, this load: env {floor['wall']['env_step_ms']:.2f}, "
              f"act {floor['wall']['act_forward_ms']:.2f}, update {floor['wall']['update_ms']:.1f} ms)", flush=True)
    if "main" in options.parts:
        contenders = {f"dqn_atari.main() --num-envs {n}": (lambda n=n: section_main(n, *options.steps))
                      for n in options.num_envs}
        if cleanrl_command is not None:
            contenders["CleanRL dqn_atari.py (subprocess)"] = lambda: section_main(
                1, *options.steps, timed=lambda total_timesteps: timed_cleanrl(cleanrl_command, total_timesteps))
        best: dict[str, dict] = {}
        for _ in range(options.main_rounds):
            for name, run in contenders.items():
                result, old = run() | {"name": name}, best.get(name)
                best[name] = result if old is None else result | {key: max(result[key], old[key])
                                                                  for key in ("sps_cpu", "sps_wall")}
        report["main"] = list(best.values())
        reference = best.get("CleanRL dqn_atari.py (subprocess)")
        for name, result in best.items():
            versus = (f", {result['sps_cpu'] / report['floor']['floor_sps']:.2f} x the 1-env floor"
                      if "floor" in report else "")
            if reference is not None:
                versus += (f", {result['sps_cpu'] / reference['sps_cpu']:.2f} x CleanRL by CPU time "
                           f"({result['sps_wall'] / reference['sps_wall']:.2f} x by wall time)")
            print(f"\n2. {name}, learning phase: {result['sps_cpu']:.0f} steps per CPU-second{versus} "
                  f"({result['sps_wall']:.0f} per wall-clock second at this load)", flush=True)
    if "options" in options.parts:
        report["options"] = section_options(options.rounds, options.compile, options.slow)
        print("\n3. update cost (batch 32, sampling included), median of interleaved rounds")
        print(f"   {'variant':36s} {'CPU ms':>8} {'wall ms':>8} {'CPU/plain':>9} {'wall/plain':>10} {'1st call s':>10}")
        for row in report["options"]:
            print(f"   {row['variant']:36s} {row['cpu_ms']:8.1f} {row['wall_ms']:8.1f} {row['cpu_vs_plain']:9.2f} "
                  f"{row['wall_vs_plain']:10.2f} {row['first_call_s']:10.1f}", flush=True)
    if "memory" in options.parts:
        memory = report["memory"] = section_memory(options.replay_transitions)
        print(f"\n4. replay of {memory['frame_slots']:,} frames holding {memory['transitions_held']:,} real Pong "
              f"transitions: {memory['replay_bytes'] / 1e9:.3f} GB = {memory['bytes_per_transition']:.0f} bytes per "
              f"transition; peak RSS {memory['peak_rss_mb']:.0f} MB (the process before the replay: "
              f"{memory['baseline_rss_mb']:.0f} MB)")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
