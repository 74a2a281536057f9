"""Learning curves and a results table from the runs of a benchmark (see benchmarks/run.py).

    python benchmarks/plot.py                      # benchmarks/runs -> benchmarks/runs/benchmark.{png,svg,md}
    python benchmarks/plot.py --runs-dir benchmarks/runs --out-dir docs/benchmarks --band minmax --smooth 20

Reads every run directory under --runs-dir (args.json, metrics.csv, summary.json). One column per env, return against
env steps (top) and wall time (bottom); one line per exp name: the mean over seeds of each seed's curve smoothed over
its last --smooth episodes, with a band of ±1 std (--band minmax: min to max; --band iqm: the interquartile mean and
its 95% stratified-bootstrap interval). Published values are labelled horizontal lines (sources: REFERENCES).
The table gives per script and env the final evaluation (each seed's summary.json `eval_mean`) as the IQM over seeds
with its 95% interval (Agarwal et al. 2021, rliable) and as mean ± std, each seed's, env steps, wall time, and the env
steps to the first evaluation at the env's "solved" threshold. Only finished runs count; --include-unfinished adds the
others, marked "partial", with the last evaluation in their metrics.csv.
"""

import json
import math
import sys
import textwrap
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from script_runs import REPO_ROOT, RunDir, ScriptError, check_writable, cli, find_runs  # noqa: E402


@dataclass(frozen=True)
class Reference:
    value: float
    std: Optional[float]
    label: str
    source: str


GYMNASIUM = "gymnasium 1.4.0 env spec `reward_threshold` (the return at which the env counts as solved)"
CLEANRL = "CleanRL DQN docs, https://docs.cleanrl.dev/rl-algorithms/dqn/ (mean ± std over seeds)"
ZOO = ("rl-baselines3-zoo benchmark.md, https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md "
       "(one trained agent; ± is the std over its evaluation episodes, not over seeds)")
MNIH = ("Mnih et al. 2015, Nature 518, Extended Data Table 2, 50M steps (200M frames), as quoted in the CleanRL "
        "DQN docs; their evaluation protocol (up to 30 no-op starts, epsilon 0.05) differs from ours")

# Published figures only; an env missing here gets no reference line. Keyed by the exact env id: the Atari figures
# were measured on the NoFrameskip-v4 games, not on ALE/*-v5 (sticky actions, frame skip 4 built in).
REFERENCES: dict[str, list[Reference]] = {
    "CartPole-v1": [Reference(475, None, "solved threshold", GYMNASIUM),
                    Reference(488.69, 16.11, "CleanRL dqn.py, 500k steps", CLEANRL),
                    Reference(500.0, 0.0, "SB3 zoo DQN, 50k steps", ZOO)],
    "Acrobot-v1": [Reference(-100, None, "solved threshold", GYMNASIUM),
                   Reference(-91.54, 7.20, "CleanRL dqn.py, 500k steps", CLEANRL),
                   Reference(-76.639, 11.752, "SB3 zoo DQN, 100k steps", ZOO)],
    "MountainCar-v0": [Reference(-110, None, "solved threshold", GYMNASIUM),
                       Reference(-194.95, 8.48, "CleanRL dqn.py, 500k steps", CLEANRL),
                       Reference(-100.849, 9.925, "SB3 zoo DQN, 120k steps", ZOO)],
    "LunarLander-v3": [Reference(200, None, "solved threshold", GYMNASIUM),
                       Reference(154.382, 79.241, "SB3 zoo DQN on LunarLander-v2, 100k steps", ZOO)],
    "PongNoFrameskip-v4": [Reference(20.25, 0.41, "CleanRL dqn_atari.py, 10M steps", CLEANRL),
                           Reference(20.602, 0.613, "SB3 zoo DQN, 10M steps", ZOO),
                           Reference(18.9, 1.3, "Mnih et al. 2015, 50M steps", MNIH)],
    "BreakoutNoFrameskip-v4": [Reference(366.928, 39.89, "CleanRL dqn_atari.py, 10M steps", CLEANRL),
                               Reference(358.327, 61.981, "SB3 zoo DQN, 10M steps", ZOO),
                               Reference(401.2, 26.9, "Mnih et al. 2015, 50M steps", MNIH)],
    "BeamRiderNoFrameskip-v4": [Reference(6673.24, 1434.37, "CleanRL dqn_atari.py, 10M steps", CLEANRL),
                                Reference(4295.946, 1790.458, "SB3 zoo DQN, 10M steps", ZOO),
                                Reference(6846, 1619, "Mnih et al. 2015, 50M steps", MNIH)],
    "AsteroidsNoFrameskip-v4": [Reference(782.687, 259.247, "SB3 zoo DQN, 10M steps", ZOO)],
    "EnduroNoFrameskip-v4": [Reference(830.929, 194.544, "SB3 zoo DQN, 10M steps", ZOO)],
    "QbertNoFrameskip-v4": [Reference(9496.774, 5399.633, "SB3 zoo DQN, 10M steps", ZOO)],
    "RoadRunnerNoFrameskip-v4": [Reference(40396.350, 7069.131, "SB3 zoo DQN, 10M steps", ZOO)],
    "SeaquestNoFrameskip-v4": [Reference(2000.290, 606.644, "SB3 zoo DQN, 10M steps", ZOO)],
    "SpaceInvadersNoFrameskip-v4": [Reference(622.742, 201.564, "SB3 zoo DQN, 10M steps", ZOO)],
}


