"""Every ``publiek-*`` command in docs/runbook.md is one our programs accept.

Commands are taken from the fenced code blocks and from inline code spans; each is parsed by the
program's own argparse parser (no abbreviations), so a renamed option breaks this test rather
than an operator's upgrade night.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli_commands import parse_problem, shell_commands

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"


def runbook_commands(text: str) -> list[list[str]]:
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", text, flags=re.DOTALL)
    inline = re.findall(r"(?<!`)`(publiek-[^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    return [c for block in blocks for c in shell_commands(block)] + [
        c for span in inline for c in shell_commands(span)
    ]


def test_every_runbook_command_parses() -> None:
    commands = runbook_commands(RUNBOOK.read_text())
    problems = [(" ".join(c), p) for c in commands if (p := parse_problem(c))]
    assert problems == []
    # The runbook covers each step an operator takes, with the command that does it.
    said = {" ".join(c[:3]) for c in commands}
    for step in [
        "publiek-coordinator ca init",
        "publiek-node init --institution-id",
        "publiek-coordinator ca sign",
        "publiek-coordinator ca revoke",
        "publiek-coordinator ca crl",
        "publiek-coordinator ca server-cert",
        "publiek-node health --config",
        "publiek-coordinator health --address",
        "publiek-coordinator status --state",
    ]:
        assert any(s.startswith(step) for s in said), step


def test_the_extraction_sees_a_wrong_command() -> None:
    text = (
        "```sh\npubliek-node run --config x.toml --log-format xml\n```\n"
        "and `publiek-coordinator ca sign /ca` inline\n"
    )
    commands = runbook_commands(text)
    assert [c[:2] for c in commands] == [["publiek-node", "run"], ["publiek-coordinator", "ca"]]
    assert all(parse_problem(c) for c in commands)
