"""One virtual BMC process per lab node (:mod:`updater.lab.bmc`), on its own loopback address, port 623.

``up`` starts them detached (they outlive the command) with the lab's credentials (password in a 0600 file
under the lab's state directory, never on a command line); ``down`` stops them. The node's power backend is
its LXC container, so a BMC power-on boots the node through the same pre-start hook (boot pointer) as
``corral-lab power``.
"""

from __future__ import annotations

import os
from pathlib import Path

from updater.lab.bmc import (
    BmcConfigError,
    BmcStartError,
    running_bmc_pid,
    start_bmc_process,
    stop_bmc_process,
)
from updater.lab.errors import LabError
from updater.lab.layout import BMC_PORT, LabLayout, node_name


def _dir(layout: LabLayout) -> Path:
    return layout.state_dir / "bmc"


def _pidfile(layout: LabLayout, number: int) -> Path:
    return _dir(layout) / f"{node_name(number)}.pid"


def password_file(layout: LabLayout) -> Path:
    return _dir(layout) / "password"


def state(layout: LabLayout, number: int) -> str:
    return "running" if running_bmc_pid(_pidfile(layout, number)) is not None else "stopped"


def ensure(layout: LabLayout, nodes: int, user: str, password: str) -> bool:
    """Start the BMCs that are not running; True if any was started."""
    _dir(layout).mkdir(parents=True, exist_ok=True)
    pw_file = password_file(layout)
    if not pw_file.exists():
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password)
    started = False
    for number in range(1, nodes + 1):
        pidfile = _pidfile(layout, number)
        if running_bmc_pid(pidfile) is not None:
            continue
        try:
            start_bmc_process(
                address=layout.bmc_address(number),
                port=BMC_PORT,
                user=user,
                password_file=pw_file,
                pidfile=pidfile,
                log_file=_dir(layout) / f"{node_name(number)}.log",
                lxcpath=layout.lxc_path.resolve(),
                name=layout.container(node_name(number)),
                lab_dir=layout.state_dir,
            )
        except (BmcConfigError, BmcStartError) as exc:
            raise LabError(f"BMC of {node_name(number)}: {exc}") from exc
        started = True
    return started


def stop_all(layout: LabLayout) -> None:
    for pidfile in sorted(_dir(layout).glob("node*.pid")) if _dir(layout).is_dir() else []:
        try:
            stop_bmc_process(pidfile)
        except BmcStartError as exc:
            raise LabError(f"cannot stop the BMC of {pidfile.stem}: {exc}") from exc