@dataclass
class Run(RunDir):
    metrics: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, 3] rows (global_step, wall_time, value)

    @property
    def script(self) -> str:
        """The script's stem: in summary.json, else (a run still going) in checkpoint.pt, else the exp name."""
        if self.summary or not (self.path / "checkpoint.pt").is_file():
            return (self.summary or {}).get("script") or self.args["exp_name"]
        import torch  # only here: plotting finished runs needs no torch

        try:  # memory-mapped: only the little that is read comes off the disk
            return torch.load(self.path / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True)["script"]
        except Exception:  # not loadable (being written, or foreign): the exp name, as before
            return self.args["exp_name"]


@dataclass
class Group:
    """The runs of one exp name on one env, one per seed."""
    exp_name: str
    env_id: str
    runs: list[Run]

    @property
    def partial(self) -> bool:
        return not all(run.finished for run in self.runs)

    def differing_settings(self) -> list[str]:
        """args.json fields that differ between the seeds, other than those that do not change the results."""
        ignored = {"seed", "runs_dir", "resume", "eval_checkpoint", "track", "wandb_project_name", "wandb_entity",
                   "capture_video", "save_model", "cuda"}
        keys = sorted(set().union(*(run.args.keys() for run in self.runs)) - ignored)
        return [key for key in keys if len({json.dumps(run.args.get(key)) for run in self.runs}) > 1]

    @property
    def label(self) -> str:
        script = self.runs[0].script
        name = f"{script}.py" if self.exp_name == script else f"{script}.py ({self.exp_name})"
        return name + (" [partial]" if self.partial else "")


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """{name: [N, 3] rows (global_step, wall_time, value)}; a last row cut short by a crash is dropped."""
    try:
        frame = pd.read_csv(path, on_bad_lines="skip", dtype=str)
    except pd.errors.EmptyDataError:
        return {}
    numbers = frame[["global_step", "wall_time", "value"]].apply(pd.to_numeric, errors="coerce")
    frame = numbers.assign(name=frame["name"]).dropna()
    return {name: rows[["global_step", "wall_time", "value"]].to_numpy(float) for name, rows in frame.groupby("name")}


def load_runs(runs_dirs: list[Path]) -> list[Run]:
    """Every directory below runs_dirs with an args.json and a metrics.csv (the runner's _logs/ has neither)."""
    paths = [path.parent for runs_dir in runs_dirs for path in sorted(runs_dir.rglob("args.json"))
             if (path.parent / "metrics.csv").is_file()]
    return [Run(run.path, run.args, run.summary) for run in find_runs(paths)]


