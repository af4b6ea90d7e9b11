"""The virtual BMC's IPMI rules: chassis control to power action, status, device id, GUID, credentials."""

from __future__ import annotations

import uuid

import pytest

from updater.lab.bmc.ipmi import (
    ChassisControl,
    CompletionCode,
    DeviceIdentity,
    IpmiError,
    PowerAction,
    chassis_status_data,
    device_id_data,
    plan_chassis_control,
    system_guid,
    validate_password,
    validate_user,
)


@pytest.mark.parametrize(
    ("directive", "powered_on", "action"),
    [
        (ChassisControl.POWER_DOWN, True, PowerAction.POWER_OFF),
        (ChassisControl.POWER_DOWN, False, PowerAction.NOTHING),
        (ChassisControl.POWER_UP, False, PowerAction.POWER_ON),
        (ChassisControl.POWER_UP, True, PowerAction.NOTHING),
        (ChassisControl.POWER_CYCLE, True, PowerAction.POWER_CYCLE),
        (ChassisControl.HARD_RESET, True, PowerAction.RESET),
        (ChassisControl.SOFT_SHUTDOWN, True, PowerAction.SHUTDOWN),
        (ChassisControl.SOFT_SHUTDOWN, False, PowerAction.NOTHING),
    ],
)
def test_chassis_control_maps_to_power_action(
    directive: ChassisControl, powered_on: bool, action: PowerAction
) -> None:
    assert plan_chassis_control([directive], powered_on) is action


@pytest.mark.parametrize("directive", [ChassisControl.POWER_CYCLE, ChassisControl.HARD_RESET])
def test_cycle_and_reset_of_a_node_that_is_off_are_refused_not_turned_into_power_on(
    directive: ChassisControl,
) -> None:
    with pytest.raises(IpmiError, match="power it on") as refused:
        plan_chassis_control([directive], powered_on=False)
    assert refused.value.completion_code is CompletionCode.NOT_SUPPORTED_IN_PRESENT_STATE


@pytest.mark.parametrize("powered_on", [True, False])
def test_diagnostic_interrupt_is_unsupported(powered_on: bool) -> None:
    with pytest.raises(IpmiError, match="NMI") as refused:
        plan_chassis_control([ChassisControl.DIAGNOSTIC_INTERRUPT], powered_on)
    assert refused.value.completion_code is CompletionCode.INVALID_DATA_FIELD


@pytest.mark.parametrize("byte", [6, 0x09, 0x7F, 0xFF])
def test_unknown_directive_is_an_invalid_data_field(byte: int) -> None:
    with pytest.raises(IpmiError, match=f"{byte:#04x}") as refused:
        plan_chassis_control([byte], powered_on=True)
    assert refused.value.completion_code is CompletionCode.INVALID_DATA_FIELD


@pytest.mark.parametrize("data", [[], [0, 0], [1, 2, 3]])
def test_chassis_control_needs_exactly_one_data_byte(data: list[int]) -> None:
    with pytest.raises(IpmiError, match="exactly one data byte") as refused:
        plan_chassis_control(data, powered_on=True)
    assert refused.value.completion_code is CompletionCode.REQUEST_DATA_LENGTH_INVALID


def test_chassis_status_reports_power_in_bit_zero() -> None:
    assert chassis_status_data(True)[0] & 1 == 1
    assert chassis_status_data(False)[0] & 1 == 0
    assert len(chassis_status_data(True)) == 3


def test_device_id_layout_follows_the_specification() -> None:
    data = device_id_data(
        DeviceIdentity(firmware_major=3, firmware_minor=42, manufacturer_id=0x0ABCDE, product_id=0x1234)
    )
    assert len(data) == 11
    assert data[2:4] == [3, 0x42]  # minor revision in BCD
    assert data[4] == 0x02  # IPMI 2.0
    assert data[6:9] == [0xDE, 0xBC, 0x0A]  # 3-byte manufacturer, least significant first
    assert data[9:11] == [0x34, 0x12]


@pytest.mark.parametrize(
    "identity",
    [
        DeviceIdentity(firmware_major=128),
        DeviceIdentity(firmware_minor=100),
        DeviceIdentity(manufacturer_id=1 << 24),
    ],
)
def test_device_id_rejects_values_that_do_not_fit(identity: DeviceIdentity) -> None:
    with pytest.raises(ValueError, match=r"firmware|manufacturer"):
        device_id_data(identity)


def test_system_guid_is_stable_per_node_and_differs_between_nodes() -> None:
    assert system_guid("node1") == system_guid("node1")
    assert system_guid("node1") != system_guid("node2")
    assert isinstance(system_guid("node1"), uuid.UUID)


@pytest.mark.parametrize("user", ["admin", "a", "fence.agent_1-x", "u" * 16])
def test_valid_users(user: str) -> None:
    assert validate_user(user) == user


@pytest.mark.parametrize(
    "user", ["", "u" * 17, "-admin", "ad min", "admin\n", "adm:in", "ädmin", "admin\x00"]
)
def test_invalid_users_are_refused_with_the_rule(user: str) -> None:
    with pytest.raises(ValueError, match="1-16 letters"):
        validate_user(user)


@pytest.mark.parametrize("password", ["p", "correct horse", "x" * 20, "pässwörd"])
def test_valid_passwords(password: str) -> None:
    assert validate_password(password) == password


def test_password_longer_than_ipmi_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="1-20 bytes, this one has 21"):
        validate_password("x" * 21)
    with pytest.raises(ValueError, match="this one has 22"):
        validate_password("ä" * 11)  # 11 characters, 22 bytes


@pytest.mark.parametrize("password", ["", "two\nlines", "tab\there"])
def test_empty_or_control_character_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValueError, match="BMC password"):
        validate_password(password)
