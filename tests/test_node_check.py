"""``publiek-node check`` on real bad files: a clear message each, never a traceback.

Each test writes the broken file to disk and runs the command line as a user would
(``python -m node check ...`` in a subprocess), then reads what it printed and its exit code.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.cli import main as node_main
from tests.conftest import COLUMNS, ticket_row, write_tickets

TEN_MB = 10 * 1024 * 1024


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def check(*args: str | Path) -> Result:
    """``publiek-node check`` in this process (an exception escaping it fails the test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = node_main(["check", *map(str, args)])
    return Result(code, out.getvalue(), err.getvalue())


def check_as_a_user_would(*args: str | Path) -> Result:
    """The installed command line in a fresh interpreter: what a user sees, traceback or not."""
    done = subprocess.run(
        [sys.executable, "-m", "node", "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stdout + done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


def good_rows(n: int = 9, **overrides: Any) -> list[dict[str, Any]]:
    return [
        ticket_row(ticket_id=f"T{i}", order_id=f"O{i}", customer_id=f"C{i % 4}", **overrides)
        for i in range(n)
    ]


def test_good_data_passes_with_a_summary(tmp_path: Path) -> None:
    result = check(write_tickets(tmp_path / "t.csv", good_rows()))
    assert result.returncode == 0
    assert "9 rows read; 9 usable, 0 quarantined" in result.stdout
    assert "PASSED: 9 ticket rows can be used" in result.stdout


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    result = check(tmp_path / "empty.csv")
    assert result.returncode == 1
    assert "the file is empty (0 bytes)" in result.stderr


def test_header_without_rows(tmp_path: Path) -> None:
    result = check(write_tickets(tmp_path / "t.csv", []))
    assert result.returncode == 1
    assert "there are no ticket rows in it" in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    result = check(tmp_path / "nowhere.csv")
    assert result.returncode == 1 and "file not found" in result.stderr


def test_truncated_file(tmp_path: Path) -> None:
    path = write_tickets(tmp_path / "t.csv", good_rows(200))
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"2024-02-15T20:00:00")])  # cut inside the last row
    result = check_as_a_user_would(path)
    assert result.returncode == 1
    assert "the file ends in the middle of this row: was it cut off?" in result.stderr
    assert "it looks cut off; export it again" in result.stderr
    assert f"{path}:row 201:" in result.stderr


def test_truncated_inside_a_quoted_field(tmp_path: Path) -> None:
    path = write_tickets(tmp_path / "t.csv", good_rows(5, venue_id="Zaal 1, boven"))
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"Zaal 1,")])
    result = check(path)
    assert result.returncode == 1
    assert "line 6: a quoted field opens here and is never closed" in result.stderr


def test_wrong_delimiter_in_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, delimiter=";")
        writer.writeheader()
        writer.writerows(good_rows())
    mapping = tmp_path / "m.toml"
    mapping.write_text('[source]\ndelimiter = ","\n')
    result = check(path, "--mapping", mapping)
    assert result.returncode == 1
    assert "required column 'ticket_id' is missing" in result.stderr
    assert "the file looks ';'-separated; set delimiter under [source]" in result.stderr
    # Left to sniffing, the same file is read correctly.
    assert check(path).returncode == 0


def test_rows_with_another_delimiter_than_the_header(tmp_path: Path) -> None:
    path = write_tickets(tmp_path / "t.csv", good_rows(150))
    with path.open("a", newline="") as fh:
        csv.writer(fh, delimiter=";").writerow(ticket_row(ticket_id="X1").values())
    result = check(path)
    assert result.returncode == 0  # one row in 151 is quarantined: under the 1 % limit
    assert f"{path}:row 152: (row): the whole row landed in the first column" in result.stdout
    assert "PASSED with 1 row(s) quarantined: 150 ticket rows can be used" in result.stdout


def test_mixed_encodings_are_read_and_the_lines_named(tmp_path: Path) -> None:
    path = write_tickets(tmp_path / "t.csv", good_rows(6, venue_id="Théâtre"))
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].decode("utf-8").encode("cp1252")  # a line pasted from a legacy export
    lines[5] = lines[5].decode("utf-8").encode("cp1252")
    path.write_bytes(b"\n".join(lines))
    result = check(path)
    assert result.returncode == 0
    assert "mixed encodings: 2 line(s) are not valid UTF-8" in result.stdout
    assert "(line 4, 6)" in result.stdout
    strict = tmp_path / "m.toml"
    strict.write_text('[source]\nencoding = "utf-8"\n')
    refused = check(path, "--mapping", strict)
    assert refused.returncode == 1
    assert "2 line(s) are not valid UTF-8 (line 4, 6)" in refused.stderr