def group_runs(runs: list[Run], include_unfinished: bool) -> list[Group]:
    """One run per (exp name, env, seed): the newest finished one, else (with include_unfinished) the newest."""
    by_seed: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for run in runs:
        if run.finished or include_unfinished:
            by_seed[(run.args["exp_name"], run.args["env_id"], int(run.args["seed"]))].append(run)
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for (exp_name, env_id, seed), found in sorted(by_seed.items()):
        found.sort(key=lambda run: (run.finished, run.started_at))
        if len(found) > 1:
            print(f"note: {len(found)} runs of {exp_name} {env_id} seed {seed}; using {found[-1].path}",
                  file=sys.stderr)
        groups[(exp_name, env_id)].append(found[-1])
    for group_runs_ in groups.values():
        for run in group_runs_:
            run.metrics = read_metrics(run.path / "metrics.csv")
    return [Group(exp_name, env_id, found) for (exp_name, env_id), found in groups.items()]


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at each position (fewer at the start)."""
    return pd.Series(values, dtype=float).rolling(window, min_periods=1).mean().to_numpy()


def bootstrap(score_dict: dict, func, reps: int) -> tuple[dict, dict]:
    """rliable's get_interval_estimates (95% stratified-bootstrap intervals, Agarwal et al. 2021) with the bootstrap's
    seed fixed, so that a table repeats: rliable 1.2 resamples with numpy's global generator (not its random_state
    argument), whose state is put back afterwards."""
    from rliable import library as rly  # imported only here: it takes seconds to import

    saved_state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # one seed: an interval of zero width
            return rly.get_interval_estimates(score_dict, func, reps=reps)
    finally:
        np.random.set_state(saved_state)


def iqm_and_interval(scores: np.ndarray, reps: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interquartile mean over seeds (axis 0) of `scores` [seeds, points], and its 95% stratified-bootstrap
    confidence interval at each point (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice", with
    their rliable; one task, so the IQM of a point is rliable's aggregate_iqm of its column)."""

    def iqm(x: np.ndarray) -> np.ndarray:  # [seeds, 1 task, points] -> [points]
        return scipy.stats.trim_mean(x[:, 0], proportiontocut=0.25, axis=0)

    point, interval = bootstrap({"runs": scores[:, None, :]}, iqm, reps)
    return point["runs"], interval["runs"][0], interval["runs"][1]


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000) -> tuple[float, float, float]:
    """P(X > Y): the probability that a seed's score in `x` [seeds] beats one in `y` [seeds], ties counting a half
    (the Mann-Whitney U statistic over all pairs; Agarwal et al. 2021's probability of improvement, one task), with
    its 95% bootstrap interval: (point, low, high)."""
    from rliable import metrics

    point, interval = bootstrap({"pair": [x[:, None], y[:, None]]}, metrics.probability_of_improvement, reps)
    low, high = np.ravel(interval["pair"])  # [2, 1] for one task
    return float(point["pair"]), float(low), float(high)


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]], band: str, points: int = 300):
    """Seeds' (x, y) curves -> (grid, center, low, high) up to where the shortest seed ends, None if nothing to draw.
    band "std" and "minmax": the mean, with ±1 std or the min and max; "iqm": the IQM and its 95% interval, from
    where every seed has a value."""
    curves = [(x, y) for x, y in curves if len(x) > 0]
    if not curves:
        return None
    end = min(x[-1] for x, _ in curves)
    start = (max if band == "iqm" else min)(x[0] for x, _ in curves)
    if end <= start:
        return None
    grid = np.linspace(start, end, points if band != "iqm" else min(points, 100))  # 100: the bootstrap's cost
    stacked = np.array([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in curves])  # [seeds, points]
    if band == "iqm":
        return (grid, *iqm_and_interval(stacked, reps=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # grid points before a seed's first episode: NaN
        mean = np.nanmean(stacked, axis=0)
        if band == "std":
            spread = np.nanstd(stacked, axis=0)
            low, high = mean - spread, mean + spread
        else:
            low, high = np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
    return grid, mean, low, high


def seed_curves(group: Group, metric: str, smooth: int, axis: str) -> list[tuple[np.ndarray, np.ndarray]]:
    curves = []
    for run in group.runs:
        rows = run.metrics.get(metric)
        if rows is None or len(rows) == 0:
            continue
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        x = rows[:, 0] if axis == "steps" else rows[:, 1] - run.started_at
        order = np.argsort(x, kind="stable")
        curves.append((x[order], trailing_mean(rows[order, 2], smooth)))
    return curves


def time_unit(seconds: float) -> tuple[str, float]:
    if seconds < 300:
        return "s", 1.0
    if seconds < 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def format_value(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 1e4 else f"{value:,.0f}"


def reference_text(reference: Reference) -> str:
    spread = f" ± {format_value(reference.std)}" if reference.std is not None else ""
    return f"{format_value(reference.value)}{spread} {reference.label}"


def plot(groups: list[Group], envs: list[str], metric: str, smooth: int, band: str, out_base: Path) -> list[Path]:
    exp_names = sorted({group.exp_name for group in groups})
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(exp_names)}
    columns = len(envs)
    width = max(5.2 * columns + 0.8, 8.0)
    figure = plt.figure(figsize=(width, 10.0))
    # rows: curves against steps, curves against wall time, and under each column the legend of its references
    grid_spec = figure.add_gridspec(3, columns, height_ratios=[1, 1, 0.28], hspace=0.42, wspace=0.25,
                                    left=0.8 / width, right=1 - 0.25 / width, top=0.86, bottom=0.02)
    reference_styles = ["--", ":", "-."]
    for column, env_id in enumerate(envs):
        env_groups = [group for group in groups if group.env_id == env_id]
        for row, axis in enumerate(["steps", "wall"]):
            ax = figure.add_subplot(grid_spec[row, column])
            drawn = [(group, aggregate(seed_curves(group, metric, smooth, axis), band)) for group in env_groups]
            drawn = [(group, curve) for group, curve in drawn if curve is not None]
            unit, divisor = "", 1.0
            if axis == "wall":
                unit, divisor = time_unit(max((curve[0][-1] for _, curve in drawn), default=0.0))
            for group, (grid, mean, low, high) in drawn:
                x = grid / divisor
                ax.plot(x, mean, color=colors[group.exp_name], linewidth=1.6,
                        linestyle="--" if group.partial else "-")
                ax.fill_between(x, low, high, color=colors[group.exp_name], alpha=0.2, linewidth=0)
            for style, reference in zip(reference_styles, REFERENCES.get(env_id, [])):
                ax.axhline(reference.value, color="0.3", linestyle=style, linewidth=1.0,
                           label=reference_text(reference))
            if not drawn:
                ax.text(0.5, 0.5, f"no {metric} logged", transform=ax.transAxes, ha="center", va="center",
                        color="0.5")
            if axis == "steps":
                ax.set_title(env_id, fontsize=12, fontweight="bold")
                ax.set_xlabel("env steps")
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            else:
                resumed = any(run.args.get("resume") for group, _ in drawn for run in group.runs)
                note = "\n(with the pause of the seeds that were resumed from a checkpoint)" if resumed else ""
                ax.set_xlabel(f"wall time since the run started ({unit}){note}")
            if column == 0:
                ax.set_ylabel("episodic return" if metric.endswith("episodic_return") else metric)
            ax.grid(alpha=0.3)
            ax.set_xlim(left=0)
        legend_ax = figure.add_subplot(grid_spec[2, column])
        legend_ax.axis("off")
        handles = [plt.Line2D([], [], color="0.3", linestyle=style, linewidth=1.0, label=reference_text(reference))
                   for style, reference in zip(reference_styles, REFERENCES.get(env_id, []))]
        if handles:
            legend_ax.legend(handles=handles, loc="upper center", fontsize=8.5, title=f"published, {env_id}",
                             title_fontsize=8.5, frameon=False)
    handles = []
    for name in exp_names:
        named = [group for group in groups if group.exp_name == name]
        seeds = sorted({len(group.runs) for group in named})
        seeds_text = "/".join(map(str, seeds)) + (" seed" if seeds == [1] else " seeds")
        handles.append(plt.Line2D([], [], color=colors[name], linewidth=2,
                                  linestyle="--" if named[0].partial else "-",
                                  label=f"{named[0].label} ({seeds_text})"))
    band_text = {"std": "±1 std over seeds", "minmax": "min to max over seeds",
                 "iqm": "95% stratified-bootstrap interval"}[band]
    what = {"charts/episodic_return": "Return of training episodes (ε-greedy)",
            "eval/episodic_return": "Evaluation return (mean of each evaluation)"}.get(metric, metric)
    unit_text = "episodes" if metric == "charts/episodic_return" else "values"
    smoothing = f"each seed smoothed as the mean of its last {smooth} {unit_text}" if smooth > 1 else "not smoothed"
    title = f"{what}. Line: {'IQM' if band == 'iqm' else 'mean'} over seeds; band: {band_text}; {smoothing}."
    figure.suptitle(textwrap.fill(title, width=int(width * 11)), fontsize=11, y=0.985)
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.945), ncol=min(len(handles), 4),
                  fontsize=10, frameon=False)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".svg")]
    figure.savefig(paths[0], dpi=130)
    figure.savefig(paths[1])
    plt.close(figure)
    return paths


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def final_values(run: Run) -> tuple[Optional[float], int, float]:
    """(final evaluation mean, env steps, wall time in s) of a run: its summary's, or for an unfinished run the last
    evaluation and the last row in its metrics.csv."""
    if run.finished:
        return run.summary["eval_mean"], int(run.summary["global_step"]), float(run.summary["wall_time_s"])
    evals = run.metrics.get("eval/episodic_return")
    last = max((rows[-1, :2] for rows in run.metrics.values() if len(rows)), key=lambda r: r[0], default=None)
    steps = int(last[0]) if last is not None else 0
    wall = float(last[1] - run.started_at) if last is not None else 0.0
    return (float(evals[-1, 2]) if evals is not None and len(evals) else None), steps, wall


