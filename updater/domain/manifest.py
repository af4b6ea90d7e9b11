"""The bundle manifest: schema, strict parser and serialiser (pure).

The manifest is stored as the bundle's first member, ``manifest.json``; its exact stored bytes are signed and
parsed (never re-serialised before checking). Example::

    {"format": 1, "product": "corral", "version": "1.3.0", "channel": "stable", "release_date": "2026-11-01",
     "upgrade_from": ">=1.2.0, <1.3.0",
     "image": {"sha256": "<hex>", "size": 123, "delta_base_sha256": null},
     "files": [{"name": "payload/image.tar", "role": "image", "size": 123, "sha256": "<hex>"},
               {"name": "payload/corral-cloud-1.3.0.tar.gz", "role": "collection", ...},
               {"name": "payload/corral_updater-1.3.0-py3-none-any.whl", "role": "service", ...},
               {"name": "payload/RELEASE-NOTES.md", "role": "notes", ...}]}

``image`` is the node image's identity: the SHA-256 and size of the full artifact. A whole-image bundle
carries it as an ``image`` file (whose hash must equal ``image.sha256``); a delta bundle carries an
``image-delta`` file and names the base image's SHA-256 in ``image.delta_base_sha256``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from updater.domain import strict_json
from updater.domain.errors import InvalidVersion, ManifestDuplicateKey, ManifestInvalid, ManifestTooLarge
from updater.domain.semver import Version, VersionRange, parse_range, parse_version

FORMAT = 1
PRODUCT = "corral"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_FILES = 64
MAX_FILE_SIZE = 1 << 44  # 16 TiB: far above any real image, far below integer trouble anywhere
NAME_MAX = 100  # the ustar name field: bundles use no extended headers
ROLES = ("image", "image-delta", "collection", "service", "notes")
RESERVED_NAMES = frozenset({"manifest.json", "manifest.sig", "keyring.json", "image.tar"})
_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*(/[A-Za-z0-9_+-][A-Za-z0-9._+-]*)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHANNEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_TOP = {"format", "product", "version", "channel", "release_date", "upgrade_from", "image", "files"}


@dataclass(frozen=True)
class PayloadFile:
    name: str
    role: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ImageIdentity:
    sha256: str
    size: int
    delta_base_sha256: str | None


@dataclass(frozen=True)
class Manifest:
    product: str
    version: Version
    channel: str
    release_date: date
    upgrade_from: VersionRange
    image: ImageIdentity
    files: tuple[PayloadFile, ...]

    @property
    def is_delta(self) -> bool:
        return self.image.delta_base_sha256 is not None

    @property
    def payload_size(self) -> int:
        return sum(f.size for f in self.files)

    def file_by_role(self, role: str) -> PayloadFile | None:
        return next((f for f in self.files if f.role == role), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "product": self.product,
            "version": str(self.version),
            "channel": self.channel,
            "release_date": self.release_date.isoformat(),
            "upgrade_from": str(self.upgrade_from),
            "image": {
                "sha256": self.image.sha256,
                "size": self.image.size,
                "delta_base_sha256": self.image.delta_base_sha256,
            },
            "files": [
                {"name": f.name, "role": f.role, "size": f.size, "sha256": f.sha256} for f in self.files
            ],
        }


def serialize_manifest(manifest: Manifest) -> bytes:
    """Vendor side: the bytes to store (and sign). Parsed back to prove they are valid."""
    data = strict_json.dumps(manifest.to_json())
    parse_manifest(data)
    return data


def _fail(message: str) -> ManifestInvalid:
    return ManifestInvalid(message)


def _size(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_FILE_SIZE:
        raise _fail(f"{what} must be an integer from 0 to {MAX_FILE_SIZE}")
    return value


def _sha(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _fail(f"{what} must be 64 lowercase hex characters")
    return value


def check_member_name(name: object) -> str:
    """A payload name: relative, '/'-separated, no '.' or '..' component, at most 100 bytes."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name.encode()) > NAME_MAX:
        raise _fail(f"file name {name!r} is not a plain relative path of [A-Za-z0-9._+-] (max {NAME_MAX})")
    if any(part in {".", ".."} for part in name.split("/")):
        raise _fail(f"file name {name!r} has a '.' or '..' component")
    if name in RESERVED_NAMES:
        raise _fail(f"file name {name!r} is reserved for the bundle's own members")
    return name


