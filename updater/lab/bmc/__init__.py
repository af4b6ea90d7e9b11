"""A virtual BMC per lab node, speaking real IPMI 2.0 (RMCP+/lanplus) over UDP on a loopback address.

Fencing code talks to it exactly as to a server's out-of-band controller (``ipmitool -I lanplus``,
``fence_ipmilan``). Modules: :mod:`.ipmi` (the protocol rules, pure), :mod:`.power` (what powers a node:
LXC or a plain process), :mod:`.server` (the typed layer over pyghmi's BMC), :mod:`.process` (command line,
pid file, start/stop for the lab). Run one per node: ``python -m updater.lab.bmc --help``.
"""

from updater.lab.bmc.ipmi import CompletionCode, PowerAction
from updater.lab.bmc.power import LxcPower, PowerControl, PowerError, SubprocessPower
from updater.lab.bmc.process import (
    BmcConfigError,
    BmcStartError,
    main,
    parse_args,
    running_bmc_pid,
    start_bmc_process,
    stop_bmc_process,
)
from updater.lab.bmc.server import VirtualBmc

__all__ = [
    "BmcConfigError",
    "BmcStartError",
    "CompletionCode",
    "LxcPower",
    "PowerAction",
    "PowerControl",
    "PowerError",
    "SubprocessPower",
    "VirtualBmc",
    "main",
    "parse_args",
    "running_bmc_pid",
    "start_bmc_process",
    "stop_bmc_process",
]
