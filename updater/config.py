"""The update service's configuration: one object, built once, passed to the web app, the worker and the CLI.

Everything lives in the service's state directory (``corral-updater init`` creates it)::

    updater.json        settings (this module); no secrets in it
    secret_key          session signing key, mode 0600
    updater.db          the SQLite database (default; PostgreSQL by ``database_url``)
    tls/cert.pem, tls/key.pem   the HTTPS certificate (self-signed by init unless the operator gave one)
    trust/              trust-root.json, keyring.json (public), license.json, entitlement-key (0600),
                        channel-root.json (the update channel's TUF trust anchor, when a channel is set)
    channel/            the channel's verified TUF metadata (rollback protection survives restarts)
    downloads/          bundles being downloaded from the channel (``<name>.part`` resumes)
    staging/            verified, staged releases (``staging/<version>``)
    base-images/        node images a delta bundle can be rebuilt over (``<sha256>.tar``)

The state directory comes from ``--home`` or ``CORRAL_UPDATER_HOME`` (default ``/var/lib/corral-updater``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from sqlalchemy.engine import make_url

DEFAULT_HOME = Path("/var/lib/corral-updater")
HOME_ENV = "CORRAL_UPDATER_HOME"
SETTINGS_FILE = "updater.json"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)
DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024**3  # a bundle carries a whole node image
_ALLOWED_DB_SCHEMES = ("sqlite", "postgresql+psycopg")
_CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
CHANNEL_ROOT_FILE = "channel-root.json"
# The trust directory's files (read and saved through updater.services.installation.trust); defined here, the
# one module below the services that knows the home's layout, because known_secrets reads the entitlement key.
TRUST_ROOT_FILE = "trust-root.json"
KEYRING_FILE = "keyring.json"
LICENSE_FILE = "license.json"
ENTITLEMENT_KEY_FILE = "entitlement-key"


class ConfigError(Exception):
    """The configuration is missing or invalid; the message says what to fix."""


def home_from_env(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(HOME_ENV) or DEFAULT_HOME).absolute()


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of one update service installation. ``secret_key`` is never written to ``updater.json``."""

    home: Path
    database_url: str = ""  # empty: SQLite file ``updater.db`` in home
    redis_url: str = "redis://127.0.0.1:6379/0"
    session_lifetime_seconds: int = 8 * 3600
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    channel_check_interval_seconds: int = 3600
    cluster_observe_interval_seconds: int = 300  # the worker observes every node for the Overview this often
    inventory_path: str = ""  # ansible-inventory --list JSON, or an inventory file/dir (empty: none yet)
    bind: str = "127.0.0.1:8443"
    tls_cert: str = ""  # empty: home/tls/cert.pem
    tls_key: str = ""
    secure_cookies: bool = True  # only the unit tests' plain-HTTP test client turns this off
    login_max_failures: int = 5
    login_lockout_seconds: int = 300
    # Where the login throttle counts failures: empty, the service's Redis (redis_url), seen by every web
    # worker process; "memory://" keeps it in the one process (allowed only with web_workers = 1).
    login_throttle_url: str = ""
    # gunicorn: worker processes of the web tier and threads in each (docs/security.md, "Limits").
    web_workers: int = 2
    web_threads: int = 16
    # Seconds a connection has for its TLS handshake and request headers before it is closed, so slow or idle
    # clients cannot hold the request threads (updater/https/worker.py).
    web_header_timeout_seconds: int = 10
    # The online update channel (all empty: none; bundles are imported by hand). The license, entitlement key
    # and channel root it uses live in trust/; the channel name is one the license covers.
    channel_url: str = ""  # https://updates.example.com (the update server's base URL, no /v1)
    channel_ca_file: str = ""  # PEM CA certificate(s) the update server's certificate must chain to
    channel: str = ""
    download_rate_limit_bytes: int = 0  # bytes per second a channel download may use (0: no limit)
    secret_key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        url = self.effective_database_url
        if not url.startswith(tuple(f"{scheme}:" for scheme in _ALLOWED_DB_SCHEMES)):
            raise ConfigError(
                f"database_url must start with sqlite: or postgresql+psycopg: (got {url.split(':', 1)[0]!r})"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis_url must be a redis://, rediss:// or unix:// URL")
        for name in (
            "session_lifetime_seconds",
            "max_upload_bytes",
            "channel_check_interval_seconds",
            "cluster_observe_interval_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
        if self.login_max_failures < 1 or self.login_lockout_seconds < 1:
            raise ConfigError("login_max_failures and login_lockout_seconds must be at least 1")
        self._check_web_tier()
        limit = self.download_rate_limit_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"download_rate_limit_bytes must be 0 (no limit) or more, got {limit!r}")
        self._check_channel()

    def _check_web_tier(self) -> None:
        for name, most in (("web_workers", 64), ("web_threads", 64), ("web_header_timeout_seconds", 300)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ConfigError(f"{name} must be a whole number from 1 to {most}, got {value!r}")
        url = self.login_throttle_url
        if url not in ("", "memory://") and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError('login_throttle_url must be empty (redis_url), "memory://" or a Redis URL')
        if url == "memory://" and self.web_workers > 1:
            raise ConfigError(
                'login_throttle_url "memory://" counts failed logins in one process: with web_workers > 1 '
                "a guesser would get each worker's allowance; leave it empty (Redis) or set web_workers to 1"
            )

    def _check_channel(self) -> None:
        given = [bool(self.channel_url), bool(self.channel_ca_file), bool(self.channel)]
        if not any(given):
            return
        if not all(given):
            raise ConfigError("the update channel needs channel_url, channel_ca_file and channel together")
        parts = urlsplit(self.channel_url)
        if parts.scheme != "https":
            raise ConfigError(
                f"channel_url must be an https:// URL (got scheme {parts.scheme or 'none'!r}): "
                "the channel is only used over HTTPS"
            )
        if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(
                "channel_url must be https://HOST[:PORT][/PATH] with no query, fragment or user"
            )
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            raise ConfigError(f"channel_url has an invalid port: {self.channel_url}") from None
        if not _CHANNEL_NAME.fullmatch(self.channel):
            raise ConfigError(f"channel {self.channel!r} must be lower-case letters, digits and '-' (max 32)")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'updater.db'}"

    @property
    def session_lifetime(self) -> timedelta:
        return timedelta(seconds=self.session_lifetime_seconds)

    @property
    def cert_path(self) -> Path:
        return Path(self.tls_cert) if self.tls_cert else self.home / "tls" / "cert.pem"

    @property
    def key_path(self) -> Path:
        return Path(self.tls_key) if self.tls_key else self.home / "tls" / "key.pem"

    @property
    def trust_dir(self) -> Path:
        return self.home / "trust"

    @property
    def channel_configured(self) -> bool:
        return bool(self.channel_url)

    @property
    def channel_root_path(self) -> Path:
        return self.trust_dir / CHANNEL_ROOT_FILE

    @property
    def channel_state_dir(self) -> Path:
        return self.home / "channel"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def base_images_dir(self) -> Path:
        return self.home / "base-images"

    def settings(self) -> dict[str, Any]:
        """What ``updater.json`` holds: everything but the secret key and the home itself."""
        data = asdict(self)
        del data["secret_key"], data["home"]
        return data

    def with_overrides(self, **changes: Any) -> ServiceConfig:
        return replace(self, **changes)


def check_ca_file(path: Path) -> bytes:
    """The CA file's bytes, once it is readable and holds at least one PEM certificate."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the channel CA file {path}: {error.strerror}") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"the channel CA file {path} holds no PEM certificate") from None
    return data


def save_settings(config: ServiceConfig) -> None:
    path = config.home / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config.settings(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_secret_key(home: Path, key: bytes) -> None:
    path = home / SECRET_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.hex().encode())


def load_config(home: Path) -> ServiceConfig:
    """Read ``updater.json`` and the secret key from ``home``; a clear error when init has not run."""
    settings_path = home / SETTINGS_FILE
    try:
        data = json.loads(settings_path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{home} is not an update service home (run `corral-updater init --home {home}`)"
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{settings_path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{settings_path} must hold a JSON object")
    known = set(ServiceConfig.__dataclass_fields__) - {"home", "secret_key"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{settings_path}: unknown settings {', '.join(unknown)}")
    try:
        secret = bytes.fromhex((home / SECRET_KEY_FILE).read_text().strip())
    except FileNotFoundError:
        raise ConfigError(
            f"{home / SECRET_KEY_FILE} is missing (re-run `corral-updater init --force`)"
        ) from None
    except ValueError:
        raise ConfigError(f"{home / SECRET_KEY_FILE} is not a hex key") from None
    if len(secret) < 32:
        raise ConfigError(f"{home / SECRET_KEY_FILE} is shorter than 32 bytes")
    return ServiceConfig(home=home, secret_key=secret, **data)


def known_secrets(config: ServiceConfig) -> list[str]:
    """Secret values this installation holds, for the log redaction filter (never for display)."""
    values = [config.secret_key.hex()]
    password = make_url(config.effective_database_url).password
    if password:
        values.append(str(password))
    for redis_url in (config.redis_url, config.login_throttle_url):
        redis_password = urlsplit(redis_url).password
        if redis_password:
            values.append(redis_password)
    key_file = config.trust_dir / ENTITLEMENT_KEY_FILE
    if key_file.exists():
        values.append(key_file.read_text().strip())
    return [value for value in values if value]
