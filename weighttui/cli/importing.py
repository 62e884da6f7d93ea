"""The `weighttui import` subcommand and `weighttui watch DIR` on a checkpoint directory (wired in cli/main.py)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys


def add_parser(sub) -> None:
    text = ("convert checkpoints (safetensors, .pt/.ckpt, Keras/HDF5, .npz, JSON), HF Trainer output "
            "or TensorBoard events into a run log")
    p = sub.add_parser("import", help=text, description=text)
    p.add_argument("src", metavar="SRC", help="a directory, a file or a quoted glob ('ckpt/epoch_*.pt')")
    p.add_argument("--out", required=True,
                   help="the run log to write (e.g. run.wtui; an existing run log is replaced, any other file kept)")
    p.add_argument("--values", action=argparse.BooleanOptionalAction, default=True,
                   help="keep complete tensor values of every checkpoint, so weighttui.open(out).weights(epoch=N) "
                        "works (default); --no-values keeps statistics, histograms, deltas and samples only")
    p.add_argument("--bins", type=_bins, default=64, help="histogram bins, 1..4096 (default 64)")
    p.set_defaults(func=cmd_import)


def _bins(text: str) -> int:
    """--bins: the range the log format allows (record/recorder.py checks the same), as argparse's error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..4096, not {text!r}") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be an integer in 1..4096, not {value}")
    return value


def cmd_import(args) -> int:
    from weighttui.cli.errors import CliError
    from weighttui.integrations.importers.base import ImportFileError, say
    from weighttui.integrations.importers.driver import LogStopped, NothingImported, import_source

    if not os.path.exists(args.src) and not any(c in args.src for c in "*?["):
        raise FileNotFoundError(f"no such file or directory: {args.src}")
    if os.path.abspath(args.out) == os.path.abspath(args.src):
        raise CliError("--out must not be the source")
    if os.path.isdir(args.out):
        raise CliError(f"--out {args.out} is a directory; give the run log's file name "
                       f"(e.g. {os.path.join(args.out, 'run.wtui')})")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):  # said before any checkpoint is read, in one line
        raise CliError(f"--out {args.out}: no such directory: {out_dir}")
    if os.path.isfile(args.out):  # a run log is replaced; anything else (a checkpoint, notes) is kept
        from weighttui.log.sniff import HeadState, sniff_file

        if sniff_file(args.out).state is HeadState.FOREIGN:
            raise CliError(f"--out {args.out} exists and is not a weighttui run log: not replaced "
                           "(remove it, or give another name)")
    try:
        result = import_source(args.src, args.out, values=args.values, bins=args.bins)
    except KeyboardInterrupt:  # the log is closed (status interrupted) and readable: say so, in one line
        print(f"weighttui import: interrupted; {args.out} keeps the snapshots written so far "
              "(status: interrupted)", file=sys.stderr)
        raise
    except NothingImported as exc:  # each file was named on its own line: exit 1, as for no snapshot written
        say(str(exc))
        return 1
    except ImportFileError as exc:
        raise CliError(str(exc)) from None
    except LogStopped as exc:  # the writer said why (cannot open, disk full ...)
        say(f"{args.out}: {exc}")
        return 1
    scalars_only = result.get("scalar_steps", 0)  # TensorBoard steps with scalars and no histograms
    if result["checkpoints"] or not scalars_only:
        wrote = f"{result['checkpoints']} snapshot(s)" + (f" and scalars at {scalars_only} more step(s)"
                                                          if scalars_only else "")
    else:
        wrote = f"scalars at {scalars_only} step(s) (the event files hold no histograms)"
    print(f"weighttui import: wrote {wrote} to {args.out}"
          + (f" ({result['skipped']} file(s) skipped)" if result["skipped"] else ""), file=sys.stderr)
    return 0 if result["checkpoints"] or scalars_only else 1


