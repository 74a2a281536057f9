"""The final network of every finished run, evaluated again over many episodes, and a table over the seeds.

    python benchmarks/final_eval.py --script dqn_lunar.py --episodes 100                  # benchmarks/runs
    python benchmarks/final_eval.py --script double_dueling_per_dqn.py --runs-dir /tmp/runs --exp-name ddp-tag
    python benchmarks/final_eval.py --script double_dueling_per_dqn.py --exp-name double_dueling_per_dqn \
        double_dueling_per_dqn-no-double double_dueling_per_dqn-no-dueling       # an ablation: each against the first

A run's final network is its checkpoint.pt once the run has finished (the scripts save it at the last evaluation,
which is at the last step): not best.pt, which a lucky evaluation picked. Each is evaluated by the script itself,
`SCRIPT --eval-checkpoint RUN/checkpoint.pt --eval-episodes N` (in this process; greedy unless the run's
--eval-epsilon says otherwise, on the script's evaluation seeds), and its returns are kept in RUN/final_eval_N.json,
so that running this again only evaluates new runs. The table gives each seed's mean return, their IQM with its 95%
stratified-bootstrap interval (Agarwal et al. 2021), mean ± std, the worst seed, how many seeds reached a threshold,
and the wall time of the training runs. Given several exp names (a baseline first, then its variants on the same
seeds), it also prints each seed's mean return under every one of them, and a row per exp name with the probability
that one of its seeds beats one of the baseline's (Agarwal et al. 2021's probability of improvement) and its interval.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plot import iqm_and_interval, probability_of_improvement
from script_runs import REPO_ROOT, ScriptError, cli, find_script, load_script, read_json


def finished_runs(runs_dir: Path, exp_name: str) -> list[Path]:
    """Run directories of `exp_name` whose summary.json says finished and which have a checkpoint.pt, by seed."""
    found = []
    for path in sorted(runs_dir.glob(f"*__{exp_name}__*")):
        summary = read_json(path / "summary.json") or {}
        if summary.get("status") == "finished" and (path / "checkpoint.pt").is_file():
            found.append((summary["seed"], path))
    return [path for _, path in sorted(found)]


def evaluate(script, run_dir: Path, episodes: int) -> dict:
    """The run's final network over `episodes` episodes: {"seed", "returns", "global_step", "wall_time_s"}."""
    saved = run_dir / f"final_eval_{episodes}.json"
    if isinstance(result := read_json(saved), dict) and isinstance(result.get("returns"), list) and result["returns"]:
        return result  # (one without returns, as an interrupted evaluation once wrote, is done again)
    summary = read_json(run_dir / "summary.json")
    try:
        args, run_args = script.parse(["--eval-checkpoint", str(run_dir / "checkpoint.pt"), "--eval-episodes",
                                       str(episodes)])
        evaluation = script.module.main(args, run_args)
    except script.module.ConfigError as error:  # a checkpoint that the script cannot read or use
        raise ScriptError(str(error)) from None
    if evaluation["status"] == "interrupted":  # Ctrl-C or SIGTERM, which the script's main caught
        raise KeyboardInterrupt
    if evaluation["global_step"] != summary["global_step"]:
        raise ScriptError(f"{run_dir}/checkpoint.pt is from step {evaluation['global_step']:,}, not the run's last "
                          f"({summary['global_step']:,})")
    result = {"seed": summary["seed"], "returns": evaluation["eval_returns"], "global_step": summary["global_step"],
              "wall_time_s": summary["wall_time_s"]}
    try:
        saved.write_text(json.dumps(result) + "\n")
    except OSError as error:  # a read-only run directory: the result stands, it is only not kept
        print(f"warning: cannot keep the returns in {saved}: {error.strerror}", file=sys.stderr)
    return result


def over_seeds(results: list[dict]) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """(each seed's mean return [seeds], (IQM, low, high) over them, each run's training wall time in minutes)."""
    means = np.array([np.mean(result["returns"]) for result in results])
    iqm = tuple(float(value[0]) for value in iqm_and_interval(means[:, None]))
    return means, iqm, np.array([result["wall_time_s"] for result in results]) / 60