def test_forbidden_column(tmp_path: Path) -> None:
    rows = [dict(r, Achternaam="Jansen", Geslacht="v") for r in good_rows()]
    path = write_tickets(tmp_path / "t.csv", rows, columns=[*COLUMNS, "Achternaam", "Geslacht"])
    result = check(path)
    assert result.returncode == 1
    assert "'Achternaam' (a name), 'Geslacht' (gender)" in result.stderr
    assert "Jansen" not in result.stderr


def test_out_of_range_date(tmp_path: Path) -> None:
    rows = [*good_rows(), ticket_row(ticket_id="X", performance_start="2204-02-15T20:00:00")]
    result = check(write_tickets(tmp_path / "t.csv", rows))
    assert result.returncode == 1
    assert "performance_start: '2204-02-15T20:00:00' is outside 1990-01-01 .." in result.stderr
    assert "row 11" in result.stderr


def test_impossible_date(tmp_path: Path) -> None:
    rows = [*good_rows(), ticket_row(ticket_id="X", order_datetime="2024-02-30T10:00:00")]
    result = check(write_tickets(tmp_path / "t.csv", rows))
    assert result.returncode == 1
    assert "order_datetime: '2024-02-30T10:00:00' is not an ISO date-time" in result.stderr


def test_duplicate_id(tmp_path: Path) -> None:
    rows = [*good_rows(), ticket_row(ticket_id="T3", order_id="O99")]
    result = check(write_tickets(tmp_path / "t.csv", rows))
    assert result.returncode == 1
    assert "ticket_id: 'T3' is already on row 5" in result.stderr


def test_ten_megabyte_field(tmp_path: Path) -> None:
    rows = [*good_rows(), ticket_row(ticket_id="X", discipline="x" * TEN_MB)]
    result = check_as_a_user_would(write_tickets(tmp_path / "t.csv", rows))
    assert result.returncode == 1
    assert f"discipline: the value is {TEN_MB} bytes long" in result.stderr
    assert len(result.stderr) < 20_000  # the value itself is never echoed


def test_every_problem_at_once_with_rows_and_columns(tmp_path: Path) -> None:
    rows = [
        *good_rows(),
        ticket_row(ticket_id="A", price_paid_eur="-3"),
        ticket_row(ticket_id="B", channel="kiosk", price_type="free beer"),
        ticket_row(ticket_id="C", performance_id=""),
    ]
    problems = tmp_path / "problems.csv"
    quarantine = tmp_path / "quarantine.csv"
    result = check(
        write_tickets(tmp_path / "t.csv", rows),
        "--problems",
        problems,
        "--quarantine",
        quarantine,
    )
    assert result.returncode == 1
    for expected in (
        ":row 11: price_paid_eur: '-3' is negative",
        ":row 12: channel: 'kiosk' is not a known channel",
        ":row 12: price_type: 'free beer' is not a known price_type",
        ":row 13: performance_id: the value is empty",
        "3 of 12 rows (25.00%) have problems",
        "(map your codes under [values.channel] in the mapping file; channel codes: online_own,",
    ):
        assert expected in result.stderr, expected
    assert problems.read_text().count("\n") == 5  # a header and four problems
    assert quarantine.stat().st_mode & 0o777 == 0o600  # it holds personal data
    quarantined = quarantine.read_text()
    assert quarantined.count("\n") == 4 and "free beer" in quarantined  # a header, three rows


def test_byte_order_marks_and_binary_files(tmp_path: Path) -> None:
    path = write_tickets(tmp_path / "t.csv", good_rows())
    bom = tmp_path / "bom.csv"
    bom.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert check(bom).returncode == 0
    xlsx = tmp_path / "export.csv"
    xlsx.write_bytes(b"PK\x03\x04" + bytes(100))
    result = check(xlsx)
    assert result.returncode == 1 and "Excel workbook (.xlsx), not CSV" in result.stderr


def test_run_refuses_bad_data_with_the_report(tmp_path: Path, capsys: Any) -> None:
    data = write_tickets(tmp_path / "t.csv", [ticket_row(discipline="opera")])
    config = tmp_path / "node.toml"
    config.write_text(
        f'institution_id = "x"\ninstitution_type = "theatre"\n[data]\ntickets = "{data}"\n'
        '[coordinator]\naddress = "127.0.0.1:1"\n[tls]\ninsecure = true\n'
        f'[ledger]\npath = "{tmp_path / "ledger.sqlite"}"\n'
    )
    assert node_main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'opera' is not a known discipline" in err and "the data cannot be used" in err


@pytest.mark.parametrize("argv", [["check"], ["report", "--out", "x.html"]])
def test_commands_without_data_explain_themselves(argv: list[str], capsys: Any) -> None:
    assert node_main(argv) == 2
    assert "give a data file, or --config" in capsys.readouterr().err


