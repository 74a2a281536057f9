"""What the benchmark runner (run.py) and the tuner (tune.py) share: a training script loaded to read and check its
settings with its own parser, started as a subprocess, stopped, and followed through the metrics.csv it writes.

A script is only ever *run* for training; it is imported (never executed as __main__) to reach its `Args`, its
`RunArgs`, `parse_command_line` and its checks, so that a command line is understood exactly as the script would
understand it, defaults included.
"""

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
# the settings that differ between the runs of one benchmark, or that do not change what a run learns
UNCOMPARED_SETTINGS = {"env_id", "seed", "runs_dir", "exp_name", "resume", "eval_checkpoint", "track",
                       "wandb_project_name", "wandb_entity", "capture_video", "save_model", "save_replay",
                       "torch_threads"}


class ScriptError(Exception):
    """A script or a setting that cannot be used; reported as one line, without a traceback."""


def check_writable(folder: Path, what: str) -> None:
    """Try writing in `folder` (making it, then removing what was made), as the scripts' harness does: a ScriptError
    naming the folder and why (read-only file system, not a directory, permission denied), if it cannot be."""
    made = [path for path in [folder.absolute(), *folder.absolute().parents] if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        why = "it is a file, not a folder" if isinstance(error, FileExistsError) else error.strerror.lower()
        raise ScriptError(f"{what} {str(folder)!r} cannot be written: {why}") from None
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()


def output_file(given: str, what: str) -> Path:
    """The file `given` names, once its folder is known to take it: a ScriptError, before any work, if it names a
    folder or its folder cannot be written."""
    path = Path(given)
    if path.name in ("", "..") or path.is_dir():
        raise ScriptError(f"{what} {given!r} must name a file, not a folder")
    check_writable(path.parent, f"{what}'s folder")
    return path


def read_checkpoint(given: str) -> tuple[Path, dict]:
    """The checkpoint at `given` (a run directory: its checkpoint.pt), tensors and plain data only: a ScriptError if it
    is missing or is not a torch file."""
    import torch

    path = Path(given) / "checkpoint.pt" if Path(given).is_dir() else Path(given)
    if not path.is_file():
        raise ScriptError(f"checkpoint {str(path)!r} does not exist")
    try:
        return path, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, empty, not a torch file, holding Python objects
        raise ScriptError(f"{path} is not a checkpoint of these scripts ({type(error).__name__}: {error})"[:300]) \
            from None


def write_whole(path: Path, write) -> None:
    """`write(temporary)` in `path`'s folder (made if missing), then renamed over `path`: the file whole or not at all;
    a ScriptError naming `path` and why (a full disk) if it fails."""
    temporary = path.with_name(path.name + ".tmp" + path.suffix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        failed = error if isinstance(error, OSError) else error.__context__  # torch's zip writer wraps a failed write
        why = failed.strerror if isinstance(failed, OSError) and failed.strerror else error
        raise ScriptError(f"cannot write {path}: {why}") from None


def one_line(message: str) -> str:
    """tyro's boxed error message (a title line, a rule, the reason maybe wrapped over lines, a rule) as one line."""
    lines = [line.strip(" │╭╮╰╯─-") for line in message.splitlines()][1:]
    while lines and not lines[0]:
        lines.pop(0)
    return " ".join(lines[:(lines + [""]).index("")]).replace(" .", ".") or "the flags do not parse"


def cli(kind, argv: list[str], prog: str, description: str):
    """A tool's command line parsed by tyro (`--help` as tyro prints it); ScriptError with tyro's reason in one line
    when it does not parse."""
    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(kind, args=argv, prog=prog, description=description)
    except SystemExit as exit:
        if not exit.code:
            raise
        raise ScriptError(one_line(captured.getvalue())) from None


def base_type(annotation) -> type:
    """int, float, str, bool or tuple for a field annotation; Optional[X] is X, Literal[...] is its items' type."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        remaining = [argument for argument in arguments if argument is not type(None)]
        return base_type(remaining[0]) if len(remaining) == 1 else str
    if origin is Literal:
        return type(arguments[0])
    if origin is tuple or annotation is tuple:
        return tuple
    return annotation if annotation in (int, float, str, bool) else str


@dataclass
class Script:
    """A training script, loaded to read its settings (`Args` and `RunArgs`: flag names, types, defaults) and to check
    them with its own checks."""

    path: Path
    given: str  # as the user named it
    module: types.ModuleType
    field_types: dict[str, type]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def command_path(self) -> str:
        """How to name the script in a command line run from the current directory."""
        return self.given if Path(self.given).is_file() else os.path.relpath(self.path)

    def has_flag(self, flag: str) -> bool:
        return flag.replace("-", "_") in self.field_types

    def parse(self, argv: list[str]):
        """(args, run_args) as the script parses `argv`; ScriptError with tyro's reason in one line."""
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
                return self.module.parse_command_line(argv)
        except SystemExit:
            raise ScriptError(f"{self.name} rejects `{shlex.join(argv)}`: {one_line(captured.getvalue())}") from None

    def check(self, argv: list[str]) -> None:
        """Parse `argv` and run the script's own checks of its settings; ScriptError on a problem."""
        args, run_args = self.parse(argv)
        problems = self.module.general_problems(args, run_args) or self.module.check_args(args, run_args)
        if problems:
            raise ScriptError(f"{self.name}: {'; '.join(problems)}")

    def settings(self, argv: list[str]) -> dict:
        """Every setting `argv` gives the script, defaults included, as the run's args.json will hold them."""
        args, run_args = self.parse(argv)
        as_dict = dataclasses.asdict(args) | (dataclasses.asdict(run_args) if run_args is not args else {})
        return json.loads(json.dumps(as_dict))  # tuples become lists, as in args.json


def find_script(given: str, search_dirs: tuple[Path, ...] = (REPO_ROOT,)) -> Optional[Path]:
    """The script as given (relative to the current directory), or in one of `search_dirs`."""
    candidates = [Path(given), *(directory / given for directory in search_dirs)]
    return next((candidate.resolve() for candidate in candidates if candidate.is_file()), None)


def load_script(given: str, path: Path) -> Script:
    """Load the module at `path` (without running its __main__ block) and check it has the scripts' interface."""
    module_name = f"_script_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None or path.suffix != ".py":
            raise ScriptError(f"{given} is not a Python script")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # tyro reads the field docstrings through the module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[module_name]
            raise ScriptError(f"cannot load {given}: {type(error).__name__}: {error}") from None
    interface = ("Args", "RunArgs", "parse_command_line", "general_problems", "check_args")
    if not all(hasattr(module, name) for name in interface) or not dataclasses.is_dataclass(module.Args):
        raise ScriptError(f"{given} has no `@dataclass class Args` and harness, so it does not have the scripts' "
                          "interface")
    field_types = {name: base_type(hint) for kind in (module.Args, module.RunArgs)
                   for name, hint in typing.get_type_hints(kind).items()}
    missing = [flag for flag in ("runs_dir", "seed", "total_timesteps") if flag not in field_types]
    if missing:
        raise ScriptError(f"{given} has no flag {', '.join('--' + m.replace('_', '-') for m in missing)}, "
                          "so it does not have the scripts' interface")
    return Script(path, given, module, field_types)


def setting_conflicts(requested: dict, saved: dict) -> list[str]:
    """The settings (defaults included) in which a run's args.json differs from `requested`, e.g.
    ['learning_rate: 0.0005 in the run, 0.001 asked']. Settings the run's args.json lacks are not compared."""
    return [f"{key}: {json.dumps(saved[key])} in the run, {json.dumps(value)} asked"
            for key, value in requested.items()
            if key not in UNCOMPARED_SETTINGS and key in saved and saved[key] != value]


@dataclass
class RunDir:
    """A run directory of the scripts: its args.json, and its summary.json (None while it runs, or after a crash)."""

    path: Path
    args: dict
    summary: Optional[dict]

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("status") != "interrupted"

    @property
    def started_at(self) -> float:
        """The unix time the scripts put at the end of its name, else its args.json's modification time."""
        match = re.search(r"__(\d+)_*$", self.path.name)
        return float(match.group(1)) if match else (self.path / "args.json").stat().st_mtime


def find_runs(paths) -> list[RunDir]:
    """The run directories among `paths`: those whose args.json names an env_id, an exp_name and a seed."""
    found = [(path, read_json(path / "args.json")) for path in paths]
    return [RunDir(path, args, read_json(path / "summary.json")) for path, args in found
            if args and {"env_id", "exp_name", "seed"} <= args.keys()]


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# Asks Linux to send the run SIGTERM when the process that started it dies, so that a killed runner or tuner leaves no
# training running on (the run saves its checkpoint and stops); resets SIGINT to its default, because a runner started
# in the background (`nohup ... &`) has it ignored and a run would inherit that and never see the SIGINT that asks it
# to stop; then execs the script.
LAUNCHER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit('the process that started this run exited before it began')
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def run_environment(threads: int) -> dict[str, str]:
    """What a run's environment sets: `threads` OpenMP/MKL/OpenBLAS threads, and unbuffered output."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1"}


def launch(script: Path, argv: list[str], stdout, stderr, threads: int = 1) -> subprocess.Popen:
    """Start `python SCRIPT ARGV` in its own session (a Ctrl-C in the terminal reaches only the caller, which decides
    what to pass on) with `threads` OpenMP/MKL/OpenBLAS threads and unbuffered output."""
    environment = {**os.environ, **run_environment(threads)}
    return subprocess.Popen([sys.executable, "-c", LAUNCHER, str(os.getpid()), str(script), *argv], stdout=stdout,
                            stderr=stderr, stdin=subprocess.DEVNULL, env=environment, start_new_session=True)


def stop(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM the run's process group (the run saves a checkpoint and exits), SIGKILL it if it is still there after
    `grace_seconds`."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class MetricsFollower:
    """Reads the rows a run appends to its metrics.csv (global_step, wall_time, name, value), a complete line at a
    time, from where it stopped reading the last time. (By hand: pandas reads a whole file, not the new lines of one
    still being written.)"""

    def __init__(self, path: Path):
        self.path, self.offset, self.partial, self.last_step = path, 0, b"", None

    def new_rows(self) -> list[tuple[int, str, float]]:
        try:
            with open(self.path, "rb") as file:
                if os.fstat(file.fileno()).st_size < self.offset:  # rewritten shorter: a resumed run drops its tail
                    self.offset, self.partial = 0, b""
                file.seek(self.offset)
                chunk = file.read()
        except OSError:
            return []
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        rows = []
        for row in csv.reader(line.decode(errors="replace") for line in lines if line.strip()):
            if len(row) >= 4 and row[0].isdigit():
                rows.append((int(row[0]), row[2], float(row[3])))
                self.last_step = rows[-1][0]
        return rows
