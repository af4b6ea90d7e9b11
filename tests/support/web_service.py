"""``corral-updater web`` as an operator runs it, for the benchmarks: a home made by ``corral-updater init``
with an inventory and an admin API token, gunicorn over HTTPS on a free loopback port, stopped (its whole
process group) at the end. :func:`demo_like_web` sets it up as ``make demo`` does: an Ansible inventory
file read through ``ansible-inventory``, a vendor-signed license in the trust directory, Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port, listening
from tests.support.service_stack import CLI
from updater.services.vendor import keys as vendor_keys


@dataclass(frozen=True)
class WebService:
    base: str  # https://127.0.0.1:<port>
    token: str  # the admin's API token
    ca: str  # the certificate init made (self-signed for 127.0.0.1)
    home: Path


def cli(home: Path, *args: str) -> str:
    """``corral-updater --home <home> <args>``; its standard output (raises if it fails)."""
    return subprocess.run(
        [CLI, "--home", str(home), *args], capture_output=True, text=True, check=True
    ).stdout


@contextmanager
def running_web(
    root: Path,
    inventory: dict[str, Any] | None = None,
    *,
    inventory_file: Path | None = None,
    init_args: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> Iterator[WebService]:
    """The service's web under ``root`` (home, web.log), listening until the block ends. Its inventory is
    ``inventory`` saved as ``ansible-inventory --list`` JSON (read without Ansible), or ``inventory_file``
    (any source, read through ``ansible-inventory``); ``settings`` are written into ``updater.json`` after
    init, as an operator edits it."""
    if inventory_file is None:
        inventory_file = root / "inventory.json"
        inventory_file.write_text(json.dumps(inventory or {}))
    home = root / "home"
    port = free_port()
    cli(home, "init", "--bind", f"127.0.0.1:{port}", "--inventory", str(inventory_file), *init_args)
    token = cli(home, "token", "create", "admin", "--name", "bench").strip()
    if settings:
        settings_file = home / "updater.json"
        settings_file.write_text(json.dumps({**json.loads(settings_file.read_text()), **settings}))
    log_file = root / "web.log"
    with log_file.open("wb") as log:
        web = subprocess.Popen(
            [CLI, "--home", str(home), "web"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while not listening("127.0.0.1", port):
            if web.poll() is not None:
                raise AssertionError(f"corral-updater web exited: {log_file.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("corral-updater web did not listen within 60 s")
            time.sleep(0.1)
        yield WebService(f"https://127.0.0.1:{port}", token, str(home / "tls" / "cert.pem"), home)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()


def lab_like_inventory(path: Path, nodes: int) -> Path:
    """An inventory file shaped as ``corral-lab`` writes the demo's (docs/inventory.md): group ``nodes``,
    per-host addresses and BMC details, group vars; YAML, so the service reads it through
    ``ansible-inventory``."""
    hosts = {
        f"n{n}": {
            "ansible_host": f"10.77.9.{10 + n}",
            "corral_address": f"10.77.9.{10 + n}",
            "corral_site": "site1",
            "corral_bmc_address": f"127.77.9.{n}",
            "corral_bmc_port": 623,
            "corral_bmc_user": "admin",
            "corral_bmc_password": "bench-bmc-password",
            "corral_data_disks": ["/dev/loop9"],
        }
        for n in range(1, nodes + 1)
    }
    group_vars = {
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
        "corral_cluster_name": "lab-bench",
        "corral_cluster_network": "10.77.9.0/24",
        "corral_vip": "10.77.9.10",
        "corral_lab": "bench",
    }
    path.write_text(yaml.safe_dump({"all": {"children": {"nodes": {"hosts": hosts, "vars": group_vars}}}}))
    return path


def trust_args(root: Path) -> list[str]:
    """``corral-updater init`` options installing a vendor's trust root, keyring and a license made under
    ``root`` now (as ``make demo`` does with ``corral-bundle keys init`` and ``license issue``)."""
    now = datetime.now(UTC)
    vendor = root / "vendor"
    vendor_keys.init_vendor(vendor, now=now)
    _, license_path, key_path = vendor_keys.issue_license(
        vendor,
        root / "licenses",
        now=now,
        customer="Corral bench customer",
        channels=["stable"],
        node_entitlement=16,
        updates_until=date.today() + timedelta(days=300),
        expires=date.today() + timedelta(days=360),
    )
    layout = vendor_keys.VendorDir(vendor)
    return [
        "--trust-root", str(layout.trust_root), "--keyring", str(layout.keyring),
        "--license", str(license_path), "--entitlement-key", str(key_path),
    ]  # fmt: skip


@contextmanager
def demo_like_web(root: Path, redis_url: str, *, nodes: int = 3) -> Iterator[WebService]:
    """The web service configured as ``make demo`` configures it (its default worker processes and
    threads): a lab-shaped inventory file, a license, Redis."""
    inventory = lab_like_inventory(root / "inventory.yml", nodes)
    args = ["--redis-url", redis_url, *trust_args(root)]
    with running_web(root, inventory_file=inventory, init_args=args) as web:
        yield web
