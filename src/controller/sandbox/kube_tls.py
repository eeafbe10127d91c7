"""The Kubernetes API simulator's own PKI and admin credential, kept in its state directory.

A throwaway CA signs a server certificate for 127.0.0.1 and localhost, so kubectl and the official
client verify the simulator's TLS the way they verify a real API server. Private keys and the
admin token are written with mode 0600. Calling `ensure_pki` again reuses what is there.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class SimulatorFiles:
    """Where the simulator keeps its CA, server certificate, admin token and port."""

    state_dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.state_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.state_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.state_dir / "server.key"

    @property
    def admin_token(self) -> Path:
        return self.state_dir / "admin.token"

    @property
    def port(self) -> Path:
        return self.state_dir / "port"

    @property
    def log(self) -> Path:
        return self.state_dir / "kube-sim.log"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bgtui sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _make_pki(files: SimulatorFiles) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bgtui-sandbox-kube-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver-simulator"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.ca_key, _key_pem(ca_key))
    _write_private(files.server_key, _key_pem(server_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    # The CA certificate last: its presence marks a complete set.
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(state_dir: Path) -> SimulatorFiles:
    """Creates the CA, server certificate and admin token under `state_dir` unless present."""
    state_dir.mkdir(parents=True, exist_ok=True)
    files = SimulatorFiles(state_dir)
    if not (files.ca_cert.exists() and files.server_key.exists() and files.server_cert.exists()):
        _make_pki(files)
    if not files.admin_token.exists():
        _write_private(files.admin_token, ("sandbox-admin." + secrets.token_urlsafe(32)).encode())
    return files