def table(results: list[dict], threshold: float) -> str:
    means, (iqm, low, high), minutes = over_seeds(results)
    lines = ["| seed | mean return | std | episodes | steps | training wall time |", "|---|---|---|---|---|---|"]
    lines += [f"| {result['seed']} | {mean:.1f} | {np.std(result['returns']):.1f} | {len(result['returns'])} | "
              f"{result['global_step']:,} | {result['wall_time_s'] / 60:.1f} min |"
              for result, mean in zip(results, means)]
    return "\n".join(lines) + (
        f"\n\n{len(results)} seeds: IQM {iqm:.1f} [{low:.1f}, {high:.1f}], "
        f"mean {means.mean():.1f} ± {means.std():.1f}, "
        f"worst seed {means.min():.1f} (seed {results[int(means.argmin())]['seed']}), {int((means >= threshold).sum())}"
        f" of {len(results)} seeds >= {threshold:g}; training wall time {minutes.mean():.1f} min a run "
        f"(max {minutes.max():.1f})")


def comparison(results: dict[str, list[dict]], threshold: float) -> str:
    """Each seed's mean return under every exp name of `results` ({exp name: results}, the baseline first), then one
    row per exp name: IQM [95% CI], mean ± std, worst seed, seeds >= threshold, P(better than the baseline) [95% CI]
    and the training wall time."""
    names = list(results)
    means = {name: {result["seed"]: float(np.mean(result["returns"])) for result in runs}
             for name, runs in results.items()}
    seeds = sorted(set().union(*means.values()))
    lines = ["| seed | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {seed} | " + " | ".join(f"{means[name][seed]:.1f}" if seed in means[name] else "" for name in names)
              + " |" for seed in seeds]
    lines += ["", f"| exp name | seeds | IQM [95% CI] | mean ± std | worst seed | seeds >= {threshold:g} | "
                  f"P(better than {names[0]}) [95% CI] | training wall time |", "|---" * 8 + "|"]
    baseline = over_seeds(results[names[0]])[0]
    for name in names:
        scores, (iqm, low, high), minutes = over_seeds(results[name])
        better = "" if name == names[0] else "{:.2f} [{:.2f}, {:.2f}]".format(
            *probability_of_improvement(scores, baseline))
        lines.append(f"| {name} | {len(scores)} | {iqm:.1f} [{low:.1f}, {high:.1f}] | {scores.mean():.1f} ± "
                     f"{scores.std():.1f} | {scores.min():.1f} | {int((scores >= threshold).sum())} | {better} | "
                     f"{minutes.mean():.1f} min |")
    return "\n".join(lines)


@dataclass
class Args:
    script: str
    """the script whose runs to evaluate (e.g. dqn_lunar.py)"""
    runs_dir: str = str(REPO_ROOT / "benchmarks" / "runs")
    """folder of the run directories"""
    exp_name: tuple[str, ...] = ()
    """the runs' exp name (none given: the script's stem; STEM-TAG for a --tag); several: a baseline, then variants
    compared with it"""
    episodes: int = 100
    """evaluation episodes per run"""
    threshold: float = 200.0
    """return that counts a seed as solved in the table (LunarLander's)"""


def main(argv: list[str]) -> int:
    try:
        args = cli(Args, argv, "benchmarks/final_eval.py", __doc__.split("\n\n")[0])
        if args.episodes < 1:
            raise ScriptError(f"--episodes must be >= 1 (got {args.episodes})")
        if (path := find_script(args.script)) is None:
            raise ScriptError(f"script not found: {args.script}")
        names = list(dict.fromkeys(args.exp_name or [path.stem]))
        runs = {name: finished_runs(Path(args.runs_dir), name) for name in names}
        if missing := [name for name in names if not runs[name]]:
            raise ScriptError(f"no finished run of {missing[0]} with a checkpoint.pt in {args.runs_dir}")
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        script = load_script(args.script, path)
        results = {name: [] for name in names}
        for name in names:
            for run_dir in runs[name]:
                results[name].append(evaluate(script, run_dir, args.episodes))
                print(f"seed {results[name][-1]['seed']}: {np.mean(results[name][-1]['returns']):.1f} over "
                      f"{args.episodes} episodes ({run_dir.name})", flush=True)
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the evaluations that finished are kept; the same command again does the rest",
              file=sys.stderr)
        return 130
    for name in names:
        print(("\n" + name if len(names) > 1 else "") + "\n" + table(results[name], args.threshold))
    if len(names) > 1:
        print("\n" + comparison(results, args.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
