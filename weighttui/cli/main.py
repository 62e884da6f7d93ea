"""`weighttui watch / replay / info / export / demo`.

Heavy modules (the Textual app, numpy-heavy exports) are imported lazily so
that `weighttui info` and the first screen of `weighttui watch` stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from weighttui._version import __version__
from weighttui.cli.errors import EXIT_BAD_INPUT, CliError
from weighttui.log.format import LogFormatError
from weighttui.log.schema import KINDS
from weighttui.log.sniff import sniff_file

if TYPE_CHECKING:
    import subprocess

__all__ = ["EXIT_BAD_INPUT", "CliError", "build_parser", "main"]


def _check_log(path: str, *, must_exist: bool) -> None:
    """Fail early (exit 2) on a missing file, not-a-log or a newer format."""
    if not os.path.exists(path):
        if must_exist:
            raise CliError(f"no such run log: {path}")
        return
    if os.path.isdir(path):
        hint = (f" (checkpoints: `weighttui import {path} --out run.wtui`, or `weighttui watch {path}`)"
                if _is_checkpoint_dir(path) else "")
        raise CliError(f"{path} is a directory, not a run log{hint}")
    try:
        sniff_file(path).raise_if_foreign()  # LogFormatError -> exit 2; a pending header is fine
    except LogFormatError as exc:
        if not _looks_like_checkpoint(path):
            raise
        raise CliError(f"{path}: {exc}; it looks like a checkpoint: `weighttui import {path} --out run.wtui` "
                       f"makes a run log of it") from None


# names `weighttui import` reads (integrations/importers), said as a hint when one is given as a run log;
# not .bin or .json, which name many other things too
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".h5", ".hdf5", ".keras", ".npz")


def _looks_like_checkpoint(path: str) -> bool:
    name = os.path.basename(path).lower()
    return name.endswith(_CHECKPOINT_SUFFIXES) or "tfevents" in name or name == "pytorch_model.bin"


# ---------------------------------------------------------------- commands


def _parse_remote(path: str):
    """The RemoteSpec of `host:path` / `ssh://...`, None for a local path; a malformed one is bad input."""
    from weighttui.data.remote import parse_remote

    try:
        return parse_remote(path)
    except ValueError as exc:  # parse_remote's own messages name the spec and what is wrong
        raise CliError(str(exc)) from None


def cmd_watch(args) -> int:
    import functools

    from weighttui.data.remote import view_remote

    config = _diagnose_config(args.threshold)  # bad thresholds fail before the app starts
    if isinstance(args.path, list):  # nargs="+": several logs or a directory -> the multi-run app
        if len(args.path) == 1 and args.mode == "watch" and os.path.isdir(args.path[0]):
            from weighttui.cli.importing import wait_for_content

            wait_for_content(args.path[0])  # an empty directory: run logs or checkpoints decide the view
        if len(args.path) == 1 and _is_checkpoint_dir(args.path[0]):  # checkpoints, not run logs
            from weighttui.cli.importing import watch_checkpoints

            if args.run is not None:
                raise CliError("--run picks a run of one appended log, not of a checkpoint directory")
            return watch_checkpoints(args.path[0], mode=args.mode, max_rows=args.max_rows,
                                     diagnose_config=config)
        if len(args.path) > 1 or os.path.isdir(args.path[0]):
            if args.run is not None:
                raise CliError("--run picks a run of one appended log; the side-by-side view shows the latest of each")
            return _watch_several(args, config)
        args.path = args.path[0]
    from weighttui.tui.app import run_app
    from weighttui.tui.state import DIRECTORY_APPEARED

    if config is not None:  # --threshold: the app's alerts use it
        run_app = functools.partial(run_app, diagnose_config=config)
    if args.run is not None:  # --run N: that run of an appended log, not the latest
        run_app = functools.partial(run_app, run=args.run)
    spec = _parse_remote(args.path)  # user@host:path or ssh://...: a local mirror over ssh
    if spec is not None:
        return view_remote(spec, run_app, mode=args.mode, max_rows=args.max_rows)
    _check_log(args.path, must_exist=args.mode == "replay")
    # a path not there yet may appear as a file (a run log) or as a directory (a trainer's checkpoints)
    waiting = args.mode == "watch" and not os.path.exists(args.path)
    if waiting:
        code = run_app(args.path, mode=args.mode, max_rows=args.max_rows, directory_ok=True)
    else:
        code = run_app(args.path, mode=args.mode, max_rows=args.max_rows)
    if code == DIRECTORY_APPEARED:
        args.path = [args.path]
        return cmd_watch(args)
    return code


def _is_checkpoint_dir(path: str) -> bool:
    from weighttui.cli.importing import is_checkpoint_dir

    return is_checkpoint_dir(path)


def _watch_several(args, config) -> int:
    """`watch a.sock b.sock` / `watch DIR`: runs side by side (weighttui/tui/multi_app.py)."""
    files, dirs = [], []
    for path in args.path:
        if os.path.isdir(path):
            dirs.append(path)
            continue
        if _parse_remote(path) is not None:
            raise CliError(f"{path}: remote logs are watched one at a time (weighttui watch {path})")
        _check_log(path, must_exist=args.mode == "replay")
        files.append(path)
    if len(dirs) > 1:
        raise CliError("give at most one directory of logs (and any number of log files)")
    from weighttui.tui.multi_app import run_multi_app

    return run_multi_app(files, directory=dirs[0] if dirs else None, mode=args.mode,
                         max_rows=min(args.max_rows, 1024), diagnose_config=config)


def _open_run(path, **kw):
    """weighttui.open for a command: --run N that names no run of the log is a one-line error."""
    from weighttui.data.run import NoSuchRun, no_such_run
    from weighttui.data.run import open as open_run

    try:
        run = open_run(path, **kw)
    except NoSuchRun as exc:
        raise CliError(f"--{exc}") from None
    if kw.get("run") is not None and not run.runs:  # (open() waits for a run to come; a command does not)
        raise CliError(f"--{no_such_run(kw['run'], 0)}")
    return run


def cmd_info(args) -> int:
    from weighttui.cli.info import alerts_of, info_dict, print_info

    args.path, complete = _fetch_if_remote(args.path)
    _check_log(args.path, must_exist=True)
    if args.no_cache:
        # this reader keeps the statistics in memory: what the reading threads free goes back to the
        # one arena they share, not stays in theirs (info --no-cache, 1 GiB log: 302-306 -> 288-291 MB)
        from weighttui.data.malloc import share_malloc_arena

        share_malloc_arena()
    # a summary needs no more than 4096 snapshots of history: the fast path for big logs
    # (statistics are what info reads: a first info indexes them only, the histograms stay in the log until
    # a reader that wants them indexes them; docs/store.md)
    run = _open_run(args.path, run=args.run, max_rows=4096, cache=not args.no_cache, index_histograms=False)
    alerts = alerts_of(run, _diagnose_config(args.threshold))  # (kept beside the index for the next info)
    if args.json:
        import json

        from weighttui.cli.jsonout import json_safe

        print(json.dumps(json_safe(info_dict(run, alerts)), indent=1, allow_nan=False))
    else:
        print_info(run, alerts, sys.stdout)
    return 0 if complete else 1


def _fetch_if_remote(path: str) -> tuple[str, bool]:
    """(local path, complete): a remote log (user@host:path, ssh://...) copied once to the local
    cache, else path itself. A copy that stopped early is said on stderr and used as far as it
    goes; the command then exits 1."""
    if not path.startswith("ssh://") and os.path.exists(path):
        return path, True  # (parse_remote's first rule: a path that exists here is local; no import)
    from weighttui.data.remote import IncompleteCopy, fetch

    spec = _parse_remote(path)
    if spec is None:
        return path, True
    try:
        return fetch(spec), True
    except IncompleteCopy as exc:
        print(f"weighttui: warning: {exc}", file=sys.stderr)
        return exc.path, False
    except OSError as exc:  # ssh's own message: unknown host, no key, no such file
        raise CliError(str(exc)) from None


def _diagnose_config(thresholds):
    """DiagnoseConfig from --threshold KEY=VALUE options; None without any."""
    if not thresholds:
        return None
    from weighttui.analysis.diagnose import DiagnoseConfig

    try:
        return DiagnoseConfig.from_options(thresholds)
    except ValueError as exc:  # names the valid keys
        raise CliError(str(exc)) from None


def _alerts(run, thresholds):
    """The alerts of a run (weighttui.analysis.diagnose) under the given thresholds."""
    from weighttui.analysis import diagnose

    return diagnose.diagnose(run, _diagnose_config(thresholds))


def cmd_export(args) -> int:
    from weighttui.cli import export

    args.path, complete = _fetch_if_remote(args.path)
    _check_log(args.path, must_exist=True)
    run = _open_run(args.path, run=args.run, cache=not args.no_cache)
    created = args.out != "-" and not os.path.lexists(args.out)
    try:
        wrote = export.export(run, fmt=args.format, out=args.out, step=args.step, epoch=args.epoch,
                              kinds=args.kind, marks=args.marks)
    except OSError as exc:
        if isinstance(exc, (*BAD_INPUT, BrokenPipeError)):
            raise
        # a full disk, an I/O error: one line, and no partial file (of ours) that would read as a whole export
        if created and os.path.isfile(args.out):
            try:
                os.unlink(args.out)
            except OSError:
                pass
        print(f"weighttui: export to {args.out} failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {wrote}", file=sys.stderr)
    return 0 if complete else 1


def cmd_demo(args) -> int:
    import subprocess  # (only the demo starts a process: not imported for every command)

    path = args.path or os.path.join(tempfile.mkdtemp(prefix="weighttui-demo-"), "demo.wtui")
    cmd = [sys.executable, "-m", "weighttui.demo", path, "--steps", str(args.steps),
           "--delay", str(args.delay), "--quiet"]
    print(f"weighttui demo: training a numpy MLP in a separate process, logging to {path}", file=sys.stderr)
    trainer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        if args.no_tui:
            return _demo_progress(path, trainer)
        from weighttui.tui.app import run_app

        status = run_app(path, mode="watch", title="weighttui demo")
        return status
    finally:
        if trainer.poll() is None:
            trainer.terminate()
            try:
                trainer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                trainer.kill()


def _demo_progress(path: str, trainer: subprocess.Popen) -> int:
    """--no-tui: print progress from the log while the trainer runs, then the summary."""
    from weighttui.cli.info import print_info
    from weighttui.data.run import RunData
    from weighttui.data.run import open as open_run
    from weighttui.log.tail import LogTail

    data = RunData(path, max_rows=512)
    tail = LogTail(path)
    last_print = 0.0
    while True:
        done = trainer.poll() is not None
        data.ingest(tail.poll())
        now = time.monotonic()
        if data.n and (now - last_print > 1.0 or done):
            last_print = now
            loss = data.scalars("loss")[1][-1] if "loss" in data.scalar_names else float("nan")
            print(f"step {int(data.steps[-1]):6d}  snapshots {data.snapshot_count:5d}  loss {loss:.4f}",
                  flush=True)
        if done:
            break
        time.sleep(0.2)
    tail.close()
    if trainer.returncode != 0:
        print(f"weighttui demo: the trainer exited with status {trainer.returncode}", file=sys.stderr)
        return 1
    print()
    print_info(open_run(path), _alerts(open_run(path), []), sys.stdout)
    return 0


# ------------------------------------------------------------------ parser


# One example per subcommand: `weighttui --help` teaches the tool, not only lists it.
EXAMPLES = """\
examples, one per command:
  weighttui watch run.sock                    follow a live run (waits for the file to appear)
  weighttui replay run.sock                   scrub a finished run from its first snapshot
  weighttui info run.sock --json              summary: run, status, tensors, damage, alerts
  weighttui export run.sock --format csv --out stats.csv      statistics (or json, npz, parquet, changes, tensorboard)
  weighttui import ckpts/ --out run.wtui      existing checkpoints, HF Trainer output, TB events -> a run log
  weighttui demo                              a small numpy MLP trains in another process; watch it live

remote logs: any PATH may be [user@]host:path or ssh://user@host:port/path (your own ssh)
`weighttui COMMAND --help` says more about each command; docs/ has the details.
"""

VIEW_EPILOG = """\
examples:
  weighttui {name} run.sock                       a log on this machine
  weighttui {name} gpu-box:runs/run.sock          a log on another machine, over your own ssh
  weighttui {name} ssh://me@gpu-box:2222/runs/run.sock   the same with a user and port
  weighttui {name} sweep/                         every log under a directory, side by side
  weighttui {name} ckpts/                         a checkpoint directory (safetensors, .pt, .ckpt, Keras/HDF5,
                                                 .npz, JSON, HF checkpoint-N/, TensorBoard events) as a live run:
                                                 each checkpoint is shown once completely written (docs/import.md)
  weighttui {name} run.sock --threshold ratio_high=0.05 --threshold disable=dead_units

remote watching: host:path (scp style) or ssh://[user@]host[:port]/path runs `ssh` with your
~/.ssh/config, keys and agent (never a password prompt; $WEIGHTTUI_SSH replaces the ssh
command); nothing of weighttui is installed remotely. The log is mirrored into
~/.cache/weighttui/remote/ (docs/remote.md).

alerts: each rule has thresholds (--threshold KEY=VALUE, repeatable; disable=RULE,RULE
turns rules off); `weighttui info PATH --threshold ...` takes the same, and so does a view of
several runs (its alerts column, and the run opened from it). The rules and their defaults
are in docs/alerts.md.
"""


def _run_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more (the first run of a log is 0)")
    return value


def _at_least_4(text: str) -> int:
    value = int(text)
    if value < 4:
        raise argparse.ArgumentTypeError("must be at least 4")
    return value


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog="weighttui", description="Watch neural-network weights while they train.",
                                 epilog=EXAMPLES, formatter_class=raw)
    ap.add_argument("--version", action="version", version=f"weighttui {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, mode, text in (("watch", "watch", "follow a run log live (waits for it to appear)"),
                             ("replay", "replay", "scrub through a run log from its first snapshot")):
        p = sub.add_parser(name, help=text, description=text, epilog=VIEW_EPILOG.format(name=name),
                           formatter_class=raw)
        p.add_argument("path", nargs="+",
                       help="run log (e.g. run.sock), local or [user@]host:path / ssh://user@host:port/path; "
                            "several logs or a directory compare runs side by side; a directory of checkpoints "
                            "(where a trainer keeps writing them) is imported and followed as a live run")
        p.add_argument("--max-rows", type=_at_least_4, default=2048,
                       help="snapshots kept in memory before old history is thinned (default 2048: enough "
                            "for any terminal width, and a 1 GB log stays under 500 MB)")
        p.add_argument("--threshold", action="append", metavar="KEY=VALUE",
                       help="change an alert threshold (see below; docs/alerts.md)")
        p.add_argument("--run", type=_run_number, default=None,
                       help="which run of an appended log (mode=\"a\"): 0-based; default the latest")
        p.set_defaults(func=cmd_watch, mode=mode)

    text = "summary of a run log: run, tensors, steps, status, damage, alerts"
    p = sub.add_parser("info", help=text, description=text, formatter_class=raw, epilog="""\
examples:
  weighttui info run.sock
  weighttui info gpu-box:runs/run.sock --json     (a remote log, copied once over ssh)
  weighttui info run.sock --threshold ratio_high=0.05 --threshold disable=ratio_low
""")
    p.add_argument("path", help="run log, local or [user@]host:path / ssh://user@host:port/path")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--run", type=_run_number, default=None,
                   help="which run of an appended log (0-based; default latest)")
    p.add_argument("--threshold", action="append", metavar="KEY=VALUE",
                   help="change an alert threshold (docs/alerts.md lists them)")
    p.add_argument("--no-cache", action="store_true",
                   help="read the log without using or writing its index (nothing is written to disk)")
    p.set_defaults(func=cmd_info)

    text = "statistics as a table, or complete weights at a step"
    p = sub.add_parser("export", help=text, description=text, formatter_class=raw, epilog="""\
examples:
  weighttui export run.sock --format csv --out stats.csv       one row per snapshot, tensor, statistic
  weighttui export run.sock --format npz --epoch 10 --out w10.npz   complete weights
  weighttui export run.sock --format tensorboard --out tb/     needs: pip install 'weighttui[tensorboard]'
  weighttui export run.sock --format parquet --out run.parquet  tidy table for DuckDB/Polars/pandas
""")
    p.add_argument("path", help="run log, local or [user@]host:path / ssh://user@host:port/path")
    p.add_argument("--format", choices=("csv", "npz", "json", "changes", "tensorboard", "parquet"), required=True,
                   help="csv/json: statistics (or weights with --step/--epoch, json and npz); "
                        "npz: arrays; changes: the change table as CSV; "
                        "tensorboard: event files in the --out directory; "
                        "parquet: one tidy table run_id, step, epoch, tensor, kind, stat, value (needs pyarrow)")
    p.add_argument("--out", required=True, help="output file ('-' for stdout with csv/json)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--step", type=int, help="complete weights stored at this step")
    g.add_argument("--epoch", type=int, help="complete weights stored at the end of this epoch")
    p.add_argument("--kind", action="append", choices=KINDS,
                   help="statistics blocks to export (default: all present)")
    p.add_argument("--run", type=_run_number, default=None,
                   help="which run of an appended log (0-based; default latest)")
    p.add_argument("--no-cache", action="store_true",
                   help="read the log without using or writing its index (only --out is written)")
    p.add_argument("--marks", nargs=2, type=int, metavar=("A", "B"),
                   help="with --format changes: also the change |w_B - w_A| / |w_A| between steps A and B "
                        "(column change_ab; exact from complete values where both steps have them, else from "
                        "the sampled elements: column change_ab_from says which)")
    p.set_defaults(func=cmd_export)

    from weighttui.cli.importing import add_parser as add_import_parser

    add_import_parser(sub)  # `weighttui import SRC --out PATH` (weighttui/cli/importing.py)

    text = "train a small numpy MLP in a separate process and watch it live"
    p = sub.add_parser("demo", help=text, description=text, formatter_class=raw,
                       epilog="example:\n  weighttui demo --steps 500 --no-tui\n")
    p.add_argument("--path", help="where to write the log (default: a temporary directory)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--delay", type=float, default=0.02, help="seconds the trainer sleeps per step")
    p.add_argument("--no-tui", action="store_true", help="print progress and the summary instead of the app")
    p.set_defaults(func=cmd_demo)
    return ap


# What a command may raise that is about the user's input, not a bug: one line, exit 2.
# Everything else (a ValueError or KeyError from deep inside, say) keeps its traceback.
BAD_INPUT = (CliError, LogFormatError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
             PermissionError)


def _one_blas_thread() -> None:
    """numpy's OpenBLAS starts a spinning thread per core at import (about 40-110 ms of CPU on a
    2-core machine) although no command multiplies matrices with numpy; one thread also keeps the
    demo's trainer (a child, which inherits it) from competing with the viewer for the cores.
    A value the user set is kept; numpy already imported (main() called from Python) is left as is."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv=None) -> int:
    _one_blas_thread()
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # bare `weighttui`: the help, with its examples
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)  # argparse: usage and exit 2 on a bad option
    try:
        return args.func(args)
    except BAD_INPUT as exc:  # (inert: a message may quote a log's or a checkpoint's strings)
        from weighttui.log.text import inert

        print(f"weighttui: {inert(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