def solved_threshold(env_id: str) -> Optional[float]:
    """The env's "solved" return from REFERENCES (gymnasium's reward threshold), or None."""
    return next((reference.value for reference in REFERENCES.get(env_id, [])
                 if reference.label == "solved threshold"), None)


def first_step_reaching(run: Run, threshold: float) -> Optional[int]:
    """Env steps at the run's first evaluation whose mean reaches `threshold` (None: no evaluation did)."""
    evals = run.metrics.get("eval/episodic_return")
    if evals is None:
        return None
    reached = evals[evals[:, 2] >= threshold]
    return int(reached[:, 0].min()) if len(reached) else None


def steps_to_threshold_text(runs: list[Run], threshold: Optional[float]) -> str:
    """"median (s1: steps, s2: ...)" of the steps to the first evaluation at or above `threshold`; a seed that never
    got there counts as infinitely many steps ("never")."""
    if threshold is None:
        return "-"
    steps = [first_step_reaching(run, threshold) for run in runs]
    median = float(np.median([math.inf if step is None else step for step in steps]))
    per_seed = ", ".join(f"s{run.args['seed']}: " + (f"{step:,}" if step is not None else "never")
                         for run, step in zip(runs, steps))
    return f"{median:,.0f} ({per_seed})" if math.isfinite(median) else f"never ({per_seed})"


