"""A local development CA and a server certificate for 127.0.0.1/localhost, made once and reused,
and a CA bundle for the clients: the system's CAs plus the development CA.

The JS server SDK refuses http:// endpoints, so local development needs https that Node trusts:
NODE_EXTRA_CA_CERTS (Node) adds the CA file to Node's own store. REQUESTS_CA_BUNDLE (Python REST)
and SSL_CERT_FILE (Python websockets, OpenSSL) replace the store instead, so they get the bundle:
pointed at the CA alone, every other https site (pip's index included) would fail verification.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DevCertificate", "ensure_dev_certificate", "server_ssl_context", "system_ca_certificates"]

BUNDLE_NAME = "ca-bundle.pem"
# Where distributions keep their CA bundle, after OpenSSL's own default (Debian and Ubuntu, Fedora
# and RHEL, openSUSE, Alpine and the BSDs).
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem")
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class DevCertificate:
    ca_file: Path
    cert_file: Path
    key_file: Path
    bundle_file: Path  # the system's CAs, then ca_file: for REQUESTS_CA_BUNDLE and SSL_CERT_FILE
    system_cas: Path | None  # where the bundle's system CAs come from (None: none found, ca_file alone)


def ensure_dev_certificate(directory: Path,
                           hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")) -> DevCertificate:
    """The certificates in directory, made if missing; the bundle is written again at every call
    (when its content changes), so it follows the system's CA updates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    if not all(p.exists() for p in (ca_file, cert_file, key_file)):
        _write_certificates(ca_file, cert_file, key_file, hosts)
    bundle_file = directory / BUNDLE_NAME
    system_pem, source = system_ca_certificates(exclude=bundle_file)
    parts = [system_pem.rstrip(b"\n") + b"\n"] if system_pem else []
    _write_if_changed(bundle_file, b"".join([*parts, ca_file.read_bytes()]))
    return DevCertificate(ca_file, cert_file, key_file, bundle_file, source)


def system_ca_certificates(exclude: Path | None = None) -> tuple[bytes, Path | None]:
    """The PEM CA certificates this machine's OpenSSL trusts, and the file or directory they come
    from: $SSL_CERT_FILE, else OpenSSL's default file, else a distribution's bundle, else the PEM
    files in OpenSSL's certificate directory. `exclude` (the bundle itself, when $SSL_CERT_FILE
    already names it) is skipped. (b"", None) when there is none."""
    paths = ssl.get_default_verify_paths()
    skip = exclude.resolve() if exclude else None
    for name in dict.fromkeys(c for c in (paths.cafile, paths.openssl_cafile, *SYSTEM_CA_FILES) if c):
        path = Path(name)
        try:
            if path.resolve() == skip or not path.is_file():
                continue
            pem = path.read_bytes()
        except OSError:
            continue
        if _PEM_CERTIFICATE in pem:
            return pem, path
    for name in dict.fromkeys(c for c in (paths.capath, paths.openssl_capath) if c):
        directory = Path(name)
        try:
            files = sorted(f for f in directory.iterdir() if f.is_file())
        except OSError:
            continue
        certificates: dict[bytes, None] = {}  # ordered, once each: hashed names link to the same files
        for file in files:
            try:
                pem = file.read_bytes()
            except OSError:
                continue
            if _PEM_CERTIFICATE in pem:
                certificates[pem.rstrip(b"\n") + b"\n"] = None
        if certificates:
            return b"".join(certificates), directory
    return b"", None


def server_ssl_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def _write_if_changed(path: Path, content: bytes) -> None:
    """Write through a temporary file and a rename, so a client never reads half a bundle."""
    try:
        if path.read_bytes() == content:
            return
    except OSError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_certificates(ca_file: Path, cert_file: Path, key_file: Path, hosts: tuple[str, ...]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastpush local development CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
