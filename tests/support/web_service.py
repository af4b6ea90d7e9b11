"""``corral-updater web`` as an operator runs it, for the benchmarks: a home made by ``corral-updater init``
with an inventory and an admin API token, gunicorn over HTTPS on a free loopback port, stopped (its whole
process group) at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.net import free_port, listening
from tests.support.service_stack import CLI


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
def running_web(root: Path, inventory: dict[str, Any]) -> Iterator[WebService]:
    """The service's web under ``root`` (home, inventory.json, web.log), listening until the block ends."""
    inventory_file = root / "inventory.json"
    inventory_file.write_text(json.dumps(inventory))
    home = root / "home"
    port = free_port()
    cli(home, "init", "--bind", f"127.0.0.1:{port}", "--inventory", str(inventory_file))
    token = cli(home, "token", "create", "admin", "--name", "bench").strip()
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
