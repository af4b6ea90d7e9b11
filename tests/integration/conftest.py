"""Fixtures for the update channel: a CA and server certificate made here, vendor trust, licenses, and the
real ``corral-update-server`` process serving HTTPS on 127.0.0.1 (started and stopped by the fixture)."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
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

from tests.support.net import free_port
from updater.domain import license as license_mod
from updater.domain import signing
from updater.domain.keyring import TrustStore
from updater.domain.request_auth import sign_request
from updater.services.bundles import reader
from updater.services.channel.client import ChannelClient, ChannelSettings
from updater.services.vendor import keys as vendor_service
from updater.services.vendor import writer
from updater.services.vendor.keys import VendorDir

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


# --- vendor trust, licenses and bundles (part A's vendor tools, called as functions)
@dataclass
class Vendor:
    directory: Path
    work: Path
    trust_root: Path = field(init=False)
    keyring: Path = field(init=False)

    def __post_init__(self) -> None:
        self.trust_root = VendorDir(self.directory).trust_root
        self.keyring = VendorDir(self.directory).keyring

    def trust(self) -> TrustStore:
        now = dt.datetime.now(dt.UTC)
        return TrustStore.load(self.trust_root.read_bytes(), self.keyring.read_bytes(), now=now)

    def issue_license(
        self,
        license_id: str,
        *,
        channels: list[str],
        updates_until: dt.date | None = None,
        expires: dt.date | None = None,
        issued_days_ago: int = 1,
    ) -> tuple[Path, Path]:
        """``corral-bundle license issue``: write ``<id>.license`` and ``<id>.key``; return their paths."""
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=issued_days_ago)
        _lic, license_file, key_file = vendor_service.issue_license(
            self.directory,
            Path(tempfile.mkdtemp(prefix="licenses-", dir=self.work)),
            now=now,
            customer="ACME Test Customer",
            channels=channels,
            node_entitlement=16,
            updates_until=updates_until or now.date() + dt.timedelta(days=365),
            expires=expires or now.date() + dt.timedelta(days=400),
            license_id=license_id,
        )
        return license_file, key_file

    def forge_license(self, license_id: str, *, channels: list[str]) -> tuple[Path, Path]:
        """A well-formed license signed by a key the vendor keyring does not hold."""
        today = dt.datetime.now(dt.UTC).date()
        entitlement_key = license_mod.generate_entitlement_key()
        payload = license_mod.license_payload(
            license_id=license_id,
            customer="Mallory",
            channels=channels,
            node_entitlement=16,
            updates_until=today + dt.timedelta(days=365),
            expires=today + dt.timedelta(days=365),
            issued=today,
            entitlement_key=entitlement_key,
        )
        signature = signing.sign(Ed25519PrivateKey.generate(), "license", payload)
        license_file = self.work / f"{license_id}.license"
        key_file = self.work / f"{license_id}.key"
        license_file.write_bytes(signing.make_envelope(payload, [signature]))
        key_file.write_text(license_mod.format_entitlement_key(entitlement_key) + "\n")
        return license_file, key_file

    def image(self, name: str, size: int, *, like: Path | None = None) -> Path:
        """A node image artifact: a tar of eight random files, or ``like`` with its first file replaced."""
        path = self.work / "images" / name
        path.parent.mkdir(exist_ok=True)
        if like is None:
            members = {f"usr/lib/file{i}": os.urandom(size // 8) for i in range(8)}
        else:
            with tarfile.open(like) as base:
                members = {m.name: base.extractfile(m).read() for m in base.getmembers()}  # type: ignore[union-attr]
            members["usr/lib/file0"] = os.urandom(len(members["usr/lib/file0"]))
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for member_name, data in members.items():
                info = tarfile.TarInfo(member_name)
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
        return path

    def build_bundle(
        self,
        version: str,
        *,
        image: Path,
        channel: str = "stable",
        release_date: dt.date | None = None,
        upgrade_from: str = ">=0.1.0",
        delta_base: Path | None = None,
    ) -> Path:
        """``corral-bundle build`` then ``sign``: a real, signed bundle file."""
        out_dir = self.work / "bundles"
        out_dir.mkdir(exist_ok=True)
        extras = self.work / "extras" / version
        extras.mkdir(parents=True, exist_ok=True)
        (extras / f"corral-cloud-{version}.tar.gz").write_bytes(os.urandom(4096))
        (extras / f"corral_updater-{version}-py3-none-any.whl").write_bytes(os.urandom(2048))
        (extras / "RELEASE-NOTES.md").write_text(f"# Corral {version}\n")
        suffix = "-delta" if delta_base is not None else ""
        bundle = out_dir / f"corral-{version}{suffix}.bundle"
        writer.build_bundle(
            bundle,
            version=version,
            channel=channel,
            release_date=release_date or dt.datetime.now(dt.UTC).date(),
            upgrade_from=upgrade_from,
            image=image,
            collection=extras / f"corral-cloud-{version}.tar.gz",
            service_package=extras / f"corral_updater-{version}-py3-none-any.whl",
            notes=extras / "RELEASE-NOTES.md",
            delta_base=delta_base,
        )
        head = reader.read_head(bundle)
        now = dt.datetime.now(dt.UTC)
        writer.rewrite_head(
            bundle, vendor_service.sign_manifest(self.directory, head.manifest_bytes, now=now), None
        )
        return bundle


@pytest.fixture(scope="session")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Vendor:
    directory = tmp_path_factory.mktemp("vendor")
    vendor_service.init_vendor(
        directory,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=500),
        root_keys=1,
        root_threshold=1,
        release_keys=2,
        release_threshold=2,
        expires_days=900,
    )
    return Vendor(directory, tmp_path_factory.mktemp("vendor-work"))


# --- the server process
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
