"""Fixtures for the update channel: a CA and server certificate made here, vendor trust, licenses, and the
real ``corral-update-server`` process serving HTTPS on 127.0.0.1 (started and stopped by the fixture)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from updater.domain import keyring as keyring_mod
from updater.domain import license as license_mod
from updater.domain import signing
from updater.domain.request_auth import sign_request
from updater.services.channel import ChannelClient, ChannelSettings

REPO = Path(__file__).resolve().parents[2]
SERVER_CLI = [sys.executable, "-m", "updater.server.cli"]


# --- TLS: a CA the tests generate and a certificate for 127.0.0.1
@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path  # a CA the server's certificate does not chain to


def _ca(name: str, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    directory = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _ca("Corral test update CA", now)
    _other_key, other_cert = _ca("Some other CA", now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "other-ca.pem").write_bytes(other_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(server_cert.public_bytes(pem))
    key_file = directory / "server.key"
    key_file.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return Tls(directory / "ca.pem", directory / "server.pem", key_file, directory / "other-ca.pem")


# --- vendor trust and licenses (part A's documents, made with part A's functions)
@dataclass
class Vendor:
    directory: Path
    root_key: Ed25519PrivateKey
    license_key: Ed25519PrivateKey
    release_key: Ed25519PrivateKey
    trust_root: Path = field(init=False)
    keyring: Path = field(init=False)

    def __post_init__(self) -> None:
        self.trust_root = self.directory / "trust-root.json"
        self.keyring = self.directory / "keyring.json"

    def issue_license(
        self,
        license_id: str,
        *,
        channels: list[str],
        updates_until: dt.date | None = None,
        expires: dt.date | None = None,
        issued: dt.date | None = None,
        signer: Ed25519PrivateKey | None = None,
    ) -> tuple[Path, Path]:
        """Write ``<id>.license`` and ``<id>.key`` as the vendor's license tool does; return their paths."""
        today = dt.datetime.now(dt.UTC).date()
        entitlement_key = license_mod.generate_entitlement_key()
        payload = license_mod.license_payload(
            license_id=license_id,
            customer="ACME Test Customer",
            channels=channels,
            node_entitlement=16,
            updates_until=updates_until or today + dt.timedelta(days=365),
            expires=expires or today + dt.timedelta(days=400),
            issued=issued or today - dt.timedelta(days=1),
            entitlement_key=entitlement_key,
        )
        document = signing.make_envelope(
            payload, [signing.sign(signer or self.license_key, "license", payload)]
        )
        license_file = self.directory / f"{license_id}.license"
        key_file = self.directory / f"{license_id}.key"
        license_file.write_bytes(document)
        key_file.write_text(license_mod.format_entitlement_key(entitlement_key) + "\n")
        key_file.chmod(0o600)
        return license_file, key_file


@pytest.fixture(scope="session")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Vendor:
    directory = tmp_path_factory.mktemp("vendor")
    root_key, license_key, release_key = (Ed25519PrivateKey.generate() for _ in range(3))
    v = Vendor(directory, root_key, license_key, release_key)
    root_pub = signing.public_raw(root_key)
    v.trust_root.write_bytes(keyring_mod.TrustRoot({signing.keyid_of(root_pub): root_pub}, 1).to_bytes())
    keys = {
        signing.keyid_of(signing.public_raw(k)): signing.public_raw(k) for k in (license_key, release_key)
    }
    license_id = signing.keyid_of(signing.public_raw(license_key))
    release_id = signing.keyid_of(signing.public_raw(release_key))
    payload = keyring_mod.keyring_payload(
        version=1,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        keys=keys,
        roles={"release": ([release_id], 1), "license": ([license_id], 1)},
        revoked=[],
    )
    v.keyring.write_bytes(signing.make_envelope(payload, [signing.sign(root_key, "keyring", payload)]))
    return v


# --- the server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SERVER_CLI, "--home", str(home), *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"corral-update-server {' '.join(args)} failed: {result.stderr}")
    return result


@dataclass
class UpdateServer:
    home: Path
    url: str
    tls: Tls
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.home, *args, check=check)

    def metadata_dir(self, channel: str) -> Path:
        return self.home / "channels" / channel / "metadata"

    def targets_dir(self, channel: str) -> Path:
        return self.home / "channels" / channel / "targets"

    def root(self, channel: str) -> bytes:
        return (self.metadata_dir(channel) / "1.root.json").read_bytes()

    def add_license(self, license_file: Path, key_file: Path) -> None:
        self.cli("license", "add", str(license_file), str(key_file))

    def client(self, license_file: Path, key_file: Path, channel: str, state_dir: Path) -> ChannelClient:
        lic = license_mod.parse_license_payload(signing.open_envelope(license_file.read_bytes(), what="l")[0])
        key = license_mod.derive_request_key(license_mod.parse_entitlement_key(key_file.read_text()))
        return ChannelClient(
            ChannelSettings(
                base_url=self.url,
                channel=channel,
                license_id=lic.license_id,
                request_key=key,
                ca_file=self.tls.ca_file,
                state_dir=state_dir,
                trusted_root=self.root(channel),
            )
        )

    def get(
        self, path: str, *, headers: dict[str, str] | None = None, ca_file: Path | None = None
    ) -> urllib3.BaseHTTPResponse:
        pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file or self.tls.ca_file))
        return pool.request("GET", self.url + path, headers=headers or {}, retries=False, redirect=False)

    def signed_headers(self, key_file: Path, license_id: str, path: str, **kwargs: object) -> dict[str, str]:
        key = license_mod.derive_request_key(license_mod.parse_entitlement_key(key_file.read_text()))
        now = kwargs.pop("now", time.time())
        return sign_request(key, license_id=license_id, method="GET", path=path, now=now, **kwargs)  # type: ignore[arg-type]

    def start(self, *extra: str) -> None:
        port = int(self.url.rsplit(":", 1)[1])
        self.log = self.home / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    *SERVER_CLI,
                    "--home",
                    str(self.home),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--cert",
                    str(self.tls.cert_file),
                    "--key",
                    str(self.tls.key_file),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"update server exited: {self.log.read_text()}")
            try:
                if self.get("/v1/health").status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"update server did not answer within 30 s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


@pytest.fixture
def make_server(tmp_path: Path, tls: Tls, vendor: Vendor) -> Iterator[object]:
    servers: list[UpdateServer] = []

    def make(
        *, channels: tuple[str, ...] = ("stable", "beta"), timestamp_expiry: float = 86400, start: bool = True
    ) -> UpdateServer:
        home = tmp_path / f"server{len(servers)}"
        channel_args = [arg for c in channels for arg in ("--channel", c)]
        run_cli(
            home,
            "init",
            "--trust-root",
            str(vendor.trust_root),
            "--keyring",
            str(vendor.keyring),
            "--timestamp-expiry",
            str(timestamp_expiry),
            *channel_args,
        )
        server = UpdateServer(home=home, url=f"https://127.0.0.1:{free_port()}", tls=tls)
        servers.append(server)
        if start:
            server.start("--refresh-timestamp-every", "0")
        return server

    yield make
    for server in servers:
        server.stop()
