"""`--dev-cert`: REQUESTS_CA_BUNDLE and SSL_CERT_FILE replace a client's CA store, so the hint names a
bundle of the system's CAs plus the development CA, never the development CA alone (which would
make every other https site, pip's index included, fail verification)."""
from __future__ import annotations

import shlex
import signal
import ssl
import urllib.request
from pathlib import Path

import pytest

from fastpush.devcert import ensure_dev_certificate, system_ca_certificates
from tests.cli_process import ServeProcess


def _certificates(pem_file: Path) -> set[bytes]:
    """The DER certificates a client that trusts pem_file trusts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pem_file))
    return {bytes(der) for der in context.get_ca_certs(binary_form=True)}


def test_the_bundle_holds_the_system_cas_and_the_development_ca(tmp_path):
    cert = ensure_dev_certificate(tmp_path / "dev")
    assert cert.bundle_file == tmp_path / "dev" / "ca-bundle.pem"
    system_pem, source = system_ca_certificates()
    if source is None:
        pytest.skip("this machine has no system CA certificates")
    assert cert.system_cas == source
    system = _certificates(source) if source.is_file() else set()
    bundle = _certificates(cert.bundle_file)
    (development,) = _certificates(cert.ca_file)
    assert development in bundle
    assert system <= bundle
    assert len(bundle) >= 2
    assert cert.bundle_file.read_bytes().startswith(system_pem.rstrip(b"\n"))


def test_the_system_cas_are_what_ssl_cert_file_names(tmp_path, monkeypatch):
    """A shell's own SSL_CERT_FILE (e.g. a company CA) stays trusted through the bundle."""
    other = ensure_dev_certificate(tmp_path / "other").ca_file  # stands for the shell's CA file
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    cert = ensure_dev_certificate(tmp_path / "dev")
    assert cert.system_cas == other
    assert _certificates(cert.bundle_file) == _certificates(other) | _certificates(cert.ca_file)


def test_a_bundle_already_exported_is_not_read_into_itself(tmp_path, monkeypatch):
    first = ensure_dev_certificate(tmp_path / "dev")
    content = first.bundle_file.read_bytes()
    monkeypatch.setenv("SSL_CERT_FILE", str(first.bundle_file))  # the user followed the hint
    again = ensure_dev_certificate(tmp_path / "dev")
    assert again.system_cas != first.bundle_file
    assert again.bundle_file.read_bytes() == content


def test_serve_prints_a_hint_naming_the_bundle_and_the_bundle_verifies_the_server(tmp_path):
    directory = tmp_path / "dev cert"  # a space: the printed exports must still be one shell word each
    server = ServeProcess("--dev-cert", str(directory))
    try:
        (hint,) = [line for line in server.output if line.startswith("Development CA: ")]
        exports = dict(word.split("=", 1) for word in shlex.split(hint.split("export ", 1)[1].split(" (")[0]))
        assert exports == {"NODE_EXTRA_CA_CERTS": str(directory / "ca.pem"),
                           "REQUESTS_CA_BUNDLE": str(directory / "ca-bundle.pem"),
                           "SSL_CERT_FILE": str(directory / "ca-bundle.pem")}
        assert "the development CA" in hint
        endpoint = server.connection_string.split(";")[0].removeprefix("Endpoint=")
        assert endpoint.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=exports["SSL_CERT_FILE"])
        with urllib.request.urlopen(f"{endpoint}/api/health", context=context, timeout=10) as response:
            assert response.status == 200
    finally:
        assert server.stop(signal.SIGTERM) == 0
