"""Check that a ``publiek-*`` command line is one our programs accept, with their own parsers.

Deployment files (Dockerfiles, compose, systemd units, scripts) and the runbook name commands
that nothing here runs; parsing them with the very argparse parsers the programs use catches a
renamed option or subcommand the day it happens.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from collections.abc import Callable
from pathlib import Path

from coordinator.cli import build_parser as coordinator_parser
from node.cli import build_parser as node_parser
from synthetic.cli import build_parser as synth_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "publiek-node": node_parser,
    "publiek-coordinator": coordinator_parser,
    "publiek-synth": synth_parser,
}


def _exact(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """No abbreviated options: what files and documents say should be the option's full name
    (argparse would take --expect for --expect-nodes until another option starts so too)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _exact(sub)
    return parser


def parse_problem(argv: list[str]) -> str | None:
    """None when ``argv`` (program first, by name or path) parses; else argparse's complaint."""
    program = Path(argv[0]).name
    if program not in PARSERS:
        return f"{argv[0]!r} is not one of our programs ({', '.join(sorted(PARSERS))})"
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            _exact(PARSERS[program]()).parse_args(argv[1:])
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # --help and --version exit 0
            return said.getvalue().strip().splitlines()[-1] if said.getvalue() else str(exit_)
    return None


def shell_commands(script: str) -> list[list[str]]:
    """The ``publiek-*`` command lines of a shell text (continuation lines joined)."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        text = line.strip()
        if text.startswith("#"):
            continue
        for part in text.replace("&&", ";").replace("|", ";").split(";"):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and ("=" in words[0] and not words[0].startswith("-")):
                words = words[1:]  # VAR=value before the command
            if words and Path(words[0]).name in PARSERS:
                found.append(words)
    return found
