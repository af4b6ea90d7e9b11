"""Boot pointers: "boot X once, check, then make it default", and a failed trial falls back by itself."""

from __future__ import annotations

import pytest

from tests.lab.conftest import LabSession, corral_lab
from updater.lab.errors import LabError

pytestmark = pytest.mark.lab


def test_boot_once_then_fall_back_then_make_default(lab: LabSession) -> None:
    node = "node3"
    trial = lab.derive_image("0.1.0+labtest", {"/etc/motd": "trial image\n"})
    try:
        booted = corral_lab("--lab", lab.name, "boot", node, "--once", trial)
        assert booted.returncode == 0, booted.stderr
        assert f"next boot {trial}" in booted.stdout
        cycled = corral_lab("--lab", lab.name, "power", node, "cycle")
        assert cycled.returncode == 0, cycled.stderr
        assert "CORRAL_VERSION=0.1.0+labtest" in lab.release(node)
        assert lab.lab.boot_pointer(node).next is None
        assert (lab.boots(node)[-1].image, lab.boots(node)[-1].kind) == (trial, "once")

        lab.lab.power(node, "cycle")  # not made default: the next boot is the old image again
        assert "CORRAL_VERSION=0.1.0+labtest" not in lab.release(node)
        assert (lab.boots(node)[-1].image, lab.boots(node)[-1].kind) == (lab.base_image, "default")

        assert corral_lab("--lab", lab.name, "boot", node, "--default", trial).returncode == 0
        lab.reboot_inside(node)
        assert "CORRAL_VERSION=0.1.0+labtest" in lab.release(node)
        lab.reboot_inside(node)
        assert "CORRAL_VERSION=0.1.0+labtest" in lab.release(node)
        assert lab.ssh(node, "cat /etc/motd") == "trial image\n"
    finally:
        lab.reset(node)
    assert lab.lab.boot_pointer(node).current == lab.base_image


def test_a_trial_boot_of_a_missing_image_comes_back_on_the_default_after_a_power_cycle(
    lab: LabSession,
) -> None:
    node = "node3"
    try:
        lab.lab.boot_once(node, lab.base_image)  # a valid pointer, then the image "disappears" under it
        (lab.lab.layout.node_dir(node) / "boot" / "next").write_text("e" * 64 + "\n")
        lab.lab.power(node, "off")
        with pytest.raises(LabError, match="lxc-start failed"):
            lab.lab.power(node, "on")
        assert lab.boots(node)[-1].kind == "once failed:no-such-image"
        lab.lab.power(node, "cycle")
        assert lab.lab.boot_pointer(node).current == lab.base_image
        assert lab.boots(node)[-1].kind == "default"
    finally:
        lab.reset(node)
