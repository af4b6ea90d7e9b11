"""The Ansible environment of the service's own plays (the preflight's observation, the probe's keys): the
service finds the ``corral.cloud`` collection itself, whatever the shell that started it set.

Without this, a ``corral-updater plan`` from a shell without ``ANSIBLE_CONFIG`` ran its play with no
collection path: ``corral.cloud.node_release`` and the role ``corral.cloud.rolling_node`` were not found, and
that engine error came out as a verdict on the cluster (issue 19 item 4). The collection is found where the
service is installed:

- a source checkout (the package's parent directory holds the collection's ``galaxy.yml``): linked as
  ``ansible_collections/corral/cloud`` in the play's scratch directory, and its ``ansible.cfg`` used when the
  environment names no other;
- the release it was installed from (``<home>/releases/<version>/collections``, where a rollout installs each
  release's collection and after which the service moves onto that release's package);

then whatever the Ansible configuration of this process adds (its ``collections_path``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import updater

SOURCE = Path(updater.__file__).resolve().parent.parent  # a checkout's root when the package runs from one
COLLECTION = ("ansible_collections", "corral", "cloud")


def source_checkout() -> Path | None:
    """The checkout of the collection this package runs from, or ``None`` (an installed package)."""
    try:
        galaxy = (SOURCE / "galaxy.yml").read_text()
    except OSError:
        return None
    ours = re.search(r"^namespace:\s*corral\s*$", galaxy, re.MULTILINE) and re.search(
        r"^name:\s*cloud\s*$", galaxy, re.MULTILINE
    )
    return SOURCE if ours else None


def installed_collections(home: Path) -> Path:
    """Where a rollout installed the collection of the release this package is (``releases/<version>``)."""
    return home / "releases" / updater.__version__ / "collections"


def collection_roots(scratch: Path, home: Path | None = None) -> list[Path]:
    """The directories holding ``ansible_collections/corral/cloud`` of this installation, first first."""
    roots: list[Path] = []
    checkout = source_checkout()
    if checkout is not None:
        link = scratch.joinpath(*COLLECTION)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(checkout, target_is_directory=True)
        roots.append(scratch)
    if home is not None and installed_collections(home).joinpath(*COLLECTION).is_dir():
        roots.append(installed_collections(home))
    return roots


def configured_collections_paths() -> list[str]:
    """The collection path the Ansible configuration of this process gives (its ``ansible.cfg``)."""
    from ansible import constants  # type: ignore[import-untyped]  # noqa: PLC0415 (read when a play needs it)

    return [str(path) for path in constants.COLLECTIONS_PATHS]


def play_environment(
    scratch: Path, home: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables the service's plays run with (on top of its own environment): the collection path with
    this installation's collection first, and the checkout's ``ansible.cfg`` when none is named."""
    environ = os.environ if environ is None else environ
    roots = [str(root) for root in collection_roots(scratch, home)]
    paths = list(dict.fromkeys([*roots, *configured_collections_paths()]))
    variables = {
        "ANSIBLE_COLLECTIONS_PATH": ":".join(paths),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    checkout = source_checkout()
    if "ANSIBLE_CONFIG" not in environ and checkout is not None and (checkout / "ansible.cfg").is_file():
        variables["ANSIBLE_CONFIG"] = str(checkout / "ansible.cfg")
    return variables
