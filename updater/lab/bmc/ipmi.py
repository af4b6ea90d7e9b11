"""The IPMI 2.0 rules the virtual BMC follows: pure functions, no sockets, no processes.

Numbers are those of the IPMI v2.0 specification (rev. 1.1): completion codes (table 5-2), Chassis Control
(section 28.3), Get Device ID (section 20.1) and the RAKP status codes (table 13-15).
"""

from __future__ import annotations

import enum
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

# Netfn/command pairs the BMC answers; anything else gets INVALID_COMMAND.
NETFN_CHASSIS = 0x00
NETFN_APP = 0x06
CMD_GET_CHASSIS_STATUS = 0x01
CMD_CHASSIS_CONTROL = 0x02
CMD_GET_DEVICE_ID = 0x01
CMD_GET_SYSTEM_GUID = 0x37

# RAKP message status codes (table 13-15) the BMC sends when it refuses a login.
RAKP_UNAUTHORIZED_NAME = 0x0D
RAKP_INVALID_INTEGRITY_CHECK = 0x0F

# IPMI 2.0 limits: user names are at most 16 bytes, passwords at most 20 bytes (RAKP, table 13-11).
MAX_USER_BYTES = 16
MAX_PASSWORD_BYTES = 20
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# The off time of a power cycle: the specification asks for at least one second.
POWER_CYCLE_OFF_SECONDS = 1.0


class CompletionCode(enum.IntEnum):
    OK = 0x00
    INVALID_COMMAND = 0xC1
    TIMEOUT = 0xC3
    REQUEST_DATA_LENGTH_INVALID = 0xC7
    INVALID_DATA_FIELD = 0xCC
    NOT_SUPPORTED_IN_PRESENT_STATE = 0xD5
    UNSPECIFIED_ERROR = 0xFF


class ChassisControl(enum.IntEnum):
    """The first data byte of Chassis Control."""

    POWER_DOWN = 0
    POWER_UP = 1
    POWER_CYCLE = 2
    HARD_RESET = 3
    DIAGNOSTIC_INTERRUPT = 4
    SOFT_SHUTDOWN = 5


class PowerAction(enum.Enum):
    """What the BMC does to the node's power for one Chassis Control request."""

    NOTHING = "nothing"
    POWER_ON = "power on"
    POWER_OFF = "power off"
    POWER_CYCLE = "power cycle"
    RESET = "reset"
    SHUTDOWN = "soft shutdown"


class IpmiError(Exception):
    """A request the BMC answers with a non-zero completion code (the message is for the log)."""

    def __init__(self, completion_code: CompletionCode, message: str) -> None:
        super().__init__(message)
        self.completion_code = completion_code


def plan_chassis_control(data: Sequence[int], powered_on: bool) -> PowerAction:
    """The power action for a Chassis Control request, given whether the node is on now.

    As on real BMCs, requests whose end state already holds are no-ops (power down or soft shutdown of a node
    that is off, power up of a node that is on). Power cycle and hard reset need a running node: the
    specification says nothing should happen if the system is off, and recommends completion code D5h, so a
    fencing agent learns it must power the node on instead of believing it rebooted.
    """
    if len(data) != 1:
        raise IpmiError(
            CompletionCode.REQUEST_DATA_LENGTH_INVALID,
            f"chassis control carries exactly one data byte, got {len(data)}",
        )
    try:
        directive = ChassisControl(data[0])
    except ValueError:
        raise IpmiError(
            CompletionCode.INVALID_DATA_FIELD, f"unknown chassis control directive {data[0]:#04x}"
        ) from None
    if directive is ChassisControl.POWER_DOWN:
        return PowerAction.POWER_OFF if powered_on else PowerAction.NOTHING
    if directive is ChassisControl.POWER_UP:
        return PowerAction.NOTHING if powered_on else PowerAction.POWER_ON
    if directive is ChassisControl.SOFT_SHUTDOWN:
        return PowerAction.SHUTDOWN if powered_on else PowerAction.NOTHING
    if directive is ChassisControl.DIAGNOSTIC_INTERRUPT:
        raise IpmiError(CompletionCode.INVALID_DATA_FIELD, "diagnostic interrupt (NMI) is not supported")
    if not powered_on:
        raise IpmiError(
            CompletionCode.NOT_SUPPORTED_IN_PRESENT_STATE,
            f"{directive.name.lower().replace('_', ' ')} of a node that is off does nothing: power it on",
        )
    return PowerAction.POWER_CYCLE if directive is ChassisControl.POWER_CYCLE else PowerAction.RESET


def chassis_status_data(powered_on: bool) -> list[int]:
    """Get Chassis Status: current power state (bit 0 = on), last power event, misc. state."""
    return [0x01 if powered_on else 0x00, 0x00, 0x00]


@dataclass(frozen=True)
class DeviceIdentity:
    """What Get Device ID reports."""

    device_id: int = 0x20
    device_revision: int = 0
    firmware_major: int = 0
    firmware_minor: int = 1
    manufacturer_id: int = 0  # IANA enterprise number; 0 = unspecified (a lab BMC has no vendor)
    product_id: int = 0


def device_id_data(identity: DeviceIdentity) -> list[int]:
    """Get Device ID response data (section 20.1, without the optional auxiliary firmware bytes)."""
    if not 0 <= identity.firmware_major <= 0x7F or not 0 <= identity.firmware_minor <= 99:
        raise ValueError("firmware revision: major 0-127, minor 0-99")
    minor_bcd = (identity.firmware_minor // 10) << 4 | identity.firmware_minor % 10
    manufacturer = struct.pack("<I", identity.manufacturer_id)
    if manufacturer[3] != 0:
        raise ValueError("manufacturer id is a 20-bit IANA number")
    return [
        identity.device_id & 0xFF,
        identity.device_revision & 0x0F,  # bit 7 clear: no SDRs
        identity.firmware_major,  # bit 7 clear: normal operation
        minor_bcd,
        0x02,  # IPMI version 2.0 (BCD, least significant digit in the high nibble)
        0x80,  # additional device support: chassis device
        *manufacturer[:3],
        *struct.pack("<H", identity.product_id),
    ]


def system_guid(node: str) -> uuid.UUID:
    """A stable GUID per node, so Get System GUID and RAKP answer the same across BMC restarts."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"corral-lab-bmc:{node}")


def validate_user(user: str) -> str:
    if not _USER.fullmatch(user) or len(user.encode()) > MAX_USER_BYTES:
        raise ValueError(
            f"BMC user {user!r}: use 1-{MAX_USER_BYTES} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return user


def validate_password(password: str) -> str:
    size = len(password.encode())
    if not 1 <= size <= MAX_PASSWORD_BYTES:
        raise ValueError(f"BMC password: IPMI 2.0 takes 1-{MAX_PASSWORD_BYTES} bytes, this one has {size}")
    if any(not ch.isprintable() for ch in password):
        raise ValueError("BMC password: use printable characters only (no newlines or control characters)")
    return password
