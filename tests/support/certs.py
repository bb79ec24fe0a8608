"""A throw-away PKI for TLS tests, made with ``cryptography`` at test time (nothing checked in).

``make_pki(dir)`` writes PEM files into ``dir`` and returns their paths:

- ``ca_file``: a self-signed CA; ``server_cert``/``server_key``: a server certificate it signed
  for ``localhost`` and the IP ``127.0.0.1`` (subjectAltName), as a client verifies them;
- ``client_cert``/``client_key``: a client certificate (extendedKeyUsage clientAuth) from the CA;
- ``other_ca_file``: a second CA that signed nothing here: trusting it must fail verification.

``Pki.issue_server(stem, dns=..., ips=...)`` signs further server certificates (a certificate
for another name, say), ``Pki.issue_client(stem)`` further client certificates. Keys are EC P-256 (fast to make), unencrypted, written mode 0600.
Certificates are valid from an hour ago (clock skew) for a day.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "Pki", "make_pki", "write_key"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-agent tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=1)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """The key as unencrypted PKCS#8 PEM, created mode 0600 (never readable by others, even briefly)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that existed
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class CA:
    """A self-signed certificate authority that can sign server and client certificates."""

    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common_name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = (),
              client: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate and its key; ``client`` makes it a client (not server) certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _validity()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


@dataclass
class Pki:
    dir: Path
    ca: CA
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path

    def issue_server(self, stem: str, *, dns: Iterable[str] = (), ips: Iterable[str] = ()) -> tuple[Path, Path]:
        """Another server certificate from the test CA: (cert path, key path)."""
        cert, key = self.ca.issue(stem, dns=dns, ips=ips)
        return _write_cert(self.dir / f"{stem}.crt", cert), write_key(self.dir / f"{stem}.key", key)

    def issue_client(self, stem: str) -> tuple[Path, Path]:
        """Another client certificate from the test CA: (cert path, key path)."""
        cert, key = self.ca.issue(stem, client=True)
        return _write_cert(self.dir / f"{stem}.crt", cert), write_key(self.dir / f"{stem}.key", key)

    def broker_tls(self, *, require_certificate: bool = True, certfile: Path | None = None,
                   keyfile: Path | None = None) -> dict[str, object]:
        """The ``tls`` option of ``support.broker.Mosquitto`` for this PKI."""
        return {"cafile": self.ca_file, "certfile": certfile or self.server_cert,
                "keyfile": keyfile or self.server_key, "require_certificate": require_certificate}


def make_pki(directory: Path) -> Pki:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = CA("edge-agent test CA")
    other = CA("an unrelated CA")
    server, server_key = ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])
    client, client_key = ca.issue("edge-agent-gw-001", client=True)
    return Pki(
        dir=directory, ca=ca,
        ca_file=_write_cert(directory / "ca.crt", ca.cert),
        server_cert=_write_cert(directory / "server.crt", server),
        server_key=write_key(directory / "server.key", server_key),
        client_cert=_write_cert(directory / "client.crt", client),
        client_key=write_key(directory / "client.key", client_key),
        other_ca_file=_write_cert(directory / "other-ca.crt", other.cert),
    )
