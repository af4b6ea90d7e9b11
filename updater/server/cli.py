"""``corral-update-server``: set up, publish to and run the reference vendor update server.

    corral-update-server --home DIR init --trust-root FILE --keyring FILE [--channel stable --channel beta]
    corral-update-server --home DIR publish BUNDLE
    corral-update-server --home DIR license add LICENSE_FILE KEY_FILE
    corral-update-server --home DIR license revoke LICENSE_ID --reason TEXT
    corral-update-server --home DIR keyring update FILE
    corral-update-server --home DIR refresh-timestamp [--channel NAME]
    corral-update-server --home DIR root --channel NAME      (the root.json installations are shipped with)
    corral-update-server --home DIR serve --cert FILE --key FILE [--host 127.0.0.1] [--port 8443]

``--home`` defaults to ``$CORRAL_UPDATE_SERVER_HOME``. Every failure exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from updater.domain.errors import VerificationError
from updater.domain.keyring import TrustStore
from updater.domain.license import (
    check_entitlement_key,
    derive_request_key,
    parse_entitlement_key,
    verify_license,
)
from updater.server.app import create_app
from updater.server.config import ConfigError, ServerHome, validate_channel_name
from updater.server.licenses import LicenseRecord
from updater.server.release import release_info
from updater.server.repository import ChannelRepository, ExpiryPolicy, RepositoryError, RoleKeys
from updater.server.wsgi import serve


class UsageError(Exception):
    """A command cannot run; the message says why and what to do."""


def _home(args: argparse.Namespace) -> ServerHome:
    if args.home is None:
        raise UsageError("no server home: pass --home DIR or set CORRAL_UPDATE_SERVER_HOME")
    return ServerHome.load(Path(args.home))


def cmd_init(args: argparse.Namespace) -> None:
    if args.home is None:
        raise UsageError("no server home: pass --home DIR or set CORRAL_UPDATE_SERVER_HOME")
    path = Path(args.home)
    if (path / "server.json").exists():
        raise UsageError(f"{path} is already an update server home")
    channels = tuple(dict.fromkeys(validate_channel_name(c) for c in args.channel or ["stable"]))
    expiry = ExpiryPolicy(
        timestamp=timedelta(seconds=args.timestamp_expiry),
        snapshot=timedelta(seconds=args.metadata_expiry),
        targets=timedelta(seconds=args.metadata_expiry),
    )
    home = ServerHome(path=path, channels=channels, expiry=expiry)
    now = datetime.now(UTC)
    # Check the vendor trust files before creating anything, so a bad input leaves nothing behind.
    trust_root, keyring = Path(args.trust_root).read_bytes(), Path(args.keyring).read_bytes()
    TrustStore.load(trust_root, keyring, now=now)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        keys = RoleKeys.generate(path / "keys")
        (path / "trust").mkdir()
        home.trust_root_path.write_bytes(trust_root)
        home.keyring_path.write_bytes(keyring)
        for channel in channels:
            ChannelRepository(home.channel_dir(channel), keys, expiry).create(now=now)
        home.licenses().dir.mkdir(mode=0o700)
        home.save()
    except BaseException:
        for name in ("keys", "trust", "channels", "licenses"):
            shutil.rmtree(path / name, ignore_errors=True)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    for channel in channels:
        root = home.channel_dir(channel) / "metadata" / "1.root.json"
        print(f"channel {channel}: ship {root} to installations")


def cmd_publish(args: argparse.Namespace) -> None:
    home = _home(args)
    bundle = Path(args.bundle)
    now = datetime.now(UTC)
    info = release_info(bundle, home.trust(now=now), now=now)
    repo = home.repository(info["channel"])
    with repo.locked():
        target = repo.publish(bundle, info)
    print(
        f"published {target.path} ({target.length} bytes) as {info['version']} in channel {info['channel']}"
    )


def cmd_license_add(args: argparse.Namespace) -> None:
    home = _home(args)
    document = Path(args.license).read_bytes()
    lic = verify_license(document, home.trust(now=datetime.now(UTC)).keyring, now=datetime.now(UTC))
    entitlement_key = parse_entitlement_key(Path(args.key).read_text())
    check_entitlement_key(lic, entitlement_key)
    # Only the derived request key is kept: the server can check requests but never holds the customer's key.
    record = LicenseRecord(lic.license_id, document, derive_request_key(entitlement_key))
    try:
        home.licenses().add(record)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"license {lic.license_id} ({lic.customer}): channels {', '.join(sorted(lic.channels))}")


def cmd_license_revoke(args: argparse.Namespace) -> None:
    home = _home(args)
    try:
        record = home.licenses().revoke(args.license_id, args.reason)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"license {record.license_id} revoked: {record.revoked}")


def cmd_keyring_update(args: argparse.Namespace) -> None:
    home = _home(args)
    now = datetime.now(UTC)
    candidate = Path(args.keyring).read_bytes()
    store = home.trust(now=now).with_keyring(candidate, now=now)
    tmp = home.keyring_path.with_suffix(".tmp")
    tmp.write_bytes(store.keyring.envelope)
    os.replace(tmp, home.keyring_path)
    print(f"keyring version {store.keyring.version} trusted")


def cmd_refresh_timestamp(args: argparse.Namespace) -> None:
    home = _home(args)
    for channel in [args.channel] if args.channel else home.channels:
        repo = home.repository(channel)
        with repo.locked():
            version = repo.refresh_timestamp()
        print(f"channel {channel}: timestamp version {version}")


def cmd_root(args: argparse.Namespace) -> None:
    home = _home(args)
    sys.stdout.buffer.write(home.repository(args.channel).root_bytes())


def _keep_timestamps_fresh(home: ServerHome, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        for channel in home.channels:
            repo = home.repository(channel)
            with repo.locked():
                repo.refresh_timestamp()


def cmd_serve(args: argparse.Namespace) -> None:
    home = _home(args)
    for path in (args.cert, args.key):
        if not Path(path).is_file():
            raise UsageError(f"{path} does not exist: the server serves HTTPS only")
    every = args.refresh_timestamp_every
    if every is None:
        every = home.expiry.timestamp.total_seconds() / 2
    stop = threading.Event()
    if every > 0:
        threading.Thread(target=_keep_timestamps_fresh, args=(home, every, stop), daemon=True).start()
    app = create_app(home, replay_window_seconds=args.replay_window)
    try:
        serve(
            app, home.path, host=args.host, port=args.port, cert=args.cert, key=args.key, threads=args.threads
        )
    finally:
        stop.set()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-update-server", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home", default=os.environ.get("CORRAL_UPDATE_SERVER_HOME"), help="server directory"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create signing keys, trust files and one TUF repository per channel")
    init.add_argument("--trust-root", required=True, help="the vendor's trust-root.json (corral-bundle keys)")
    init.add_argument("--keyring", required=True, help="the vendor's signed keyring.json")
    init.add_argument("--channel", action="append", help="a channel to serve (repeat; default: stable)")
    init.add_argument("--timestamp-expiry", type=float, default=86400.0, help="seconds (default 1 day)")
    init.add_argument("--metadata-expiry", type=float, default=30 * 86400.0, help="targets/snapshot seconds")
    init.set_defaults(func=cmd_init)

    publish = sub.add_parser("publish", help="verify a signed bundle and publish it in its channel")
    publish.add_argument("bundle")
    publish.set_defaults(func=cmd_publish)

    lic = sub.add_parser("license", help="license registry").add_subparsers(
        dest="license_command", required=True
    )
    add = lic.add_parser("add", help="register a license (verified) and its entitlement key (only derived)")
    add.add_argument("license")
    add.add_argument("key")
    add.set_defaults(func=cmd_license_add)
    revoke = lic.add_parser("revoke", help="refuse every further request made with this license")
    revoke.add_argument("license_id")
    revoke.add_argument("--reason", default="", help="shown to the customer in the refusal")
    revoke.set_defaults(func=cmd_license_revoke)

    keyring = sub.add_parser("keyring", help="vendor keyring").add_subparsers(
        dest="keyring_command", required=True
    )
    update = keyring.add_parser(
        "update", help="trust a newer vendor keyring (verified against the trust root)"
    )
    update.add_argument("keyring")
    update.set_defaults(func=cmd_keyring_update)

    refresh = sub.add_parser(
        "refresh-timestamp", help="re-sign the channels' timestamps (normally automatic)"
    )
    refresh.add_argument("--channel")
    refresh.set_defaults(func=cmd_refresh_timestamp)

    root = sub.add_parser("root", help="print a channel's initial root.json (an installation's trust anchor)")
    root.add_argument("--channel", required=True)
    root.set_defaults(func=cmd_root)

    serve_cmd = sub.add_parser("serve", help="serve the channels over HTTPS (one process, several threads)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8443)
    serve_cmd.add_argument("--cert", required=True, help="PEM server certificate (chain)")
    serve_cmd.add_argument("--key", required=True, help="PEM private key of the certificate")
    serve_cmd.add_argument("--threads", type=int, default=8)
    serve_cmd.add_argument(
        "--replay-window", type=int, default=300, help="accepted request clock skew, seconds"
    )
    serve_cmd.add_argument(
        "--refresh-timestamp-every",
        type=float,
        default=None,
        help="seconds between automatic timestamp re-signing (default: half the expiry; 0 = never)",
    )
    serve_cmd.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ConfigError, RepositoryError, VerificationError, OSError, ValueError) as error:
        print(f"corral-update-server: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