def is_checkpoint_dir(path: str) -> bool:
    """A directory holding no run logs but checkpoints, HF checkpoint-N/ dirs or TensorBoard events."""
    if not os.path.isdir(path):
        return False
    from weighttui.analysis.multirun import DirectoryWatch
    from weighttui.integrations.importers.discover import checkpoint_units, event_files, hf_dirs

    if DirectoryWatch(path).scan().logs:
        return False
    try:
        return bool(hf_dirs(path) or event_files(path) or checkpoint_units(path))
    except Exception:
        return False


def wait_for_content(directory: str, *, poll: float = 0.5, say=None) -> None:
    """`watch DIR` on a directory with neither run logs nor checkpoints yet (the trainer has not written
    its first one): wait for either, so that the first checkpoint is followed as a live run instead of
    the directory being watched for run logs only. Says once what it waits for; ctrl-c stops."""
    import time

    from weighttui.analysis.multirun import DirectoryWatch

    said = False
    while not (DirectoryWatch(directory).scan().logs or is_checkpoint_dir(directory)):
        if not said:
            (say or (lambda m: print(m, file=sys.stderr, flush=True)))(
                f"weighttui: waiting for run logs or checkpoints in {directory} (ctrl-c stops)")
            said = True
        time.sleep(poll)


def claim_cache_log(directory: str) -> tuple[str, str | None]:
    """The log this watch of `directory` imports into, and where the previous watch's log was kept
    (None: there was none). The log is rebuilt from the files there now, so the previous one, which
    may hold steps whose files are gone (a rolling window of checkpoints), is kept beside it as
    `<name>.previous.wtui` (one generation). A watch of the same directory still running holds its
    log's lock: this one takes the next free name (`<name>-2.wtui` ...) and imports on its own."""
    from weighttui.record.logfile import held_by_a_writer

    first = cache_log(directory)
    stem = first[: -len(".wtui")]
    out = next(path for path in (first, *(f"{stem}-{k}.wtui" for k in range(2, 1000)))
               if not held_by_a_writer(path))
    previous = None
    if os.path.exists(out) and os.path.getsize(out) > 0:
        previous = out[: -len(".wtui")] + ".previous.wtui"
        os.replace(out, previous)
    return out, previous


def cache_log(directory: str) -> str:
    """Where `watch DIR` imports a checkpoint directory: the user's cache directory, else (a read-only or
    missing home, as on some compute nodes) a new temporary directory: the log is only a cache."""
    from weighttui.log.paths import user_cache_dir

    folder = user_cache_dir("import")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(folder)
    except OSError:
        import tempfile

        folder = tempfile.mkdtemp(prefix="weighttui-import-")
    key = hashlib.sha1(os.path.abspath(directory).encode()).hexdigest()[:12]
    name = os.path.basename(os.path.normpath(os.path.abspath(directory))) or "checkpoints"
    return os.path.join(folder, f"{name}-{key}.wtui")


def watch_checkpoints(directory: str, *, mode: str = "watch", max_rows: int = 2048, values: bool = True,
                      diagnose_config=None) -> int:
    """Follow a checkpoint directory into a cached run log and show it in the single-run viewer."""
    from weighttui.integrations.importers.base import say
    from weighttui.integrations.importers.follow import CheckpointFollower
    from weighttui.tui.app import run_app

    out, previous = claim_cache_log(directory)
    messages: list[str] = []
    follower = CheckpointFollower(directory, out, values=values, report=messages.append)
    follower.start()
    status = "interrupted"
    try:
        code = run_app(out, mode=mode, max_rows=max_rows, title=f"{directory} (checkpoints)",
                       diagnose_config=diagnose_config)  # --threshold applies here too
        status = "finished"
        return code
    finally:
        follower.stop(status)
        for m in messages:
            say(m)
        print(f"weighttui: the imported run log is {out}", file=sys.stderr)
        if previous is not None:
            print(f"weighttui: the previous watch's log of {directory} is kept as {previous} (steps whose "
                  "files are gone since are only there)", file=sys.stderr)
