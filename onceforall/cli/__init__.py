"""The ``onceforall`` command line."""

from __future__ import annotations

import argparse
import os
import re
import select
import sys

from safetensors import SafetensorError

from onceforall.cli import demo, latency, specialize, train

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onceforall",
        description="Train one supernet once, then specialize it for any device in seconds.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # Each command module adds its subcommands; this order is the order of --help.
    for module in (train, specialize, latency, demo):
        module.add_parsers(sub)
    return parser


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on its
    write end). If so, it is pointed at the null device, so that the interpreter's last flush at
    exit does not fail again."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()  # not on Windows: there the error is reported as any other
        poll.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--macs -5M`` as ``--macs=-5M``: argparse takes a value that starts with ``-`` and is no
    plain number for an option, and would answer "expected one argument" instead of the option's
    own check. No argument of this command line is a negative number on its own."""
    out: list[str] = []
    for token in argv:
        if out and re.match(r"-\.?\d", token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = _join_negative_values(sys.argv[1:] if argv is None else list(argv))
    # key=value overrides may come anywhere after the config (also after --out): argparse leaves
    # those it cannot place among the unknown arguments.
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [u for u in unknown if "=" in u and not u.startswith("-")]
        unknown = [u for u in unknown if u not in args.overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except BrokenPipeError as exc:
        if _stdout_closed():  # `onceforall ... | head`: the reader has all it wanted
            return 141  # 128 + SIGPIPE, the status a shell gives a writer whose reader left
        print(f"onceforall {args.command}: error: {exc}", file=sys.stderr)
        return 2
    # Errors of the user's input, files or machine: a message, not a traceback. OSError covers
    # missing, existing, unwritable and misnamed paths; FloatingPointError a diverged training.
    except (ValueError, OSError, FloatingPointError, SafetensorError) as exc:
        message = str(exc)
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line
            message = message.strip().splitlines()[-1]
        print(f"onceforall {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            hint = "; `onceforall train` continues from its last checkpoint with --resume"
        print(f"onceforall {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
