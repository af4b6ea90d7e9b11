"""One lab: ``up``, ``down``, ``status``, power and boot pointers. Every entry point calls this module.

Bad input is refused before anything is made; an ``up`` that fails on a new lab removes what it made; ``up``
on an existing lab only makes what is missing; ``down`` removes everything ``up`` made (the shared image cache
under /var/lib/corral-lab/images stays).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from updater.lab import bmcs, bootptr, containers, disks, hooks, network
from updater.lab import inventory as inventory_mod
from updater.lab import layout as lay
from updater.lab import ssh as lab_ssh
from updater.lab.errors import LabError
from updater.lab.host import require_root, require_tools, run, unmount_tree
from updater.lab.image import Image, ImageStore
from updater.lab.packages import collect

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROLES_DIR = REPO_ROOT / "roles"
DEFAULT_VERSION = "0.1.0"
DEFAULT_DISKS = 1
DEFAULT_DISK_GIB = 12.0
HOST_TOOLS = ("lxc-start", "lxc-stop", "lxc-info", "debootstrap", "losetup", "ip", "ssh", "ssh-keygen", "tar")


@dataclass
class LabConfig:
    """What ``up`` decided, kept in lab.json so later commands and ``down`` know the lab."""

    name: str
    index: int
    nodes: int
    disks: int
    disk_size_gib: float
    image: str  # the default image new nodes boot
    bmc_user: str = "admin"
    racks: int = 0  # 0: no racks, the failure domain is the host
    created: float = field(default_factory=time.time)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    state: str
    address: str
    booted: str | None
    default: str
    next: str | None
    bmc: str
    data_disks: tuple[str, ...]


@dataclass(frozen=True)
class UpResult:
    changed: bool
    image: str
    image_built: bool
    inventory: Path
    seconds: float


class Lab:
    def __init__(
        self, name: str = lay.DEFAULT_LAB, root: Path = lay.DEFAULT_ROOT, images: ImageStore | None = None
    ):
        self.name = lay.validate_lab_name(name)
        self.root = root
        self.images = images or ImageStore(root / "images")

    # --- configuration -------------------------------------------------------------------------------------
    @property
    def _config_path(self) -> Path:
        return self.root / self.name / "lab.json"

    def exists(self) -> bool:
        return self._config_path.is_file()

    def config(self) -> LabConfig:
        try:
            return LabConfig(**json.loads(self._config_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise LabError(
                f"no lab named {self.name!r} (start it with `corral-lab up --lab {self.name}`)"
            ) from None

    @property
    def layout(self) -> lay.LabLayout:
        return lay.LabLayout(self.name, self.config().index, self.root)

    def nodes(self) -> list[str]:
        return [lay.node_name(i) for i in range(1, self.config().nodes + 1)]

    def node(self, name: str) -> str:
        lay.node_number(name, self.config().nodes)
        return name

    def address(self, node: str) -> str:
        return self.layout.node_address(lay.node_number(node, self.config().nodes))

    def bmc_credentials(self) -> tuple[str, str]:
        data = json.loads(self.layout.bmc_credentials.read_text(encoding="utf-8"))
        return str(data["user"]), str(data["password"])

    # --- locking -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, action: str) -> Iterator[None]:
        """One operation at a time per lab; a second one is refused at once, not queued."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".{self.name}.lock"
        with open(path, "a+", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise LabError(
                    f"lab {self.name!r} is busy: {holder} is running; wait for it (nothing was changed)"
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"`corral-lab {action}` (pid {os.getpid()})\n")
            lock.flush()
            try:
                yield
            finally:
                lock.seek(0)
                lock.truncate()

    def _allocate_index(self) -> int:
        used = set()
        for cfg in self.root.glob("*/lab.json"):
            with contextlib.suppress(ValueError, KeyError, OSError):
                used.add(int(json.loads(cfg.read_text(encoding="utf-8"))["index"]))
        return lay.free_index(used)

    # --- up ------------------------------------------------------------------------------------------------
    def up(
        self,
        *,
        nodes: int = 3,
        disks_per_node: int | None = None,
        disk_size_gib: float | None = None,
        image: str | None = None,
        racks: int | None = None,
        roles_dir: Path = DEFAULT_ROLES_DIR,
        version: str = DEFAULT_VERSION,
        out: TextIO | None = None,
    ) -> UpResult:
        """Create the lab, or complete an existing one; ``None`` keeps an existing lab's setting (a new lab
        gets 1 disk of 12 GiB per node, no racks, and the image built from the roles' packages)."""
        started = time.monotonic()
        lay.validate_node_count(nodes)
        lay.validate_disks(
            DEFAULT_DISKS if disks_per_node is None else disks_per_node,
            DEFAULT_DISK_GIB if disk_size_gib is None else disk_size_gib,
        )
        if racks is not None:
            lay.validate_racks(racks, nodes)
        require_root("up")
        require_tools(*HOST_TOOLS)
        with self.locked("up"):
            new = not self.exists()
            if not new:
                cfg = self.config()
                if nodes < cfg.nodes:
                    raise LabError(
                        f"lab {self.name!r} has {cfg.nodes} nodes; `up --nodes {nodes}` cannot shrink it "
                        f"(`corral-lab down --lab {self.name}` first). Nothing was changed."
                    )
                wanted = (
                    cfg.disks if disks_per_node is None else disks_per_node,
                    cfg.disk_size_gib if disk_size_gib is None else disk_size_gib,
                )
                if wanted != (cfg.disks, cfg.disk_size_gib):
                    raise LabError(
                        f"lab {self.name!r} has {cfg.disks} disk(s) of {cfg.disk_size_gib} GiB per node; "
                        "disks cannot change on a running lab (`down` first). Nothing was changed."
                    )
                if image is not None and image != cfg.image:
                    raise LabError(
                        f"lab {self.name!r} boots image {cfg.image}; `--image` cannot change a running lab "
                        "(use `corral-lab boot NODE --default IMAGE`). Nothing was changed."
                    )
            img, built = self._image(image, roles_dir, version, out)
            try:
                changed = self._up(
                    nodes=nodes,
                    disks_per_node=DEFAULT_DISKS if disks_per_node is None else disks_per_node,
                    disk_size_gib=DEFAULT_DISK_GIB if disk_size_gib is None else disk_size_gib,
                    racks=racks,
                    img=img,
                    out=out,
                )
            except BaseException:
                if new:
                    self._down()  # a new lab that failed to come up leaves nothing behind
                raise
        return UpResult(
            changed or built, img.id, built, self.layout.inventory_file, time.monotonic() - started
        )

    def _image(
        self, image: str | None, roles_dir: Path, version: str, out: TextIO | None
    ) -> tuple[Image, bool]:
        if image is not None:
            return self.images.get(image), False
        if self.exists():
            return self.images.get(self.config().image), False
        return self.images.ensure(collect(roles_dir), version, log=out is not None)

    def _up(
        self,
        *,
        nodes: int,
        disks_per_node: int,
        disk_size_gib: float,
        racks: int | None,
        img: Image,
        out: TextIO | None,
    ) -> bool:
        changed = False
        # Host-wide: two labs coming up at once must not pick the same index (and so the same addresses).
        with open(self.root / ".index.lock", "a", encoding="utf-8") as index_lock:
            fcntl.flock(index_lock, fcntl.LOCK_EX)
            if self.exists():
                cfg = self.config()
                if nodes > cfg.nodes:
                    cfg.nodes, changed = nodes, True
                if racks is not None and racks != cfg.racks:
                    cfg.racks, changed = racks, True
            else:
                index = self._allocate_index()
                cfg = LabConfig(
                    self.name, index, nodes, disks_per_node, disk_size_gib, img.id, racks=racks or 0
                )
                changed = True
            layout = lay.LabLayout(self.name, cfg.index, self.root)
            layout.state_dir.mkdir(parents=True, exist_ok=True)
            layout.state_dir.chmod(0o700)
            _write_json(layout.config_file, asdict(cfg))

        pubkey = lab_ssh.keygen(layout.ssh_key, f"corral-lab-{self.name}")
        password = self._ensure_bmc_credentials(layout, cfg.bmc_user)
        pre, post = hooks.install(layout.hooks_dir, layout.state_dir, self.images.root)
        if not network.exists(layout.bridge):
            changed = True
        network.create(layout)
        network.ensure_inotify_instances()

        facts = []
        known_hosts = []
        for number in range(1, cfg.nodes + 1):
            name = lay.node_name(number)
            node_dir = layout.node_dir(name)
            host_pub = self._prepare_node_state(layout, name, pubkey)
            known_hosts.append(f"{layout.node_address(number)} {host_pub}")
            loops = disks.ensure(node_dir / "disks", cfg.disks, cfg.disk_size_gib)
            if not bootptr.read(layout, name).default:
                bootptr.set_default(layout, name, cfg.image)
            containers.write_config(layout, containers.NodeSpec(name, number, loops), pre, post)
            facts.append(inventory_mod.NodeFacts(name, number, loops))
        layout.known_hosts.write_text("\n".join(known_hosts) + "\n", encoding="ascii")

        to_start = [f.name for f in facts if containers.state(layout, f.name) != "RUNNING"]
        for name in to_start:
            containers.start(layout, name)
        changed = changed or bool(to_start)
        lab_ssh.wait_ready(layout, {f.name: layout.node_address(f.number) for f in facts})
        if bmcs.ensure(layout, cfg.nodes, cfg.bmc_user, password):
            changed = True
        inv = inventory_mod.build(layout, facts, cfg.bmc_user, password, racks=cfg.racks)
        layout.inventory_file.write_text(
            "# Corral lab inventory (written by corral-lab up; docs/inventory.md)\n---\n"
            + yaml.safe_dump(inv, sort_keys=False),
            encoding="utf-8",
        )
        layout.inventory_file.chmod(0o600)
        if out is not None:
            print(f"lab {self.name}: {cfg.nodes} node(s) up on {layout.bridge} ({layout.network})", file=out)
        return changed

    def _ensure_bmc_credentials(self, layout: lay.LabLayout, user: str) -> str:
        path = layout.bmc_credentials
        if path.is_file():
            return str(json.loads(path.read_text(encoding="utf-8"))["password"])
        path.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"user": user, "password": password}, f)
        return password

    @staticmethod
    def _prepare_node_state(layout: lay.LabLayout, node: str, authorized_key: str) -> str:
        """The node's state volume before its first boot: identity, host key, lab key. Returns host key."""
        store = layout.node_dir(node) / "state" / "persist"
        ssh_dir = store / "dirs" / "root" / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        ssh_dir.chmod(0o700)
        auth = ssh_dir / "authorized_keys"
        if not auth.exists():
            auth.write_text(authorized_key + "\n", encoding="ascii")
            auth.chmod(0o600)
        machine_id = store / "machine-id"
        if not machine_id.exists():
            machine_id.write_text(secrets.token_hex(16) + "\n", encoding="ascii")
        host_key = store / "ssh" / "ssh_host_ed25519_key"
        lab_ssh.keygen(host_key, node)
        pub = host_key.with_name(host_key.name + ".pub").read_text(encoding="ascii").split()
        return f"{pub[0]} {pub[1]}"

    # --- down ----------------------------------------------------------------------------------------------
    def down(self) -> bool:
        """Remove everything ``up`` made. Returns False when there was nothing to remove."""
        require_root("down")
        with self.locked("down"):
            return self._down()

    def _down(self) -> bool:
        state_dir = self.root / self.name
        if not state_dir.exists():
            (self.root / f".{self.name}.lock").unlink(missing_ok=True)
            return False
        index = None
        with contextlib.suppress(LabError, ValueError, KeyError, TypeError):
            index = self.config().index
        if index is not None:
            layout = lay.LabLayout(self.name, index, self.root)
            bmcs.stop_all(layout)
            ct_names = sorted(p.name for p in layout.lxc_path.glob("*") if p.is_dir())
            for ct in ct_names:
                node = ct.removeprefix(f"{self.name}-")
                containers.destroy(layout, node)
            network.remove(layout)
            _remove_cgroups([f"{self.name}-{n}" for n in (c.removeprefix(f"{self.name}-") for c in ct_names)])
        unmount_tree(str(state_dir))
        for dev in disks.loops_under(state_dir):
            run(["losetup", "--detach", dev], check=False)
        shutil.rmtree(state_dir)
        (self.root / f".{self.name}.lock").unlink(missing_ok=True)
        if not any(self.root.glob("*/lab.json")):
            _remove_cgroups([], extra=("lxc.pivot",))  # LXC's shared helper cgroup, empty once no lab runs
        return True

    # --- status, power, boot -------------------------------------------------------------------------------
    def status(self) -> list[NodeStatus]:
        layout = self.layout
        cfg = self.config()
        result = []
        for number in range(1, cfg.nodes + 1):
            name = lay.node_name(number)
            ptr = bootptr.read(layout, name)
            disk_dir = layout.node_dir(name) / "disks"
            loops = tuple(d for i in range(cfg.disks) for d in disks.attached_to(disk_dir / f"disk{i}.img"))
            result.append(
                NodeStatus(
                    name=name,
                    state=containers.state(layout, name),
                    address=layout.node_address(number),
                    booted=ptr.current,
                    default=ptr.default,
                    next=ptr.next,
                    bmc=f"{layout.bmc_address(number)}:{lay.BMC_PORT} ({bmcs.state(layout, number)})",
                    data_disks=loops,
                )
            )
        return result

    def power(self, node: str, action: str, wait_ssh: bool = True, timeout: float = 120) -> str:
        """Chassis power for one node: on, off (hard), cycle, status. Returns the state afterwards."""
        require_root("power")
        self.node(node)
        layout = self.layout
        if action == "status":
            return containers.state(layout, node)
        if action not in ("on", "off", "cycle"):
            raise LabError(f"power {action!r}: use on, off, cycle or status")
        if action in ("off", "cycle"):
            containers.power_off(layout, node)
        if action in ("on", "cycle"):
            containers.start(layout, node)
            if wait_ssh:
                lab_ssh.wait_ready(layout, {node: self.address(node)}, timeout)
        return containers.state(layout, node)

    def boot_once(self, node: str, image_id: str | None) -> None:
        """Point the node's next boot (only) at ``image_id``; ``None`` clears a pending one-shot."""
        self.node(node)
        if image_id is not None:
            self.images.get(image_id)
        bootptr.set_next(self.layout, node, image_id)

    def set_default(self, node: str, image_id: str) -> None:
        self.node(node)
        self.images.get(image_id)
        bootptr.set_default(self.layout, node, image_id)

    def boot_pointer(self, node: str) -> bootptr.BootPointer:
        self.node(node)
        return bootptr.read(self.layout, node)

    def boots(self, node: str | None = None) -> list[bootptr.Boot]:
        if node is not None:
            self.node(node)
        return bootptr.boots(self.layout, node)

    def ssh_command(self, node: str, *remote: str) -> list[str]:
        self.node(node)
        return lab_ssh.ssh_command(self.layout, self.address(node), *remote)

    def run_on(self, node: str, command: str, timeout: float = 60) -> str:
        self.node(node)
        return lab_ssh.ssh_run(self.layout, self.address(node), command, timeout)


def _remove_cgroups(containers_: list[str], extra: tuple[str, ...] = ()) -> None:
    """LXC removes a stopped container's cgroups; anything left (e.g. after a crash) goes here."""
    base = Path("/sys/fs/cgroup")
    names = [n for ct in containers_ for n in (f"lxc.payload.{ct}", f"lxc.monitor.{ct}")] + list(extra)
    for controller in base.iterdir() if base.is_dir() else []:
        if controller.is_dir():
            for name in names:
                path = controller / name
                if path.is_dir():
                    for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if sub.is_dir():
                            with contextlib.suppress(OSError):
                                sub.rmdir()
                    with contextlib.suppress(OSError):
                        path.rmdir()


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
