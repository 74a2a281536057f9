"""Prioritized replay on a full 1M-transition buffer: sample a batch of 32 and update its priorities, with
double_dueling_per_dqn.py's sum-tree next to the naive way that tutorials write it, measured in one run.

    python benchmarks/per_sampling.py                      # about a minute on a 2-core CPU
    python benchmarks/per_sampling.py --capacity 100000 --rounds 5

One operation: draw 32 indices in proportion to p_i^alpha, their weights (N * P(i))^-beta / max, and write 32 new
priorities. Ours: `PrioritizedSampler`, a sum-tree walked level by level for the whole batch in NumPy (stratified, as
Schaul et al. 2016, Appendix B.2.1), O(log N); naive: P = p^alpha / sum(p^alpha) recomputed every step, then
`np.random.choice(N, 32, p=P)`, O(N). Alternating rounds; per method the median over rounds of the mean CPU (robust on
a busy machine) and wall time per operation; the ratio printed is of the CPU times.
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import tyro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.timing import per_call  # noqa: E402
from double_dueling_per_dqn import PrioritizedSampler  # noqa: E402

ALPHA, BETA, EPSILON = 0.6, 0.4, 1e-6


@dataclass
class Options:
    capacity: int = 1_000_000
    """transitions in the (full) buffer"""
    batch_size: int = 32
    """transitions sampled per operation"""
    rounds: int = 5
    """alternating timing rounds per method"""
    ours_repeats: int = 2000
    """operations per round, ours"""
    naive_repeats: int = 20
    """operations per round, naive"""


def main() -> None:
    options = tyro.cli(Options, description=__doc__.split("\n\n")[0])
    n, batch_size = options.capacity, options.batch_size
    rng = np.random.default_rng(0)
    td_errors = rng.exponential(1.0, size=n)  # a full buffer of transitions with varied priorities

    sampler = PrioritizedSampler(n, ALPHA, EPSILON)
    sampler.update(np.arange(n), td_errors)

    def ours() -> None:
        indices, weights = sampler.sample(batch_size, rng, BETA, n)
        sampler.update(indices, rng.exponential(1.0, size=batch_size))

    priorities = np.abs(td_errors) + EPSILON  # the naive replay keeps p_i = |delta_i| + epsilon in a flat array
    np.random.seed(0)

    def naive() -> None:
        scaled = priorities ** ALPHA
        probabilities = scaled / scaled.sum()
        indices = np.random.choice(n, batch_size, p=probabilities)
        weights = (n * probabilities[indices]) ** -BETA
        weights /= weights.max()
        priorities[indices] = np.abs(rng.exponential(1.0, size=batch_size)) + EPSILON

    contenders = {"ours (sum-tree)": (ours, options.ours_repeats),
                  "naive (np.random.choice)": (naive, options.naive_repeats)}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for round_index in range(options.rounds):
        for name, (operation, repeats) in contenders.items():
            results[name].append(per_call(operation, repeats, repeats=1, warmup=0))
        print(f"round {round_index + 1}/{options.rounds}: " + ", ".join(
            f"{name} {runs[-1][0] * 1e6:,.0f} us" for name, runs in results.items()), flush=True)
    print(f"\nsample {batch_size} + update their priorities, full buffer of {n:,} transitions "
          f"(median over {options.rounds} rounds):")
    medians = {name: (float(np.median([c for c, _ in runs])), float(np.median([w for _, w in runs])))
               for name, runs in results.items()}
    for name, (cpu, wall) in medians.items():
        print(f"  {name:<26s} {cpu * 1e6:10,.1f} us CPU   {wall * 1e6:10,.1f} us wall per operation")
    (ours_cpu, ours_wall), (naive_cpu, naive_wall) = medians.values()
    print(f"  ours is {naive_cpu / ours_cpu:,.0f}x faster in CPU time ({naive_wall / ours_wall:,.0f}x in wall time)")


if __name__ == "__main__":
    main()