DUTCH_HEADER = [
    "Ticketnummer", "Ordernummer", "Klantnummer", "Besteldatum", "Status", "Verkoopkanaal",
    "Voorstelling", "Aanvang", "Zaal", "Genre", "Tarief", "Prijs", "Postcode", "Land",
    "Geboortejaar", "E-mail", "Naam",
]  # fmt: skip


def dutch_export(path: Path) -> Path:
    genres = ["Toneel", "Klassiek", "Cabaret", "Specials"]
    prices = ["Volle prijs", "CJP", "65+", "Vrijkaart"]
    with path.open("w", newline="", encoding="cp1252") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(DUTCH_HEADER)
        for i in range(40):
            writer.writerow(
                [f"T{i}", f"O{i // 2}", f"K{i // 4}", "02-01-2024 10:00", "Betaald",
                 "Website" if i % 3 else "Kassa", f"V{i % 5}", f"15-02-2024 20:{i % 60:02d}",
                 "Café-zaal", genres[i % 4], prices[i % 4], "25,00", "1012 AB", "Nederland",
                 "1970", f"p{i // 4}@example.nl", "Jansen"]
            )  # fmt: skip
    return path


def test_init_writes_a_starter_that_check_then_guides_to_passing(
    tmp_path: Path, capsys: Any
) -> None:
    from node.config import parse_config
    from node.ingest.mapping import load_mapping

    export = dutch_export(tmp_path / "export.csv")
    mapping, config = tmp_path / "mapping.toml", tmp_path / "node.toml"
    argv = ["init", str(export), "--mapping-out", str(mapping), "--config-out", str(config)]
    assert node_main(argv) == 0
    said = capsys.readouterr().out
    assert "columns that look forbidden: 'Naam' (a name)" in said
    assert "1 house code(s) could not be placed" in said
    assert node_main(argv) == 2  # the files exist now: not replaced without --force
    assert "pass --force" in capsys.readouterr().err

    text = mapping.read_text(encoding="utf-8")
    m = load_mapping(mapping)  # what init writes, the loader reads
    assert m.columns["ticket_id"] == "Ticketnummer" and m.columns["email"] == "E-mail"
    assert m.delimiter == ";" and m.encoding == "auto"
    assert "found not UTF-8: probably Windows-1252" in text
    assert m.datetime_format == "%d-%m-%Y %H:%M"
    assert m.values["discipline"]["klassiek"] == "klassieke_muziek"
    assert m.values["price_type"]["vrijkaart"] == "complimentary"
    assert '# "Specials" = ""   # which discipline?' in text
    cfg = parse_config(__import__("tomllib").loads(config.read_text()), tmp_path)
    assert cfg.data.tickets == export.resolve() and cfg.data.mapping == mapping.resolve()

    first = check(export, "--mapping", mapping)
    assert first.returncode == 1 and "'Naam' (a name)" in first.stderr
    text = text.replace("# ignore = [", "ignore = [")
    mapping.write_text(text, encoding="utf-8")
    second = check(export, "--mapping", mapping)
    assert second.returncode == 1
    assert "'Specials' is not a known discipline" in second.stderr
    mapping.write_text(text.replace('# "Specials" = ""', '"Specials" = "overig"'), "utf-8")
    third = check(export, "--config", config)
    assert third.returncode == 0, third.stderr
    assert "PASSED: 40 ticket rows can be used" in third.stdout
    assert "Jansen" not in third.stdout


def test_check_prints_the_match_key_fingerprint_that_every_node_must_share(
    tmp_path: Path,
) -> None:
    from node.ingest.matchkey import MatchKeySecret

    data = write_tickets(tmp_path / "t.csv", good_rows())
    fingerprints = []
    for name, key in (("a", "ab" * 32), ("b", "cd" * 32)):
        (tmp_path / f"{name}.key").write_text(key)
        (tmp_path / f"{name}.key").chmod(0o600)
        config = tmp_path / f"{name}.toml"
        config.write_text(
            f'institution_id = "x"\ninstitution_type = "theatre"\n[data]\ntickets = "{data}"\n'
            '[coordinator]\naddress = "127.0.0.1:1"\n[tls]\ninsecure = true\n'
            f'[ledger]\npath = "{tmp_path / "ledger.sqlite"}"\n'
            f'[matching]\nkey_file = "{name}.key"\n'
        )
        result = check("--config", config)
        assert result.returncode == 0, result.stderr
        [line] = [x for x in result.stdout.splitlines() if "match-key fingerprint" in x]
        fingerprints.append(line.split(": ")[1])
        secret = MatchKeySecret.load(tmp_path / f"{name}.key")
        assert fingerprints[-1] == secret.fingerprint
        assert key[:16] not in result.stdout  # the key itself is never printed
    assert fingerprints[0] != fingerprints[1]
    # Without a key file there is nothing to compare, and nothing is printed.
    assert "fingerprint" not in check(data).stdout
