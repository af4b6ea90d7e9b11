"""``corral-bundle``: the vendor's tool for keys, bundles and licenses (and anyone's verifier).

Exit status: 0 success; 1 a verification check failed (one line ``FAILED <check>: <reason>``); 2 usage
error; 3 any other error (missing file, refused vendor operation). Key material is never printed.
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from updater.domain import aead
from updater.domain.errors import LicenseMismatch, MalformedDocument, VerificationError
from updater.domain.keyring import TrustStore, parse_keyring_payload
from updater.domain.license import check_entitlement_key, parse_entitlement_key
from updater.domain.signing import open_envelope
from updater.services.bundles import reader, staging
from updater.services.vendor import keys as vendor
from updater.services.vendor import writer

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 3


class CliError(Exception):
    """A user-facing error that is not a verification failure."""


def _now(args: argparse.Namespace) -> datetime:
    if getattr(args, "now", None):
        moment = datetime.fromisoformat(args.now)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_entitlement_key(path: Path) -> bytes:
    """Read a key file, refusing one that others can read (like ssh does for private keys)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CliError(f"cannot read entitlement key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(
            f"entitlement key file {path} is accessible by others (mode {mode & 0o777:04o}); chmod 600 it"
        )
    return parse_entitlement_key(_read(path, "entitlement key").decode("ascii", errors="replace"))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# --- keys ---------------------------------------------------------------------------------------------------
