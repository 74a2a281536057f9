"""A short animation of a trained network playing, for a README: one evaluation episode recorded, its start a GIF.

    python benchmarks/animate.py models/dqn_atari_PongNoFrameskip-v4.pt docs/pong.gif --seconds 20

The checkpoint's own script plays one episode (`SCRIPT --eval-checkpoint COPY --capture-video --eval-episodes 1`, on
a copy of the checkpoint in a temporary folder, so that nothing is written beside it); the first --seconds of its video
become a GIF of --fps frames a second, scaled by --scale, small enough for a README. The GIF is written whole or not
at all.
"""

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import tyro

from script_runs import ScriptError, output_file, read_checkpoint, write_whole

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Args:
    checkpoint: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="CHECKPOINT")]]
    """a checkpoint of any of the four scripts (checkpoint.pt, best.pt, or a file of models/)"""
    output: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="OUTPUT")]]
    """the GIF to write, e.g. docs/pong.gif"""
    seconds: float = 20.0
    """seconds of the episode to keep, from its start"""
    fps: int = 15
    """frames per second of the GIF (the video has the env's own rate: 60 for Atari)"""
    scale: float = 0.5
    """size of the GIF's frames relative to the env's (Atari: 160x210)"""


def main(argv=None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.seconds <= 0 or args.fps < 1 or not 0 < args.scale <= 1:
        print("error: --seconds must be > 0, --fps >= 1 and --scale in (0, 1]", file=sys.stderr)
        return 2
    try:
        source, checkpoint = read_checkpoint(args.checkpoint)
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("script"), str):
            raise ScriptError(f"{source} is not a checkpoint of these scripts (it names no script)")
        output = output_file(args.output, "OUTPUT")  # before the episode is played
    except ScriptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    script = checkpoint["script"]
    from moviepy import VideoFileClip  # the scripts' --capture-video needs moviepy already

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "checkpoint.pt"
        shutil.copy(source, copy)
        played = subprocess.run([sys.executable, str(REPO_ROOT / f"{script}.py"), "--eval-checkpoint", str(copy),
                                 "--capture-video", "--eval-episodes", "1"], capture_output=True, text=True)
        videos = sorted((Path(folder) / "videos").glob("*.mp4"))
        if played.returncode != 0 or not videos:
            print(f"error: {script}.py did not record an episode: {played.stderr.strip()[-300:]}", file=sys.stderr)
            return 1
        with VideoFileClip(str(videos[0])) as clip:
            seconds = min(args.seconds, clip.duration)
            try:
                write_whole(output, lambda temporary: clip.subclipped(0, seconds).resized(args.scale).write_gif(
                    str(temporary), fps=args.fps, logger=None))
            except ScriptError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
    print(f"{output}: {seconds:.1f} s of {script}.py playing, {output.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
