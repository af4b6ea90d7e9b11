"""The strict tar subset bundles use: ustar headers for regular files only, names of at most 100 bytes.

Bundles never contain extended (pax/GNU) headers, links, devices, FIFOs or directories, so a reader that
refuses all of them cannot be tricked by a feature it does not need. Pure: blocks in, parsed headers out.
"""

from __future__ import annotations

from dataclasses import dataclass

from updater.domain.errors import BundleFormatError, UnsafeMemberPath, UnsafeMemberType
from updater.domain.manifest import NAME_MAX

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_TYPES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device node",
    b"4": "a block device node",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"x": "a pax extended header",
    b"g": "a pax global header",
    b"L": "a GNU long-name header",
    b"K": "a GNU long-link header",
    b"S": "a GNU sparse file",
}


@dataclass(frozen=True)
class TarMember:
    name: str
    size: int

    @property
    def padded_size(self) -> int:
        return padded(self.size)


def padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _checksum(block: bytes) -> int:
    return sum(block[:148]) + 8 * 32 + sum(block[156:])


def parse_number(field: bytes) -> int:
    """Octal (NUL/space terminated) or GNU base-256 numeric field."""
    if field and field[0] & 0x80:
        value = field[0] & 0x3F
        for byte in field[1:]:
            value = value << 8 | byte
        if field[0] & 0x40:
            raise BundleFormatError("negative number in a tar header")
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise BundleFormatError(f"tar header number {text!r} is not octal") from None


def header_checksum_ok(block: bytes) -> bool:
    try:
        return parse_number(block[148:156]) == _checksum(block)
    except BundleFormatError:
        return False


def _text(field: bytes) -> str:
    raw = field.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeMemberPath(f"tar member name {raw!r} is not UTF-8") from None


def check_path(name: str) -> None:
    """Refuse absolute paths, '..' or '.' components, backslashes, empty components and control characters."""
    if name.startswith("/"):
        raise UnsafeMemberPath(f"tar member {name!r} has an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise UnsafeMemberPath(f"tar member {name!r} contains a '..' component")
    if "." in parts or "" in parts or "\\" in name or any(ord(c) < 32 for c in name):
        raise UnsafeMemberPath(f"tar member {name!r} is not a plain relative path")


def parse_header(block: bytes) -> TarMember | None:
    """Parse one 512-byte header; ``None`` for an all-zero block (end of archive)."""
    if len(block) != BLOCK:
        raise BundleFormatError("short tar header block")
    if block == b"\0" * BLOCK:
        return None
    if block[257:262] != b"ustar":
        raise BundleFormatError("member header is not a ustar tar header")
    if not header_checksum_ok(block):
        raise BundleFormatError("tar header checksum does not match")
    prefix, base = _text(block[345:500]), _text(block[0:100])
    name = f"{prefix}/{base}" if prefix else base
    typeflag = block[156:157]
    if typeflag not in (b"0", b"\0"):
        kind = _TYPES.get(typeflag, f"of unknown type {typeflag!r}")
        raise UnsafeMemberType(f"tar member {name!r} is {kind}; bundles hold regular files only")
    check_path(name)
    return TarMember(name, parse_number(block[124:136]))


def build_header(name: str, size: int) -> bytes:
    """A deterministic ustar header for a regular file (mode 0644, owner 0, mtime 0)."""
    encoded = name.encode("utf-8")
    if len(encoded) > NAME_MAX:
        raise ValueError(f"member name {name!r} is longer than {NAME_MAX} bytes")
    check_path(name)
    block = bytearray(BLOCK)
    block[0 : len(encoded)] = encoded
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    if size < 8**11:
        block[124:136] = f"{size:011o}\0".encode()
    else:
        block[124:136] = bytes([0x80]) + size.to_bytes(11, "big")
    block[136:148] = b"00000000000\0"
    block[156:157] = b"0"
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[148:156] = f"{_checksum(bytes(block)):06o}\0 ".encode()
    return bytes(block)


def is_canonical(block: bytes, member: TarMember) -> bool:
    """Whether ``block`` is exactly the header :func:`build_header` writes for ``member``'s name and size.

    A bundle's member data is covered by the signed manifest, its headers are not: a header with another
    mtime, mode or owner name (and its checksum fixed) would be bytes a bundle could change unnoticed.
    """
    try:
        return block == build_header(member.name, member.size)
    except ValueError:  # a name build_header would not write (longer than a ustar name field)
        return False