def cmd_keys_init(args: argparse.Namespace) -> int:
    keyring = vendor.init_vendor(
        args.dir,
        now=_now(args),
        root_keys=args.root_keys,
        root_threshold=args.root_threshold,
        release_keys=args.release_keys,
        release_threshold=args.release_threshold,
        license_keys=args.license_keys,
        expires_days=args.expires_days,
    )
    where = vendor.VendorDir(args.dir)
    print(
        f"created vendor keys in {args.dir}: keyring version {keyring.version}, expires {keyring.expires:%F}"
    )
    print(f"ship {where.trust_root} and {where.keyring} to installations")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    new_id, keyring = vendor.rotate_key(
        args.dir, now=_now(args), role=args.role, retire=args.retire, expires_days=args.expires_days
    )
    print(f"added {args.role} key {new_id}; published keyring version {keyring.version}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    keyring = vendor.revoke_key(args.dir, args.keyid, now=_now(args), expires_days=args.expires_days)
    print(f"revoked key {args.keyid}; published keyring version {keyring.version}")
    return EXIT_OK


# --- bundles ------------------------------------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    keyring = vendor.VendorDir(args.vendor).keyring.read_bytes() if args.vendor else None
    manifest = writer.build_bundle(
        args.out,
        version=args.version,
        channel=args.channel,
        release_date=args.release_date,
        upgrade_from=args.upgrade_from,
        image=args.image,
        collection=args.collection,
        service_package=args.service_package,
        notes=args.notes,
        delta_base=args.delta_from,
        keyring=keyring,
    )
    kind = "delta" if manifest.is_delta else "whole image"
    print(
        f"built unsigned bundle {args.out} ({manifest.version}, {manifest.channel}, {kind}); now run `sign`"
    )
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    head = reader.read_head(args.bundle)
    new = vendor.sign_manifest(args.vendor, head.manifest_bytes, now=_now(args), keyids=args.key or None)
    merged = {s.keyid: s for s in head.signatures} | {s.keyid: s for s in new}
    keyring = vendor.VendorDir(args.vendor).keyring.read_bytes() if args.carry_keyring else head.keyring
    writer.rewrite_head(args.bundle, list(merged.values()), keyring)
    print(f"signed {args.bundle} with {len(new)} release key(s); {len(merged)} signature(s) in total")
    return EXIT_OK


def _trust(args: argparse.Namespace, now: datetime) -> TrustStore:
    return TrustStore.load(_read(args.trust_root, "trust root"), _read(args.keyring, "keyring"), now=now)


def cmd_verify(args: argparse.Namespace) -> int:
    now = _now(args)
    try:
        verified = staging.verify_bundle_file(
            args.bundle,
            trust=_trust(args, now),
            now=now,
            license_document=_read(args.license, "license") if args.license else None,
            entitlement_key=read_entitlement_key(args.entitlement_key) if args.entitlement_key else None,
            installed_version=args.installed_version,
            node_count=args.node_count,
            base_images_dir=args.base_images,
        )
    except VerificationError as exc:
        if args.json:
            _print_json({"ok": False, "check": exc.check, "reason": exc.message})
        print(f"FAILED {exc.check}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    manifest = verified.manifest
    skipped = [
        name
        for name, ran in (
            ("license", args.license is not None),
            ("upgrade-path", args.installed_version is not None),
            ("node-count", args.node_count is not None),
        )
        if not ran
    ]
    if args.json:
        _print_json(
            {
                "ok": True,
                "version": str(manifest.version),
                "channel": manifest.channel,
                "checks": list(verified.checks),
                "not_run": skipped,
                "signed_by": sorted(verified.signed_by),
                "keyring_version": verified.trust.keyring.version,
                "encrypted_to": verified.encrypted_to,
            }
        )
    else:
        checks = ", ".join(verified.checks)
        print(f"OK {args.bundle}: corral {manifest.version} ({manifest.channel}); checks: {checks}")
        if skipped:
            print(f"not run (no input given): {', '.join(skipped)}")
    return EXIT_OK


def _inspect_data(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        prefix = handle.read(len(aead.MAGIC))
        handle.seek(0)
        if aead.is_encrypted(prefix):
            header = aead.read_header(handle)
            return {"encrypted": True, "license_id": header.license_id, "chunk_size": header.chunk_size}
    head = reader.read_head(path)
    data: dict[str, Any] = {"encrypted": False, "signatures": [s.keyid for s in head.signatures]}
    try:
        data["manifest"] = json.loads(head.manifest_bytes)
    except ValueError:
        data["manifest"] = None
    if head.keyring is not None:
        payload, _ = open_envelope(head.keyring, what="keyring")
        data["keyring_version"] = parse_keyring_payload(payload, head.keyring).version
    data["note"] = "inspect verifies nothing; run `corral-bundle verify`"
    return data


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _inspect_data(args.bundle)
    if args.json:
        _print_json(data)
        return EXIT_OK
    if data["encrypted"]:
        print(f"{args.bundle}: encrypted to license {data['license_id']} (chunk size {data['chunk_size']})")
        return EXIT_OK
    manifest = data["manifest"] or {}
    print(f"{args.bundle}: corral {manifest.get('version')} channel {manifest.get('channel')}")
    print(f"  released {manifest.get('release_date')}, upgrades from {manifest.get('upgrade_from')}")
    image = manifest.get("image", {})
    print(f"  image sha256 {image.get('sha256')} ({image.get('size')} bytes)")
    if image.get("delta_base_sha256"):
        print(f"  delta over base image sha256 {image['delta_base_sha256']}")
    for entry in manifest.get("files", []):
        print(f"  {entry['role']:<12} {entry['size']:>12}  {entry['sha256'][:16]}…  {entry['name']}")
    print(
        f"  signatures: {len(data['signatures'])} ({', '.join(k[:16] for k in data['signatures']) or 'none'})"
    )
    print(f"  ({data['note']})")
    return EXIT_OK


def cmd_license_issue(args: argparse.Namespace) -> int:
    lic, license_path, key_path = vendor.issue_license(
        args.vendor,
        args.out,
        now=_now(args),
        customer=args.customer,
        channels=args.channel,
        node_entitlement=args.nodes,
        updates_until=args.updates_until,
        expires=args.expires,
        license_id=args.id,
    )
    print(f"issued license {lic.license_id} for {lic.customer}: {license_path}, entitlement key {key_path}")
    return EXIT_OK


def cmd_encrypt(args: argparse.Namespace) -> int:
    lic = reader.unverified_license(_read(args.license, "license"))
    key = read_entitlement_key(args.entitlement_key)
    try:
        # Encrypted with another license's key, the bundle could never be opened with this license's key.
        check_entitlement_key(lic, key)
    except LicenseMismatch:
        raise LicenseMismatch(
            f"{args.entitlement_key} is not the entitlement key of license {lic.license_id} "
            f"({args.license}); nothing was written"
        ) from None
    license_id = lic.license_id
    writer.encrypt_file(
        args.bundle, args.out, license_id=license_id, entitlement_key=key, chunk_size=args.chunk_size
    )
    print(f"encrypted {args.bundle} to license {license_id}: {args.out}")
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--now", help="evaluate times at this ISO 8601 instant instead of the clock")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_keys(sub)
    _add_bundle_commands(sub)
    _add_license_commands(sub)
    return parser


def _add_keys(sub: Any) -> None:
    keys = sub.add_parser("keys", help="vendor root/release/license keys and the keyring").add_subparsers(
        dest="keys_command", required=True
    )
    init = keys.add_parser("init", help="create root, release and license keys and keyring version 1")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--root-keys", type=int, default=3)
    init.add_argument("--root-threshold", type=int, default=2)
    init.add_argument("--release-keys", type=int, default=2)
    init.add_argument("--release-threshold", type=int, default=2)
    init.add_argument("--license-keys", type=int, default=1)
    init.add_argument("--expires-days", type=int, default=365)
    init.set_defaults(func=cmd_keys_init)
    rotate = keys.add_parser("rotate", help="add a new key to a role (optionally retire one)")
    rotate.add_argument("--dir", type=Path, required=True)
    rotate.add_argument("--role", choices=["release", "license"], default="release")
    rotate.add_argument("--retire", metavar="KEYID")
    rotate.add_argument("--expires-days", type=int, default=365)
    rotate.set_defaults(func=cmd_keys_rotate)
    revoke = keys.add_parser("revoke", help="revoke a key: it never counts again")
    revoke.add_argument("--dir", type=Path, required=True)
    revoke.add_argument("keyid")
    revoke.add_argument("--expires-days", type=int, default=365)
    revoke.set_defaults(func=cmd_keys_revoke)


def _add_bundle_commands(sub: Any) -> None:

    build = sub.add_parser("build", help="build an unsigned bundle")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--version", required=True)
    build.add_argument("--channel", required=True)
    build.add_argument("--release-date", type=_date, required=True)
    build.add_argument("--upgrade-from", required=True, help='e.g. ">=1.2.0, <1.3.0"')
    build.add_argument("--image", type=Path, required=True, help="the full node image artifact")
    build.add_argument(
        "--delta-from", type=Path, help="base image artifact: ship the image as a delta over it"
    )
    build.add_argument("--collection", type=Path, required=True)
    build.add_argument("--service-package", type=Path, required=True)
    build.add_argument("--notes", type=Path, required=True)
    build.add_argument("--vendor", type=Path, help="carry this vendor's current keyring in the bundle")
    build.set_defaults(func=cmd_build)

    sign = sub.add_parser("sign", help="add release-key signatures to a bundle")
    sign.add_argument("bundle", type=Path)
    sign.add_argument("--vendor", type=Path, required=True)
    sign.add_argument("--key", action="append", metavar="KEYID", help="sign with this key only (repeatable)")
    sign.add_argument("--carry-keyring", action="store_true", help="embed the vendor's current keyring")
    sign.set_defaults(func=cmd_sign)

    verify = sub.add_parser("verify", help="run every check; exit 0 only if all pass")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--trust-root", type=Path, required=True)
    verify.add_argument("--keyring", type=Path, required=True, help="the trusted keyring")
    verify.add_argument("--license", type=Path)
    verify.add_argument("--entitlement-key", type=Path)
    verify.add_argument("--installed-version")
    verify.add_argument("--node-count", type=int)
    verify.add_argument("--base-images", type=Path, help="directory of base images named <sha256>.tar")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_verify)

    inspect = sub.add_parser("inspect", help="show a bundle's manifest (verifies nothing)")
    inspect.add_argument("bundle", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=cmd_inspect)


def _add_license_commands(sub: Any) -> None:

    lic = sub.add_parser("license", help="licenses").add_subparsers(dest="license_command", required=True)
    issue = lic.add_parser("issue", help="issue a signed license and its entitlement key")
    issue.add_argument("--vendor", type=Path, required=True)
    issue.add_argument("--out", type=Path, required=True)
    issue.add_argument("--customer", required=True)
    issue.add_argument("--channel", action="append", required=True)
    issue.add_argument("--nodes", type=int, required=True)
    issue.add_argument("--updates-until", type=_date, required=True)
    issue.add_argument("--expires", type=_date, required=True)
    issue.add_argument("--id")
    issue.set_defaults(func=cmd_license_issue)

    encrypt = sub.add_parser("encrypt", help="encrypt a bundle to one license's entitlement key")
    encrypt.add_argument("bundle", type=Path)
    encrypt.add_argument("--license", type=Path, required=True)
    encrypt.add_argument("--entitlement-key", type=Path, required=True)
    encrypt.add_argument("--out", type=Path, required=True)
    encrypt.add_argument("--chunk-size", type=int, default=aead.DEFAULT_CHUNK_SIZE)
    encrypt.set_defaults(func=cmd_encrypt)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except VerificationError as exc:
        print(f"FAILED {exc.check}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except (CliError, vendor.VendorError, MalformedDocument, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
