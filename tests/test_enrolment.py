"""The sector CA and enrolment, through the real command lines: ca init, node init, ca sign,
ca revoke, ca list, ca crl; the certificate profile; the revocation list and its reloading."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coordinator.ca import CaError, CertificateAuthority
from coordinator.cli import main as coordinator_main
from deploy.devcerts import make_dev_pki
from node.cli import main as node_main
from node.enrol import check_own_certificate
from protocols.certificates import (
    CertificateError,
    CrlFile,
    RevocationList,
    institution_of,
    node_request,
    serial_text,
)
from protocols.identity import IdentityError, PeerVerifier, Signer, statement


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def sector_ca(tmp_path: Path) -> Path:
    folder = tmp_path / "ca"
    assert coordinator_main(["ca", "init", str(folder), "--host", "coord.example.org"]) == 0
    return folder


def _enrol(tmp_path: Path, ca: Path, institution: str) -> tuple[Path, Path]:
    """node init --institution-id, then ca sign: the two commands of a real enrolment."""
    site = tmp_path / institution
    key, csr = site / "certs" / "node.key", site / "certs" / "node.csr"
    argv = ["init", "--institution-id", institution, "--key-out", str(key), "--csr-out", str(csr)]
    assert node_main(argv) == 0
    assert coordinator_main(["ca", "sign", str(ca), str(csr)]) == 0
    return key, csr.with_suffix(".pem")


def test_ca_init_makes_the_ca_its_crl_and_the_coordinator_certificate(
    sector_ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _mode(sector_ca / "ca.key") == 0o600
    assert _mode(sector_ca) == 0o700
    ca = _cert(sector_ca / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    crl = RevocationList.parse((sector_ca / "crl.pem").read_bytes(), ca, "crl.pem")
    assert crl.revoked == {}
    assert crl.next_update is not None and crl.next_update > dt.datetime.now(dt.UTC)

    server = _cert(sector_ca / "coordinator.pem")
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["coord.example.org"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert institution_of(server) is None  # it can never pass as a node
    assert _mode(sector_ca / "coordinator.key") == 0o600

    # A CA is made once: a second init in the same folder is refused, nothing replaced.
    before = (sector_ca / "ca.key").read_bytes()
    capsys.readouterr()
    assert coordinator_main(["ca", "init", str(sector_ca)]) == 2
    assert "holds a CA already" in capsys.readouterr().err
    assert (sector_ca / "ca.key").read_bytes() == before


def test_enrolment_issues_a_certificate_bound_to_the_institution(
    tmp_path: Path, sector_ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert_path = _enrol(tmp_path, sector_ca, "rijksmuseum")
    out = capsys.readouterr().out
    assert "never leaves this machine" in out and "certified 'rijksmuseum'" in out
    assert _mode(key) == 0o600
    cert = _cert(cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "rijksmuseum"
    assert institution_of(cert) == "rijksmuseum"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The node's own check passes, and the identity signs what peers verify.
    assert check_own_certificate("rijksmuseum", sector_ca / "ca.pem", cert_path, key) == []
    signer = Signer.from_files("rijksmuseum", cert_path, key)
    message = statement("test", "x")
    PeerVerifier.from_file(sector_ca / "ca.pem").verify(
        signer.certificate_pem, "rijksmuseum", message, signer.sign(message)
    )
    # The key is never overwritten: a second init with the same files is refused.
    argv = ["init", "--institution-id", "rijksmuseum", "--key-out", str(key)]
    argv += ["--csr-out", str(tmp_path / "other.csr")]
    before = key.read_bytes()
    assert node_main(argv) == 2
    assert "never replaced" in capsys.readouterr().err
    assert key.read_bytes() == before


def test_init_with_an_export_also_fills_in_the_identity(tmp_path: Path) -> None:
    from tests.conftest import ticket_row, write_tickets

    export = write_tickets(tmp_path / "export.csv", [ticket_row()])
    config = tmp_path / "node.toml"
    argv = [
        "init", str(export), "--institution-id", "stadsschouwburg-utrecht",
        "--mapping-out", str(tmp_path / "mapping.toml"), "--config-out", str(config),
        "--key-out", str(tmp_path / "certs" / "node.key"),
        "--csr-out", str(tmp_path / "certs" / "node.csr"),
    ]  # fmt: skip
    assert node_main(argv) == 0
    text = config.read_text()
    assert 'institution_id = "stadsschouwburg-utrecht"' in text
    assert 'key = "certs/node.key"' in text
    assert (tmp_path / "certs" / "node.csr").is_file()


def test_init_without_export_or_id_says_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert node_main(["init"]) == 2
    assert "--institution-id" in capsys.readouterr().err


def test_requests_the_ca_refuses(tmp_path: Path, sector_ca: Path) -> None:
    ca = CertificateAuthority.open(sector_ca)
    key = ec.generate_private_key(ec.SECP256R1())

    def csr(cn: str, uris: list[str]) -> bytes:
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        )
        if uris:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                critical=False,
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    with pytest.raises(CaError, match="not a valid institution id"):
        ca.sign_request(csr("Rijks Museum!", []))
    with pytest.raises(CaError, match="only urn:publiek:institution:inst-01 may be named"):
        ca.sign_request(csr("inst-01", ["urn:publiek:institution:inst-02"]))
    with pytest.raises(CaError, match="not a certificate request"):
        ca.sign_request(b"hello")
    weak = ec.generate_private_key(ec.SECP256K1())
    bad_curve = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inst-01")]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CaError, match="P-256 or P-384"):
        ca.sign_request(bad_curve)
    # A request without the URI still gets it: the profile is the CA's, not the requester's.
    cert = ca.sign_request(csr("inst-01", []))
    assert institution_of(cert) == "inst-01"
    with pytest.raises(CertificateError, match="not a valid institution id"):
        node_request(key, "INST 01")


def test_revocation_through_the_command_line(
    tmp_path: Path, sector_ca: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert_path = _enrol(tmp_path, sector_ca, "inst-07")
    _enrol(tmp_path, sector_ca, "inst-08")
    serial = _cert(cert_path).serial_number
    capsys.readouterr()
    argv = ["ca", "revoke", str(sector_ca), "--institution", "inst-07"]
    assert coordinator_main([*argv, "--reason", "key_compromise"]) == 0
    assert f"{serial_text(serial)}: revoked" in capsys.readouterr().out
    ca_cert = _cert(sector_ca / "ca.pem")
    crl = RevocationList.parse((sector_ca / "crl.pem").read_bytes(), ca_cert, "crl")
    assert set(crl.revoked) == {serial}
    assert crl.revoked[serial].reason == "key_compromise"
    assert crl.number == 2

    assert coordinator_main(["ca", "list", str(sector_ca)]) == 0
    listing = capsys.readouterr().out
    assert "inst-07" in listing and "revoked" in listing
    assert "inst-08" in listing and "valid" in listing and "coordinator" in listing

    # Nothing left to revoke, an unknown serial: clear refusals.
    assert coordinator_main(argv) == 2
    assert "no certificate that is not revoked" in capsys.readouterr().err
    assert coordinator_main(["ca", "revoke", str(sector_ca), "--serial", "abc123"]) == 2
    assert "issued no certificate with serial abc123" in capsys.readouterr().err
    # The compromised key is never certified again.
    again = tmp_path / "again.csr"
    again.write_bytes(
        node_request(
            serialization.load_pem_private_key(key.read_bytes(), None),  # type: ignore[arg-type]
            "inst-07",
        ).public_bytes(serialization.Encoding.PEM)
    )
    assert coordinator_main(["ca", "sign", str(sector_ca), str(again)]) == 2
    assert "which is revoked" in capsys.readouterr().err

    # Renewing the list keeps the revocation and moves the dates on.
    assert coordinator_main(["ca", "crl", str(sector_ca), "--days", "60"]) == 0
    renewed = RevocationList.parse((sector_ca / "crl.pem").read_bytes(), ca_cert, "crl")
    assert set(renewed.revoked) == {serial} and renewed.number == 3
    assert renewed.next_update is not None
    assert renewed.next_update - renewed.last_update == dt.timedelta(days=60)


def test_revoke_takes_a_serial_as_ca_list_shows_it_or_its_first_digits(
    tmp_path: Path,
    sector_ca: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CA draws serials at random, so two that start alike are arranged here (the first six
    # digits shared, the seventh not); the rest is the real node init and ca sign.
    first, second, third = 0x3F2A9C41 << 128 | 1, 0x3F2A9C77 << 128 | 2, 0x7BE01D5C << 128 | 3
    chosen = iter([first, second, third])
    monkeypatch.setattr(x509, "random_serial_number", lambda: next(chosen))
    for institution in ("inst-07", "inst-08", "inst-09"):
        _enrol(tmp_path, sector_ca, institution)
    capsys.readouterr()
    assert coordinator_main(["ca", "list", str(sector_ca)]) == 0
    listing = capsys.readouterr().out
    assert all(serial_text(s) in listing for s in (first, second, third))
    ca_cert = _cert(sector_ca / "ca.pem")

    def revoked() -> set[int]:
        return set(RevocationList.parse((sector_ca / "crl.pem").read_bytes(), ca_cert, "").revoked)

    def revoke(*serials: str) -> tuple[int, str, str]:
        argv = ["ca", "revoke", str(sector_ca), "--reason", "superseded"]
        code = coordinator_main([*argv, *(a for s in serials for a in ("--serial", s))])
        out, err = capsys.readouterr()
        return code, out, err

    # A prefix two serials share: refused, naming both with their subjects.
    code, _, err = revoke("3f2a9c")
    assert code == 2
    assert f"serial 3f2a9c is the start of 2 serials: {serial_text(first)} (inst-07)" in err
    assert f"{serial_text(second)} (inst-08); give more of its digits" in err
    # Too few digits, not hexadecimal, unknown: every problem in one message, nothing revoked.
    code, _, err = revoke("7be01", "7be01g", "abcdef")
    assert code == 2
    assert "this CA issued no certificate with serial abcdef" in err
    assert "serial 7be01: give at least 6 of its hexadecimal digits" in err
    assert "serial '7be01g' is not hexadecimal" in err
    assert revoked() == set()

    # A unique prefix, in either case; the output names the whole serial.
    code, out, _ = revoke("7BE01D")
    assert code == 0 and out.startswith(f"  {serial_text(third)}: revoked\n")
    code, out, _ = revoke("3f2a9c7")
    assert code == 0 and f"{serial_text(second)}: revoked" in out
    # The whole serial as openssl prints it (bytes in upper case, colons between).
    upper = f"{first:X}"
    code, out, _ = revoke(":".join(upper[i : i + 2] for i in range(0, len(upper), 2)))
    assert code == 0 and f"{serial_text(first)}: revoked" in out
    assert revoked() == {first, second, third}
    # The same certificate named twice is revoked (here: reported) once.
    code, out, _ = revoke("7be01d", "7BE01D5C")
    assert code == 0 and out.count(serial_text(third)) == 1 and "was revoked already" in out


def test_a_passphrase_protected_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ca"
    monkeypatch.setenv("CA_PASS", "correct horse battery staple")
    argv = ["ca", "init", str(folder), "--passphrase-env", "CA_PASS"]
    assert coordinator_main(argv) == 0
    assert b"ENCRYPTED" in (folder / "ca.key").read_bytes()
    capsys.readouterr()
    assert coordinator_main(["ca", "list", str(folder)]) == 2
    assert "protected by a passphrase" in capsys.readouterr().err
    monkeypatch.setenv("CA_PASS", "wrong")
    assert coordinator_main(["ca", "list", str(folder), "--passphrase-env", "CA_PASS"]) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.delenv("CA_PASS")
    assert coordinator_main(["ca", "list", str(folder), "--passphrase-env", "CA_PASS"]) == 2
    assert "is not set" in capsys.readouterr().err


def test_own_certificate_check_names_what_is_wrong(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])
    other = make_dev_pki(tmp_path / "other", ["inst-01"], ca_name="another sector CA")
    n1, n2 = pki.nodes["inst-01"], pki.nodes["inst-02"]
    assert check_own_certificate("inst-01", pki.ca, n1.cert, n1.key) == []
    with pytest.raises(IdentityError, match=r"not issued by the sector CA .*another sector CA"):
        check_own_certificate("inst-01", pki.ca, other.nodes["inst-01"].cert, n1.key)
    with pytest.raises(IdentityError, match="is for 'inst-01', not 'inst-02'"):
        check_own_certificate("inst-02", pki.ca, n1.cert, n1.key)
    with pytest.raises(IdentityError, match="does not belong to the certificate"):
        check_own_certificate("inst-01", pki.ca, n1.cert, n2.key)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)  # dev certificates live 7 days
    with pytest.raises(IdentityError, match="expired on"):
        check_own_certificate("inst-01", pki.ca, n1.cert, n1.key, now=later)
    warnings = check_own_certificate("inst-01", pki.ca, n1.cert, n1.key)
    assert warnings == []
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)  # under a third of 7 days left
    (warning,) = check_own_certificate("inst-01", pki.ca, n1.cert, n1.key, now=soon)
    assert "expires in" in warning
    # The coordinator's certificate is not a node certificate, whatever it is called.
    with pytest.raises(IdentityError, match="does not carry the node name"):
        check_own_certificate("coordinator", pki.ca, pki.server.cert, pki.server.key)


def test_the_peer_verifier_honours_the_revocation_list(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])
    verifier = PeerVerifier.from_file(pki.ca, pki.crl)
    signer = Signer.from_files("inst-01", pki.nodes["inst-01"].cert, pki.nodes["inst-01"].key)
    message = statement("keys", "round-1")
    signature = signer.sign(message)
    verifier.verify(signer.certificate_pem, "inst-01", message, signature)  # accepted, cached
    serial = _cert(pki.nodes["inst-01"].cert).serial_number
    pki.authority().revoke([serial], "key_compromise")
    # Revoked after it was accepted once: refused from now on (the list is re-read).
    with pytest.raises(IdentityError, match=r"revoked on .* reason: key_compromise"):
        verifier.verify(signer.certificate_pem, "inst-01", message, signature)
    other = Signer.from_files("inst-02", pki.nodes["inst-02"].cert, pki.nodes["inst-02"].key)
    verifier.verify(other.certificate_pem, "inst-02", message, other.sign(message))
    # The coordinator's certificate never signs as a node, even under its own name.
    server_pem = pki.server.cert.read_bytes()
    with pytest.raises(IdentityError, match="presented as 'coordinator'"):
        verifier.verify(server_pem, "coordinator", message, b"")


def test_a_crl_file_only_ever_grows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01", "inst-02"])
    other = make_dev_pki(tmp_path / "other", [], ca_name="another sector CA")
    crl = CrlFile.open(pki.crl, pki.ca.read_bytes())
    s1 = _cert(pki.nodes["inst-01"].cert).serial_number
    s2 = _cert(pki.nodes["inst-02"].cert).serial_number
    old = pki.crl.read_bytes()
    pki.authority().revoke([s1])
    assert crl.revocation(s1) is not None and crl.revocation(s2) is None

    def swap(data: bytes) -> None:
        pki.crl.write_bytes(data)
        # A different size is enough for the file to count as changed; force the time too.
        os.utime(pki.crl, ns=(1, 1))

    with caplog.at_level(logging.ERROR, logger="publiek.identity"):
        swap(old)  # an older list (a rollback would undo the revocation)
        assert crl.revocation(s1) is not None
        assert "older than the one in use" in caplog.text
        swap(other.crl.read_bytes())  # not the sector CA's
        assert crl.revocation(s1) is not None
        assert "not by the sector CA" in caplog.text
        swap(b"garbage")
        assert crl.revocation(s1) is not None
        assert "not a certificate revocation list" in caplog.text
    # A CRL named at start that is not the CA's is a configuration error, not a warning.
    with pytest.raises(CertificateError, match="not by the sector CA"):
        CrlFile.open(other.crl, pki.ca.read_bytes())
    with pytest.raises(CertificateError, match="cannot be read"):
        CrlFile.open(tmp_path / "missing.pem", pki.ca.read_bytes())


def test_a_crl_past_its_next_update_is_still_honoured_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["inst-01"])
    ca = pki.authority()
    serial = _cert(pki.nodes["inst-01"].cert).serial_number
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=90)
    ca.revoke([serial], now=long_ago)  # signed 90 days ago, valid for 30
    with caplog.at_level(logging.WARNING, logger="publiek.identity"):
        crl = CrlFile.open(pki.crl, pki.ca.read_bytes())
        assert crl.revocation(serial) is not None
    assert "was due for renewal" in caplog.text
