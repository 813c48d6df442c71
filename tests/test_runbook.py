"""Every ``publiek-*`` command in docs/runbook.md is one our programs accept.

Commands are taken from the fenced code blocks and from inline code spans; each is parsed by the
program's own argparse parser (no abbreviations), so a renamed option breaks this test rather
than an operator's upgrade night.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509

from coordinator.ca import MIN_SERIAL_PREFIX
from coordinator.cli import main as coordinator_main
from node.cli import main as node_main
from protocols.certificates import RevocationList, serial_text
from tests.cli_commands import parse_problem, shell_commands


def _ca_cert(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())


RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, content) of each fenced block; a block's closing fence never opens another."""
    return re.findall(r"^ *```([a-z]*)\n(.*?)^ *```", text, flags=re.DOTALL | re.MULTILINE)


def runbook_commands(text: str) -> list[list[str]]:
    blocks = [body for lang, body in fenced_blocks(text) if lang in ("", "sh", "bash")]
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
        "```text\npubliek-node run: what it printed\n```\n"
    )
    commands = runbook_commands(text)
    assert [c[:2] for c in commands] == [["publiek-node", "run"], ["publiek-coordinator", "ca"]]
    assert all(parse_problem(c) for c in commands)


def _shown_alike(text: str, folder: str) -> list[str]:
    """ca list's lines with what differs between two CAs (folder, dates, serials) blanked."""
    text = text.replace(folder, "FOLDER")
    text = re.sub(r"\d{4}-\d{2}-\d{2}", "YYYY-MM-DD", text)
    return re.sub(r"\b[0-9a-f]{30,40}\b", "SERIAL", text).splitlines()


def test_the_revoke_example_is_what_ca_list_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """§6 shows `ca list` and revokes the old certificate by the first digits of its serial
    there: the listing is what ca list prints, and the command does that to a real CA."""
    text = RUNBOOK.read_text()
    listing = next(body for lang, body in fenced_blocks(text) if "  SUBJECT  " in body)
    [revoke] = [c for c in runbook_commands(text) if c[1:3] == ["ca", "revoke"] and "--serial" in c]
    runbook_ca, prefix = revoke[3], revoke[revoke.index("--serial") + 1]
    rows = [line.split() for line in listing.splitlines()[3:]]
    nodes = sorted((r for r in rows if r[0] == "stadsschouwburg-utrecht"), key=lambda r: r[3])
    # The serial given is the start of the old certificate's (the one that runs out first)
    # and of no other.
    assert len(prefix) >= MIN_SERIAL_PREFIX
    assert [r[0] for r in rows if r[4].startswith(prefix)] == ["stadsschouwburg-utrecht"]
    assert nodes[0][4].startswith(prefix) and len(nodes) == 2

    # The same steps on a real CA: the coordinator's certificate, the old node certificate
    # and its successor.
    ca = tmp_path / "ca"
    assert coordinator_main(["ca", "init", str(ca), "--host", "publiek.sector.example.org"]) == 0
    for days, name in (("300", "old"), ("365", "new")):
        key, csr = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
        argv = ["--institution-id", "stadsschouwburg-utrecht", "--key-out", str(key)]
        assert node_main(["init", *argv, "--csr-out", str(csr)]) == 0
        assert coordinator_main(["ca", "sign", str(ca), str(csr), "--days", days]) == 0
    capsys.readouterr()
    assert coordinator_main(["ca", "list", str(ca)]) == 0
    shown = capsys.readouterr().out
    assert _shown_alike(shown, str(ca)) == _shown_alike(
        listing.replace(runbook_ca, str(ca)), str(ca)
    )
    old = x509.load_pem_x509_certificate((tmp_path / "old.pem").read_bytes()).serial_number
    assert serial_text(old) in shown
    # The runbook's command with this CA's folder and old serial's first digits.
    argv = [serial_text(old)[: len(prefix)] if a == prefix else a for a in revoke[1:]]
    assert coordinator_main([str(ca) if a == runbook_ca else a for a in argv]) == 0
    assert capsys.readouterr().out.startswith(f"  {serial_text(old)}: revoked\n")
    crl = RevocationList.parse((ca / "crl.pem").read_bytes(), _ca_cert(ca), "crl.pem")
    assert set(crl.revoked) == {old}
