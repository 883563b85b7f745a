"""`clipae`: the single command line for everything users do outside Prefect.

Each subcommand lives in its own module under ``clipae/commands/`` and exposes
``register(subparsers)``; this file only discovers and dispatches them, so adding a
command never means editing a central list.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import signal
import sys
import threading

from clipae import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipae",
        description="Unsupervised temporal action localization (CLIP-AE): features, training, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"clipae.commands.{mod.name}")
        module.register(sub)
    return parser


_OWN_PACKAGES = ("storage", "extractors", "models", "flows", "clipae")
try:
    from yaml import YAMLError as _YAMLError  # a malformed --config or dataset YAML
except ImportError:  # pragma: no cover -- pyyaml is a dependency
    _YAMLError = ValueError


def _is_usage_error(e: BaseException) -> bool:
    """Bad input rather than a bug: a missing or unusable file, or an error our code raises on purpose (its
    error classes, or a plain ValueError/KeyError raised in our code). An IndexError, or a ValueError raised
    inside numpy or torch, is a failure (exit 1, with the CLIPAE_DEBUG hint)."""
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError,
                      json.JSONDecodeError, UnicodeDecodeError, _YAMLError)):  # a missing or malformed input file
        return True
    if type(e).__module__.split(".")[0] in _OWN_PACKAGES:
        return True
    if type(e) not in (ValueError, KeyError):
        return False
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in _OWN_PACKAGES


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, `docker stop`, SLURM and `kill` send), handled as Ctrl-C is: the same cleanup
    (extraction stops its threads, training removes its temporary checkpoint), a message, exit 143."""


def _on_sigterm(signum, frame):
    raise _Terminated()


#: What to do after an interruption, per command (what was published is kept either way).
_RESUME_HINT = {
    "extract": "run the same command again: complete videos are skipped, the rest extracted",
    "import-features": "run the same command again: imported videos are skipped",
    "train": "add --resume to continue from the last finished epoch",
    "ablate": "add --resume to continue",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # (parse_args would report them with the top-level usage, not the command's)
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)  # (only where nobody else handles it)
    try:
        return _dispatch(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command that ``args`` ran, e.g. ``clipae store info``'s."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `clipae store ls S | head`: the reader left; end quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (so the interpreter's final flush does not fail again)
        return 141
    except (OSError, ValueError, LookupError, RuntimeError, _YAMLError) as e:
        # One clear line instead of a traceback for what users run into: a missing or unreadable file, a store
        # or dataset that is not what was asked for, no GPU. Exit 2 for bad input (our ValueError subclasses:
        # StoreError, DatasetError, ConfigError...; missing files; bad JSON), 1 for a failure while running.
        # CLIPAE_DEBUG=1 shows the traceback.
        if os.environ.get("CLIPAE_DEBUG"):
            raise
        usage = _is_usage_error(e)
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        action = getattr(args, f"{args.command}_command", None)  # (store/runs/demo: name the action too)
        print(f"clipae {args.command}{' ' + action if action else ''}: error: {msg}", file=sys.stderr)
        if not usage:
            print(f"  ({type(e).__name__}; set CLIPAE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2 if usage else 1
    except KeyboardInterrupt as e:
        code = 143 if isinstance(e, _Terminated) else 130
        command = getattr(args, "command", None) or ""
        hint = _RESUME_HINT.get(command)
        print(f"clipae {command}: {'terminated (SIGTERM)' if code == 143 else 'interrupted'}"
              + (f"; {hint}" if hint else ""), file=sys.stderr)
        if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
            # Worker threads (video decoders, the networks' thread) would finish their current window
            # first: the interpreter joins them at exit, minutes on a CPU. Leaving at once is safe: a store
            # is published only by atomic renames and its locks are flock()s the kernel releases, which is
            # what lets a store survive SIGKILL (tests/test_store_atomicity.py).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


if __name__ == "__main__":
    sys.exit(main())
