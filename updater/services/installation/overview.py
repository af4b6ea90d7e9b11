"""What the Overview page, ``GET /api/v1/status`` and ``corral-updater status`` show, from what is known.

Sources, in order of authority: the inventory (which nodes exist, where), the cluster's last observation
(:mod:`updater.services.cluster.view`: each node's release, whether it answers, its role health, and when
that was seen), the store (each node's latest rollout step, the installed release), the trust directory (the
license). Nothing is invented: an unknown value is shown as unknown, and a source that cannot be read is
reported as a problem.

Every status request builds one, so what rarely changes is kept (:mod:`updater.services.filecache`): the
inventory while the files ``ansible-inventory`` reads are unchanged, the verified license while the trust
directory's files are unchanged and the time is inside the license's and the keyring's validity (an expiry
is seen the moment it comes). The store and the cluster's observation are read every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from updater.config import ServiceConfig
from updater.domain.errors import VerificationError
from updater.domain.inventory import Inventory, InventoryError, inventory_from_ansible
from updater.domain.license import verify_license
from updater.domain.states import FINAL_ROLLOUT_STATES
from updater.services.cluster import inventory as inventory_loader
from updater.services.cluster import view as cluster_view
from updater.services.filecache import FileMemo, Kept, fingerprint
from updater.services.installation.trust import (
    KEYRING_FILE,
    LICENSE_FILE,
    TRUST_ROOT_FILE,
    TrustUnreadable,
    read_trust,
)
from updater.store import queries


@dataclass(frozen=True)
class LicenseSummary:
    """The license's public facts; never the entitlement key."""

    license_id: str
    customer: str
    channels: tuple[str, ...]
    node_entitlement: int
    updates_until: date
    expires: date


@dataclass(frozen=True)
class NodeRow:
    name: str
    site: str
    rack: str | None
    address: str | None
    quorum_services: tuple[str, ...]
    state: str  # the node's state in its latest rollout step, or "unknown"
    last_rollout: str | None
    release: str | None = None  # what /etc/corral-release said at the last observation
    health: str = "unknown"  # healthy | unhealthy | unreachable | unknown (cluster_view.NodeHealth)
    health_detail: str = ""


@dataclass(frozen=True)
class Overview:
    installed_release: str | None
    license: LicenseSummary | None
    nodes: tuple[NodeRow, ...]
    active_rollout: str | None
    problems: tuple[str, ...] = field(default=())
    cluster_health: str = "not observed yet"
    observed_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        lic = self.license
        return {
            "installed_release": self.installed_release,
            "license": None
            if lic is None
            else {
                "license_id": lic.license_id,
                "customer": lic.customer,
                "channels": list(lic.channels),
                "node_entitlement": lic.node_entitlement,
                "updates_until": lic.updates_until.isoformat(),
                "expires": lic.expires.isoformat(),
            },
            "nodes": [
                {
                    "name": n.name,
                    "site": n.site,
                    "rack": n.rack,
                    "address": n.address,
                    "quorum_services": list(n.quorum_services),
                    "state": n.state,
                    "last_rollout": n.last_rollout,
                    "release": n.release,
                    "health": n.health,
                    "health_detail": n.health_detail,
                }
                for n in self.nodes
            ],
            "active_rollout": self.active_rollout,
            "problems": list(self.problems),
            "cluster_health": self.cluster_health,
            "observed_at": self.observed_at.isoformat(timespec="seconds") if self.observed_at else None,
        }


def load_inventory(path: str) -> Inventory:
    """An inventory from saved ``ansible-inventory --list`` JSON (``*.json``), or any source Ansible reads."""
    source = Path(path)
    if not source.exists():
        raise InventoryError(f"inventory {path} does not exist")
    if source.suffix == ".json":
        try:
            data = json.loads(source.read_text())
        except json.JSONDecodeError as error:
            raise InventoryError(f"inventory {path} is not valid JSON: {error}") from None
        return inventory_from_ansible(data)
    try:
        return inventory_loader.load_inventory_cached([path], timeout=60)
    except inventory_loader.InventoryLoadError as error:
        raise InventoryError(str(error)) from None


def _verified_license(trust_dir: Path, now: datetime) -> Kept[LicenseSummary]:
    installed = read_trust(trust_dir, now=now, entitlement_key=False)  # shown even when the key is broken
    keyring = installed.store.keyring
    lic = verify_license(installed.license_document, keyring, now=now)
    summary = LicenseSummary(
        lic.license_id,
        lic.customer,
        tuple(sorted(lic.channels)),
        lic.node_entitlement,
        lic.updates_until,
        lic.expires,
    )
    # verify_license's clock checks: issued <= today <= expires (whole UTC days), now < the keyring's expiry.
    day_after_expiry = datetime.combine(lic.expires + timedelta(days=1), time(), tzinfo=UTC)
    return Kept(
        summary,
        valid_from=datetime.combine(lic.issued, time(), tzinfo=UTC),
        valid_until=min(day_after_expiry, keyring.expires),
    )


_LICENSES: FileMemo[LicenseSummary] = FileMemo()


def load_license(trust_dir: Path, *, now: datetime) -> LicenseSummary | None:
    """The installed license, verified against the installed keyring; None when no license is installed.

    Verified again only when a trust file changed or ``now`` left the span the last verification holds for."""
    if not (trust_dir / LICENSE_FILE).exists():
        return None
    files = [trust_dir / name for name in (TRUST_ROOT_FILE, KEYRING_FILE, LICENSE_FILE)]
    return _LICENSES.get(
        str(trust_dir.absolute()),
        lambda: fingerprint(files),
        lambda: _verified_license(trust_dir, now),
        now=now,
    )


def build_overview(session: Session, config: ServiceConfig, *, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    problems: list[str] = []
    lic: LicenseSummary | None = None
    try:
        lic = load_license(config.trust_dir, now=now)
    except (TrustUnreadable, VerificationError) as error:
        problems.append(f"license: {error}")
    inventory: Inventory | None = None
    if not config.inventory_path:
        problems.append("no inventory configured (set inventory_path in updater.json)")
    else:
        try:
            inventory = load_inventory(config.inventory_path)
        except (InventoryError, OSError) as error:
            problems.append(f"inventory: {error}")
    seen: cluster_view.SavedObservation | None = None
    try:
        seen = cluster_view.load(config)
    except cluster_view.ObservationUnreadable as error:
        problems.append(f"cluster observation: {error}")
    latest = queries.latest_steps_by_node(session)
    rows = []
    if inventory is not None:
        for node in inventory.nodes:
            step = latest.get(node.name)
            health = seen.node(node.name) if seen else cluster_view.NodeHealth("unknown", None)
            rows.append(
                NodeRow(
                    node.name,
                    node.site,
                    node.rack,
                    node.address,
                    tuple(sorted(node.quorum_services)),
                    str(step.state) if step else "unknown",
                    step.rollout_id if step else None,
                    health.release,
                    health.state,
                    health.detail,
                )
            )
    installed = queries.installed_release(session)
    active = next(
        (r.id for r in queries.list_rollouts(session, limit=20) if r.state not in FINAL_ROLLOUT_STATES), None
    )
    summary = "not observed yet"
    if seen is not None and inventory is not None:
        summary = seen.summary([node.name for node in inventory.nodes])
    return Overview(
        installed.version if installed else None,
        lic,
        tuple(rows),
        active,
        tuple(problems),
        summary,
        seen.observed_at if seen else None,
    )