def _parse_files(value: object) -> tuple[PayloadFile, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_FILES:
        raise _fail(f"files must be a list of 1 to {MAX_FILES} entries")
    files: list[PayloadFile] = []
    names: set[str] = set()
    prefixes: set[str] = set()
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "size", "sha256"}:
            raise _fail(f"files[{index}] must have exactly name, role, size, sha256")
        name = check_member_name(entry["name"])
        folded = name.lower()
        if folded in names or folded in prefixes or any(p == folded for p in names):
            raise _fail(f"files[{index}]: name {name!r} is listed twice (or clashes with another name)")
        parents = {"/".join(folded.split("/")[:i]) for i in range(1, folded.count("/") + 1)}
        if parents & names:
            raise _fail(f"files[{index}]: {name!r} would be inside another file")
        names.add(folded)
        prefixes |= parents
        role = entry["role"]
        if role not in ROLES:
            raise _fail(f"files[{index}]: role must be one of {', '.join(ROLES)}")
        files.append(
            PayloadFile(
                name,
                role,
                _size(entry["size"], f"files[{index}].size"),
                _sha(entry["sha256"], f"files[{index}].sha256"),
            )
        )
    return tuple(files)


def _parse_image(image: object) -> ImageIdentity:
    if not isinstance(image, dict) or set(image) != {"sha256", "size", "delta_base_sha256"}:
        raise _fail("image must have exactly sha256, size, delta_base_sha256")
    base = image["delta_base_sha256"]
    return ImageIdentity(
        _sha(image["sha256"], "image.sha256"),
        _size(image["size"], "image.size"),
        None if base is None else _sha(base, "image.delta_base_sha256"),
    )


def _parse_release_date(release: object) -> date:
    if not isinstance(release, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", release):
        raise _fail("release_date must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(release)
    except ValueError:
        raise _fail(f"release_date {release!r} is not a real date") from None


def parse_manifest(data: bytes) -> Manifest:
    """Parse the exact stored manifest bytes strictly; every violation raises a :class:`ManifestInvalid`."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(f"manifest is {len(data)} bytes; at most {MAX_MANIFEST_BYTES} allowed")
    doc = strict_json.loads_object(
        data, what="manifest", error=ManifestInvalid, duplicate_error=ManifestDuplicateKey
    )
    if set(doc) != _TOP:
        missing, extra = sorted(_TOP - set(doc)), sorted(set(doc) - _TOP)
        raise _fail(f"manifest fields wrong: missing {missing}, unexpected {extra}")
    if doc["format"] != FORMAT or isinstance(doc["format"], bool):
        raise _fail(f"manifest format {doc['format']!r} is not supported (expected {FORMAT})")
    if doc["product"] != PRODUCT:
        raise _fail(f"product must be {PRODUCT!r}")
    channel = doc["channel"]
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise _fail("channel must be 1-32 of [a-z0-9._-]")
    try:
        version = parse_version(doc["version"])
        upgrade_from = parse_range(doc["upgrade_from"])
    except InvalidVersion as exc:
        raise _fail(f"manifest: {exc.message}") from None
    release_date = _parse_release_date(doc["release_date"])
    identity = _parse_image(doc["image"])
    files = _parse_files(doc["files"])
    roles = [f.role for f in files]
    image_role = "image-delta" if identity.delta_base_sha256 else "image"
    for role in (image_role, "collection", "service", "notes"):
        if roles.count(role) != 1:
            raise _fail(f"files must hold exactly one {role!r} entry (found {roles.count(role)})")
    if len(roles) != 4:
        raise _fail("files must hold exactly one image or image-delta, collection, service and notes entry")
    whole = next(f for f in files if f.role == image_role)
    if image_role == "image" and (whole.sha256 != identity.sha256 or whole.size != identity.size):
        raise _fail("the image file's sha256/size must equal image.sha256/size")
    if identity.delta_base_sha256 == identity.sha256:
        raise _fail("a delta's base image must differ from the target image")
    return Manifest(PRODUCT, version, channel, release_date, upgrade_from, identity, files)
