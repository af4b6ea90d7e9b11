# Copyright: Corral maintainers
# Apache-2.0
"""Running the Ceph CLI from the corral.cloud ceph_* modules: one way to build its command line, read JSON."""

from __future__ import annotations

from typing import Any

from ansible_collections.corral.cloud.plugins.module_utils.ceph_report import (  # type: ignore[import-untyped]
    CephOutputError,
    load_json,
)

# The options every ceph_* module takes for reaching the cluster (merged into its argument_spec).
CONNECTION_OPTIONS: dict[str, Any] = {
    "cluster": {"type": "str", "default": "ceph"},
    "connect_timeout": {"type": "int", "default": 10},
}


def ceph_argv(params: dict[str, Any], *args: str) -> list[str]:
    """``ceph --cluster C --connect-timeout T ARGS`` from a module's parameters."""
    timeout = str(params["connect_timeout"])
    return ["ceph", "--cluster", params["cluster"], "--connect-timeout", timeout, *args]


def run_ceph(module: Any, *args: str) -> tuple[int, str, str]:
    rc, stdout, stderr = module.run_command(ceph_argv(module.params, *args))
    return int(rc), str(stdout), str(stderr)


def ceph_json(module: Any, *args: str) -> Any:
    """``ceph ARGS --format json``, parsed; :class:`CephOutputError` (naming the command) when it fails."""
    argv = ceph_argv(module.params, *args, "--format", "json")
    rc, stdout, stderr = module.run_command(argv)
    if rc != 0:
        raise CephOutputError(f"`{' '.join(argv)}` failed (rc={rc}): {stderr.strip() or stdout.strip()}")
    return load_json(stdout, " ".join(argv))