def table(groups: list[Group], envs: list[str]) -> str:
    lines = ["| script | env | seeds | final eval return: IQM [95% CI] | mean ± std | per seed | env steps | "
             "wall time per run | env steps to the first eval ≥ solved: median (per seed) | published |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    resumed = False
    for env_id in envs:
        for group in sorted((g for g in groups if g.env_id == env_id), key=lambda g: g.exp_name):
            values = [(run, *final_values(run)) for run in sorted(group.runs, key=lambda r: int(r.args["seed"]))]
            evals = [value for _, value, _, _ in values if value is not None]
            result = f"{np.mean(evals):.2f} ± {np.std(evals):.2f}" if evals else "-"
            iqm = "-"
            if evals:
                center, low, high = (float(value[0]) for value in iqm_and_interval(np.array(evals)[:, None]))
                iqm = f"{center:.2f} [{low:.2f}, {high:.2f}]"
            per_seed = ", ".join(f"s{run.args['seed']}: " + (f"{value:.2f}" if value is not None else "-")
                                 for run, value, _, _ in values)
            steps = sorted({steps for _, _, steps, _ in values})
            steps_text = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"
            wall = format_seconds(float(np.mean([wall for _, _, _, wall in values])))
            if any(run.args.get("resume") for run, *_ in values):
                resumed, wall = True, wall + " †"
            published = "; ".join(reference_text(reference) for reference in REFERENCES.get(env_id, []))
            to_solved = steps_to_threshold_text([run for run, *_ in values], solved_threshold(env_id))
            lines.append(f"| {group.label} | {env_id} | {len(values)} | {iqm} | {result} | {per_seed} | {steps_text} | "
                         f"{wall} | {to_solved} | {published or '-'} |")
    notes = ["", "Final eval return: each seed's `eval_mean` in summary.json, the mean return of the final greedy "
             "evaluation. IQM: the interquartile mean over seeds (the mean of the middle 50%; with 3 seeds, the plain "
             "mean), with its 95% stratified-bootstrap confidence interval (Agarwal et al. 2021, rliable, 2,000 "
             "resamples of the seeds); ± is the standard deviation over seeds (numpy `std`, ddof=0). Wall time: "
             "mean over seeds of `wall_time_s`, each run on one CPU thread, several at a time. Env steps to the "
             "first eval ≥ solved: "
             "the step of each seed's first evaluation whose mean reached the env's solved threshold (below), "
             "and the median over seeds, a seed that never reached it counting as more than any other."]
    if any(group.partial for group in groups):
        notes.append("[partial]: at least one seed has not finished; its value is the last evaluation logged in "
                     "metrics.csv, at the step count shown.")
    for group in groups:
        if group.differing_settings():
            notes.append(f"Warning: the seeds of {group.label} on {group.env_id} were run with different settings: "
                         + ", ".join(group.differing_settings()) + " (see their args.json).")
    if resumed:
        notes.append("†: at least one seed was resumed from a checkpoint; summary.json's wall time counts only the "
                     "part after the last resume.")
    sources = sorted({reference.source for env_id in envs for reference in REFERENCES.get(env_id, [])})
    if sources:
        notes.append("Published values: " + " ".join(f"({i}) {source}." for i, source in enumerate(sources, 1)))
    return "\n".join(lines + notes) + "\n"


@dataclass
class Args:
    runs_dir: tuple[str, ...] = (str(REPO_ROOT / "benchmarks" / "runs"),)
    """folders holding the run directories, searched recursively"""
    out_dir: Optional[str] = None
    """where to write NAME.png, NAME.svg and NAME.md (None: the first --runs-dir)"""
    name: str = "benchmark"
    """file name of the outputs"""
    envs: tuple[str, ...] = ()
    """envs to show, in this order (none given: all, sorted)"""
    exp_names: tuple[str, ...] = ()
    """exp names (scripts' stems by default) to show (none given: all)"""
    metric: str = "charts/episodic_return"
    """metric to draw (also eval/episodic_return)"""
    smooth: int = 10
    """each seed's curve is the mean of its last SMOOTH values (episodes)"""
    band: Literal["std", "minmax", "iqm"] = "std"
    """line and band: the mean with ±1 standard deviation (std) or min to max (minmax) over seeds, or the
    interquartile mean with its 95% stratified-bootstrap interval (iqm)"""
    include_unfinished: bool = False
    """also draw and tabulate runs that have not finished, marked partial"""


def main(argv: list[str]) -> int:
    try:
        args = cli(Args, argv, "benchmarks/plot.py", __doc__)
        runs_dirs = [Path(path) for path in args.runs_dir]
        if args.smooth < 1:
            raise ScriptError(f"--smooth must be >= 1 (got {args.smooth})")
        if missing := [str(path) for path in runs_dirs if not path.is_dir()]:
            raise ScriptError(f"no such folder: {', '.join(missing)}")
        if Path(args.name).name != args.name or args.name in ("", "..") or "\\" in args.name:
            raise ScriptError(f"--name must be a file name (got {args.name!r})")
        check_writable(Path(args.out_dir or runs_dirs[0]), "--out-dir")  # before the runs are read
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    groups = group_runs(load_runs(runs_dirs), args.include_unfinished)
    if args.envs:
        groups = [group for group in groups if group.env_id in args.envs]
    if args.exp_names:
        groups = [group for group in groups if group.exp_name in args.exp_names]
    if not groups:
        hint = "" if args.include_unfinished else " (unfinished runs are left out unless --include-unfinished)"
        print(f"error: no runs to show under {', '.join(map(str, runs_dirs))}{hint}", file=sys.stderr)
        return 1
    envs = [env for env in args.envs if any(g.env_id == env for g in groups)] if args.envs else \
        sorted({group.env_id for group in groups})
    out_base = Path(args.out_dir or runs_dirs[0]) / args.name
    images = plot(groups, envs, args.metric, args.smooth, args.band, out_base)
    markdown = table(groups, envs)
    out_base.with_suffix(".md").write_text(markdown)
    print(markdown)
    print("wrote " + ", ".join(str(path) for path in [*images, out_base.with_suffix(".md")]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
