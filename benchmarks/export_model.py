"""A trained network to ship: the Q-network of a checkpoint and the settings `--eval-checkpoint` needs, nothing else.

    python benchmarks/export_model.py RUN_DIR/checkpoint.pt models/dqn_atari_PongNoFrameskip-v4.pt
    python dqn_atari.py --env-id PongNoFrameskip-v4 --eval-checkpoint models/dqn_atari_PongNoFrameskip-v4.pt \
        --eval-episodes 20

Kept: the script and env it came from, its settings (less the ones naming folders of the machine that trained it, and
the ones that write: tracking, videos, the replay), its step count, its best evaluation and the Q-network's weights.
Dropped: the target network, the optimizer's moments, the random states and the replay. For the Nature CNN that is
6.7 MB instead of 20 MB (and 70 MB to 7 GB of replay). The output is written whole or not at all.
"""

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import torch
import tyro

from script_runs import ScriptError, output_file, read_checkpoint, write_whole

RESET = dict(runs_dir="runs", resume=None, eval_checkpoint=None, track=False, capture_video=False, save_replay=False,
             wandb_entity=None)  # the run options that name this machine's folders or write files: their defaults


@dataclasses.dataclass
class Args:
    checkpoint: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="CHECKPOINT")]]
    """a checkpoint.pt or best.pt of a run (or the run directory: its checkpoint.pt)"""
    output: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="OUTPUT")]]
    """the file to write, e.g. models/dqn_atari_PongNoFrameskip-v4.pt"""


def exported(checkpoint: dict) -> dict:
    """The parts of a checkpoint that evaluating its Q-network needs."""
    run_args = checkpoint["run_args"] | {name: value for name, value in RESET.items() if name in checkpoint["run_args"]}
    return {"script": checkpoint["script"], "env_id": checkpoint["env_id"], "args": checkpoint["args"],
            "run_args": run_args, "global_step": checkpoint["global_step"],
            "best_eval_mean": checkpoint.get("best_eval_mean"),
            "state": {"q_network": checkpoint["state"]["q_network"]}}


def main(argv=None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    try:
        source, checkpoint = read_checkpoint(args.checkpoint)
        try:
            model = exported(checkpoint)
        except (KeyError, TypeError, AttributeError) as error:
            why = f"{type(error).__name__}: {error}"
            raise ScriptError(f"{source} is not a checkpoint of these scripts ({why})"[:300]) from None
        output = output_file(args.output, "OUTPUT")
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as file:  # a Python file: a full disk is an OSError that says so
            torch.save(model, file)

    try:
        write_whole(output, save)
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{output}: the Q-network of {model['script']}.py on {model['env_id']} at step {model['global_step']:,} "
          f"({output.stat().st_size / 1e6:.1f} MB); evaluate it with\n  python {model['script']}.py --eval-checkpoint "
          f"{output} --eval-episodes 20")
    return 0


if __name__ == "__main__":
    sys.exit(main())
