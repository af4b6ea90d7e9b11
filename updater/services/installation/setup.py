"""Setting up an installation (``corral-updater init``): the home's layout, its settings and secret key, the
HTTPS certificate, the vendor's trust material and the update channel's, the database and its first operator.

Everything given is checked (the keyring and license by the bundle verifiers, the channel's CA and TUF root,
the certificate pair) before anything is written. The files are then written into a private staging
directory beside the home and moved into place, so a refused or failed set-up leaves no half-made home; a
fresh SQLite database is built in the staging directory, an existing one is migrated in place. Set up again
(``force``) over an existing home keeps its history and resets the admin's password.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from updater.config import (
    CHANNEL_ROOT_FILE,
    SETTINGS_FILE,
    ServiceConfig,
    check_ca_file,
    save_settings,
    write_secret_key,
)
from updater.domain.keyring import TrustStore
from updater.domain.license import check_entitlement_key, parse_entitlement_key, verify_license
from updater.https.certificates import check_pair, self_signed
from updater.services.accounts import auth, users
from updater.services.channel.setup import check_channel_root, choose_channel
from updater.services.installation.trust import (
    ENTITLEMENT_KEY_FILE,
    KEYRING_FILE,
    LICENSE_FILE,
    TRUST_ROOT_FILE,
)
from updater.store import queries
from updater.store.db import make_engine, migrate, session_factory, transaction

CHANNEL_CA_FILE = "channel-ca.pem"


class SetupRefused(Exception):
    """Refused input or state; the message says what to do and nothing was changed."""


@dataclass(frozen=True)
class SetupRequest:
    """What ``corral-updater init`` was given; file options are paths, ``None`` when not given."""

    home: Path
    admin: str = "admin"
    force: bool = False
    database_url: str | None = None  # None: SQLite in the home
    redis_url: str = "redis://127.0.0.1:6379/0"
    bind: str = "127.0.0.1:8443"
    inventory: str | None = None
    cert: str | None = None  # None (with key None): a self-signed certificate for hostnames
    key: str | None = None
    hostnames: tuple[str, ...] = ()
    trust_root: str | None = None
    keyring: str | None = None
    license: str | None = None
    entitlement_key: str | None = None
    channel_check_interval: int = 3600
    channel_url: str | None = None
    channel_ca: str | None = None
    channel_root: str | None = None
    channel: str | None = None  # None: the license's only channel
    download_rate_limit: int = 0
    max_upload_bytes: int = 8 * 1024**3
    session_lifetime: int = 8 * 3600


@dataclass(frozen=True)
class SetupResult:
    config: ServiceConfig
    admin: str
    password: str = field(repr=False)  # the admin's, shown once; only its argon2id hash is stored


def set_up(request: SetupRequest, *, actor: str) -> SetupResult:
    """Set up (or with ``force`` set up again) the installation in ``request.home``."""
    home = request.home
    if (home / SETTINGS_FILE).exists() and not request.force:
        raise SetupRefused(f"{home} is already set up; use --force to set it up again (history is kept)")
    auth.validate_username(request.admin)
    if request.inventory and not Path(request.inventory).exists():
        raise SetupRefused(f"inventory {request.inventory} does not exist")
    trust = _check_trust(request)
    channel = _check_channel(request, trust)
    config = _settings_from(request, channel)
    cert = _certificate(request)
    home.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{home.name}.init-", dir=home.parent))
    try:
        _stage_files(stage, config, cert, trust, channel)
        existing = home.exists()
        # A fresh SQLite database is built in the staging directory; an existing one is migrated in place.
        url = config.database_url or f"sqlite:///{(home if existing else stage) / 'updater.db'}"
        password = _set_up_database(url, request.admin, actor=actor, reset=request.force)
        if existing:
            for item in sorted(stage.rglob("*")):
                target = home / item.relative_to(stage)
                if item.is_dir():
                    target.mkdir(mode=0o700, exist_ok=True)
                else:
                    os.replace(item, target)
        else:
            stage.rename(home)
            home.chmod(0o700)
        if not config.database_url:
            (home / "updater.db").chmod(0o600)  # password and token hashes
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return SetupResult(config, request.admin, password)


# --- checks, before anything is written ---------------------------------------------------------------------


@dataclass(frozen=True)
class _TrustFiles:
    root: bytes
    keyring: bytes
    license: bytes | None
    entitlement_key: str | None


@dataclass(frozen=True)
class _ChannelFiles:
    name: str
    root: bytes
    ca: bytes


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SetupRefused(f"cannot read the {what} {path}: {error.strerror}") from None


def _check_trust(request: SetupRequest) -> _TrustFiles | None:
    """Verify the keyring and license to import (the bundle verifiers) before anything is written."""
    root, keyring = _read(request.trust_root, "trust root"), _read(request.keyring, "keyring")
    lic, key_text = _read(request.license, "license"), _read(request.entitlement_key, "entitlement key")
    if (root is None) != (keyring is None):
        raise SetupRefused("--trust-root and --keyring go together")
    if (lic is None) != (key_text is None):
        raise SetupRefused("--license and --entitlement-key go together")
    if root is None or keyring is None:
        if lic is None:
            return None
        existing = request.home / "trust"
        if not (existing / KEYRING_FILE).exists():
            raise SetupRefused(
                "a license is verified against the vendor keyring: give --trust-root and --keyring too"
            )
        root, keyring = (existing / TRUST_ROOT_FILE).read_bytes(), (existing / KEYRING_FILE).read_bytes()
    now = datetime.now(UTC)
    store = TrustStore.load(root, keyring, now=now)
    store.keyring.check_not_expired(now=now)  # load() accepts an expired one so a newer can replace it
    key = None
    if lic is not None and key_text is not None:
        verified = verify_license(lic, store.keyring, now=now)
        key = key_text.decode("utf-8", "replace").strip()
        check_entitlement_key(verified, parse_entitlement_key(key))
    return _TrustFiles(root, keyring, lic, key)


def _check_channel(request: SetupRequest, trust: _TrustFiles | None) -> _ChannelFiles | None:
    """Check the update channel's CA, TUF root and the license's channel before anything is written."""
    given = (request.channel_url, request.channel_ca, request.channel_root)
    if not any(given) and not request.channel:
        return None
    if not all(given) or request.channel_ca is None:
        raise SetupRefused("--channel-url, --channel-ca and --channel-root go together")
    ca = check_ca_file(Path(request.channel_ca))
    root = _read(request.channel_root, "channel root") or b""
    check_channel_root(root)
    existing = request.home / "trust"
    if trust is not None and trust.license is not None:
        lic_doc = trust.license
    elif (existing / LICENSE_FILE).exists() and (existing / ENTITLEMENT_KEY_FILE).exists():
        lic_doc = (existing / LICENSE_FILE).read_bytes()
    else:
        raise SetupRefused("the update channel is used under a license: give --license and --entitlement-key")
    now = datetime.now(UTC)
    if trust is not None:  # the trust being installed now, else the one already in the home
        root_doc, keyring = trust.root, trust.keyring
    else:
        root_doc, keyring = (existing / TRUST_ROOT_FILE).read_bytes(), (existing / KEYRING_FILE).read_bytes()
    lic = verify_license(lic_doc, TrustStore.load(root_doc, keyring, now=now).keyring, now=now)
    return _ChannelFiles(choose_channel(lic, request.channel), root, ca)


def _certificate(request: SetupRequest) -> tuple[bytes, bytes]:
    if (request.cert is None) != (request.key is None):
        raise SetupRefused("--cert and --key go together")
    if request.cert is not None:
        cert, key = _read(request.cert, "certificate"), _read(request.key, "key")
        if cert is None or key is None:
            raise SetupRefused("--cert and --key go together")
        check_pair(cert, key)
        return cert, key
    pair = self_signed(list(request.hostnames))
    return pair.cert_pem, pair.key_pem


# --- writing ------------------------------------------------------------------------------------------------


def _settings_from(request: SetupRequest, channel: _ChannelFiles | None) -> ServiceConfig:
    home = request.home
    return ServiceConfig(
        home=home,
        database_url=request.database_url or "",
        redis_url=request.redis_url,
        bind=request.bind,
        inventory_path=str(Path(request.inventory).absolute()) if request.inventory else "",
        channel_check_interval_seconds=request.channel_check_interval,
        max_upload_bytes=request.max_upload_bytes,
        session_lifetime_seconds=request.session_lifetime,
        channel_url=(request.channel_url or "") if channel else "",
        channel_ca_file=str(home / "trust" / CHANNEL_CA_FILE) if channel else "",
        channel=channel.name if channel else "",
        download_rate_limit_bytes=request.download_rate_limit,
        secret_key=secrets.token_bytes(32),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _stage_files(
    stage: Path,
    config: ServiceConfig,
    cert: tuple[bytes, bytes],
    trust: _TrustFiles | None,
    channel: _ChannelFiles | None,
) -> None:
    save_settings(config.with_overrides(home=stage))
    write_secret_key(stage, config.secret_key)
    (stage / "tls").mkdir(mode=0o700)
    (stage / "tls" / "cert.pem").write_bytes(cert[0])
    _write_private(stage / "tls" / "key.pem", cert[1])
    if trust is not None:
        (stage / "trust").mkdir(mode=0o700)
        (stage / "trust" / TRUST_ROOT_FILE).write_bytes(trust.root)
        (stage / "trust" / KEYRING_FILE).write_bytes(trust.keyring)
        if trust.license is not None and trust.entitlement_key is not None:
            _write_private(stage / "trust" / LICENSE_FILE, trust.license)
            _write_private(stage / "trust" / ENTITLEMENT_KEY_FILE, trust.entitlement_key.encode() + b"\n")
    if channel is not None:
        (stage / "trust").mkdir(mode=0o700, exist_ok=True)
        (stage / "trust" / CHANNEL_ROOT_FILE).write_bytes(channel.root)
        (stage / "trust" / CHANNEL_CA_FILE).write_bytes(channel.ca)


def _set_up_database(url: str, admin: str, *, actor: str, reset: bool) -> str:
    """Migrate and create (or with ``reset``, reset) the admin; returns the admin's new password."""
    engine = make_engine(url)
    try:
        migrate(engine)
        with transaction(session_factory(engine)) as db:
            try:
                return users.set_up_admin(db, users.Actor(actor), admin, reset=reset)
            except queries.AlreadyExists as error:
                raise SetupRefused(f"{error}; use --force to reset its password") from None
    finally:
        engine.dispose()
