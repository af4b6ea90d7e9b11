"""Read an Ansible inventory through ``ansible-inventory --list`` and build the planner's model.

Going through ``ansible-inventory`` (rather than parsing files ourselves) means every inventory
source Ansible accepts (YAML, INI, directories with group_vars, plugins) is read exactly as the
playbooks will read it.

That costs a Python process start and Ansible's inventory machinery (≈ 0.6 s), too much for every status
request: :func:`load_inventory_cached` keeps the model while the files ``ansible-inventory`` reads are
unchanged (a source file and the ``group_vars``/``host_vars`` beside it, or a source directory's whole tree;
:func:`inventory_fingerprint`). A dynamic inventory plugin whose answer changes without any file changing is
outside the inventory contract (docs/inventory.md); its change is seen at the next file change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from updater.domain.inventory import Inventory, inventory_from_ansible
from updater.services.filecache import FileMemo, Fingerprint, Kept, fingerprint


class InventoryLoadError(RuntimeError):
    """ansible-inventory could not read the inventory."""


def _ansible_inventory() -> str:
    beside = Path(sys.executable).with_name("ansible-inventory")
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-inventory")
    if found is None:
        raise InventoryLoadError("ansible-inventory is not installed (it comes with ansible-core)")
    return found


def _strict_environment() -> dict[str, str]:
    """By default ansible-inventory only warns about a source it cannot parse; make that an error."""
    return dict(
        os.environ,
        ANSIBLE_INVENTORY_UNPARSED_FAILED="True",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True",
    )


def ansible_inventory_data(sources: Sequence[str | Path], *, timeout: float = 120) -> dict[str, Any]:
    """The JSON of ``ansible-inventory -i SOURCE... --list``."""
    if not sources:
        raise InventoryLoadError("no inventory source given")
    missing = [str(source) for source in sources if "," not in str(source) and not Path(source).exists()]
    if missing:
        raise InventoryLoadError(f"inventory source not found: {', '.join(missing)}")
    command = [_ansible_inventory()]
    for source in sources:
        command += ["-i", str(source)]
    command.append("--list")
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=_strict_environment()
        )
    except subprocess.TimeoutExpired as error:
        raise InventoryLoadError(f"ansible-inventory took longer than {timeout:g} s") from error
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise InventoryLoadError(f"ansible-inventory could not read the inventory: {detail}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise InventoryLoadError(f"ansible-inventory printed something that is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise InventoryLoadError("ansible-inventory printed JSON that is not an object")
    return data


def load_inventory(sources: Sequence[str | Path], *, timeout: float = 120) -> Inventory:
    return inventory_from_ansible(ansible_inventory_data(sources, timeout=timeout))


def inventory_fingerprint(sources: Sequence[str | Path]) -> Fingerprint:
    """The fingerprint of what ``ansible-inventory -i SOURCE...`` reads: a source file with the ``group_vars``
    and ``host_vars`` directories beside it, or a source directory's whole tree (its own ``group_vars`` and
    ``host_vars`` included). A comma-separated host list is its own text."""
    files: list[Path] = []
    trees: list[Path] = []
    for source in sources:
        text = str(source)
        if "," in text:
            continue  # a host list: the key already holds it
        path = Path(source).absolute()
        if path.is_dir():
            trees.append(path)
        else:
            files.append(path)
            trees += [path.parent / "group_vars", path.parent / "host_vars"]
    return fingerprint(files, trees=trees)


_INVENTORIES: FileMemo[Inventory] = FileMemo()


def load_inventory_cached(sources: Sequence[str | Path], *, timeout: float = 120) -> Inventory:
    """:func:`load_inventory`, run again only when :func:`inventory_fingerprint` changes."""
    key = tuple(str(Path(s).absolute()) if "," not in str(s) else str(s) for s in sources)
    return _INVENTORIES.get(
        key,
        lambda: inventory_fingerprint(sources),
        lambda: Kept(load_inventory(sources, timeout=timeout)),
    )
