"""The controller side of a rolling update: the one implementation behind the ``corral.cloud`` action
plugins (``release_stage``, ``update_lock``, ``rollout_progress``, ``boot_pointer``) and, later, the update
service's worker.

- **Release**: verify and stage a bundle with the one verifier (``staging.verify_and_stage``), install the
  release's collection offline into ``releases_root/<version>/collections`` (the per-node plays run from
  there: docs/update.md says why), and publish its node image to the boot service.
- **Lock**: take / take back / release / break the cluster update lock (:class:`ClusterLock`, ZooKeeper).
- **Progress**: begin (or take back) a rollout and record each node's transition, fenced by the token; the
  rollout record keeps the plan and the order actually executed.
- **Boot pointers**: record the pointer in ZooKeeper (fenced) and then set it at the boot service (fenced
  again at the resource, see :mod:`updater.services.boot`).

Nothing here prints or returns a secret: the entitlement key is read from its file and handed to the verifier.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from updater.domain.errors import VerificationError
from updater.domain.inventory import Inventory
from updater.domain.keyring import TrustStore
from updater.domain.license import parse_entitlement_key
from updater.domain.manifest import Manifest, parse_manifest
from updater.domain.plan import BatchMode, Plan, PlanError, plan_rollout
from updater.domain.rollout import Rollout
from updater.domain.states import (
    NodeObservation,
    NodeProgress,
    NodeState,
    RolloutState,
    StateError,
    resume_action,
)
from updater.services import bundle_io
from updater.services.boot import BootService
from updater.services.cluster_lock import ClusterLock, LockHolder
from updater.services.staging import IMAGE_NAME, verify_and_stage

TRUST_ROOT_FILE = "trust-root.json"
KEYRING_FILE = "keyring.json"
LICENSE_FILE = "license.json"
ENTITLEMENT_KEY_FILE = "entitlement-key"
COLLECTION_SUBPATH = ("ansible_collections", "corral", "cloud")


class RolloutRunnerError(RuntimeError):
    """A controller-side step failed; ``str()`` is a complete message for the operator."""


# --- the release --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseInfo:
    version: str
    staged_path: Path
    image_id: str
    collections_path: Path  # put first in ANSIBLE_COLLECTIONS_PATH for the per-node plays
    newly_staged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "staged_path": str(self.staged_path),
            "image_id": self.image_id,
            "collections_path": str(self.collections_path),
            "newly_staged": self.newly_staged,
        }


def _read_trust(trust_dir: Path, now: datetime) -> tuple[TrustStore, bytes, bytes | None]:
    try:
        root = (trust_dir / TRUST_ROOT_FILE).read_bytes()
        keyring = (trust_dir / KEYRING_FILE).read_bytes()
        license_document = (trust_dir / LICENSE_FILE).read_bytes()
    except FileNotFoundError as error:
        raise RolloutRunnerError(
            f"the trust directory {trust_dir} lacks {Path(str(error.filename)).name}: it needs "
            f"{TRUST_ROOT_FILE}, {KEYRING_FILE} and {LICENSE_FILE} (corral-updater init --trust-root, "
            "--keyring and --license write them)"
        ) from None
    key_file = trust_dir / ENTITLEMENT_KEY_FILE
    try:
        key = parse_entitlement_key(key_file.read_text().strip()) if key_file.exists() else None
        trust = TrustStore.load(root, keyring, now=now)
    except VerificationError as error:
        raise RolloutRunnerError(f"the trust directory {trust_dir} is not valid: {error}") from None
    return trust, license_document, key


def _manifest_of_bundle(bundle: Path) -> Manifest:
    try:
        return parse_manifest(bundle_io.read_head(bundle).manifest_bytes)
    except VerificationError as error:
        raise RolloutRunnerError(f"{bundle} is not a Corral bundle: {error}") from None
    except OSError as error:
        raise RolloutRunnerError(f"cannot read the bundle {bundle}: {error.strerror or error}") from None


def _staged_manifest(staging_root: Path, version: str) -> tuple[Path, Manifest]:
    staged = staging_root / version
    try:
        raw = (staged / "manifest.json").read_bytes()
    except FileNotFoundError:
        raise RolloutRunnerError(
            f"release {version} is not staged in {staging_root}: run with -e corral_bundle=FILE to stage it"
        ) from None
    try:
        return staged, parse_manifest(raw)
    except VerificationError as error:
        raise RolloutRunnerError(f"the staged manifest of {version} is not valid: {error}") from None


def _ansible_galaxy() -> str:
    beside = Path(sys.executable).with_name("ansible-galaxy")
    found = str(beside) if beside.exists() else shutil.which("ansible-galaxy")
    if found is None:
        raise RolloutRunnerError("ansible-galaxy is not installed (it comes with ansible-core)")
    return found


def install_collection(tarball: Path, releases_root: Path, version: str) -> Path:
    """Install the release's collection offline into ``releases_root/<version>/collections``, atomically.

    Installed once: a second call finds it. A failed install leaves nothing behind.
    """
    target = releases_root / version / "collections"
    if (target.joinpath(*COLLECTION_SUBPATH) / "MANIFEST.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".collections-", dir=target.parent))
    try:
        result = subprocess.run(
            [
                _ansible_galaxy(),
                "collection",
                "install",
                "--offline",
                "--force",
                "-p",
                str(work),
                str(tarball),
            ],
            capture_output=True,
            stdin=subprocess.DEVNULL,  # ansible refuses the non-blocking stdin an action plugin's process has
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        )
        if result.returncode != 0 or not (work.joinpath(*COLLECTION_SUBPATH) / "MANIFEST.json").is_file():
            detail = (result.stderr.strip() or result.stdout.strip())[-1500:]
            raise RolloutRunnerError(
                f"installing the collection of release {version} from {tarball} failed: {detail}"
            )
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _publish(
    staged: Path, manifest: Manifest, releases_root: Path, boot: BootService, newly: bool
) -> ReleaseInfo:
    version = str(manifest.version)
    collection = manifest.file_by_role("collection")
    if collection is None:  # pragma: no cover - the manifest parser requires it
        raise RolloutRunnerError(f"release {version} has no collection")
    collections = install_collection(staged / collection.name, releases_root, version)
    try:
        image_id = boot.publish_image(staged / IMAGE_NAME, manifest.image.sha256)
    except RuntimeError as error:
        raise RolloutRunnerError(str(error)) from None
    return ReleaseInfo(version, staged, image_id, collections, newly)


def stage_bundle(
    bundle: Path,
    *,
    trust_dir: Path,
    staging_root: Path,
    releases_root: Path,
    installed_version: str | None,
    node_count: int,
    boot: BootService,
    now: datetime | None = None,
) -> ReleaseInfo:
    """Verify and stage ``bundle`` (the one verifier), install its collection, publish its image.

    A bundle whose release is already staged is not staged again: its manifest must be byte for byte the
    staged one (so it is the bundle verified then), and the rest (install, publish) is idempotent.
    """
    now = now or datetime.now(UTC)
    if not bundle.is_file():
        raise RolloutRunnerError(f"bundle {bundle} not found")
    manifest = _manifest_of_bundle(bundle)
    version = str(manifest.version)
    if (staging_root / version).exists():
        staged, staged_manifest = _staged_manifest(staging_root, version)
        if staged_manifest != manifest:
            raise RolloutRunnerError(
                f"release {version} is already staged from another bundle (different manifest): remove "
                f"{staged} or use -e corral_release={version}"
            )
        return _publish(staged, staged_manifest, releases_root, boot, newly=False)
    trust, license_document, key = _read_trust(trust_dir, now)
    staging_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        result = verify_and_stage(
            bundle,
            trust=trust,
            now=now,
            license_document=license_document,
            entitlement_key=key,
            installed_version=installed_version,
            node_count=node_count,
            base_images_dir=None,
            staging_root=staging_root,
        )
    except VerificationError as error:
        raise RolloutRunnerError(f"bundle {bundle} refused ({error.check}): {error.message}") from None
    if result.verified.trust.keyring.envelope != trust.keyring.envelope:
        _replace_file(trust_dir / KEYRING_FILE, result.verified.trust.keyring.envelope)
    return _publish(result.path, result.verified.manifest, releases_root, boot, newly=True)


def staged_release(
    version: str, *, staging_root: Path, releases_root: Path, boot: BootService
) -> ReleaseInfo:
    """An already staged release (``-e corral_release=<version>``): install and publish are idempotent, and
    publishing re-checks the image's SHA-256 against the signed manifest."""
    staged, manifest = _staged_manifest(staging_root, version)
    return _publish(staged, manifest, releases_root, boot, newly=False)


def _replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- ZooKeeper ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def zookeeper(hosts: str, timeout: float = 10.0) -> Iterator[KazooClient]:
    if not hosts:
        raise RolloutRunnerError("no ZooKeeper hosts given (host:port,host:port)")
    client = KazooClient(hosts=hosts, timeout=timeout)
    try:
        client.start(timeout=timeout)
    except KazooTimeoutError:
        client.close()
        raise RolloutRunnerError(
            f"cannot reach the cluster's ZooKeeper ensemble at {hosts} within {timeout:g} s: is it running "
            "(corral.cloud.zookeeper health)?"
        ) from None
    try:
        yield client
    finally:
        client.stop()
        client.close()


def lock_holder_dict(holder: LockHolder | None) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "rollout_id": holder.rollout_id,
        "token": holder.token,
        "owner": holder.owner,
        "acquired_at": holder.acquired_at,
    }


# --- rollout progress ---------------------------------------------------------------------------------------
def begin_rollout(
    lock: ClusterLock, token: int, rollout_id: str, inventory: Inventory, plan: Plan
) -> Rollout:
    """Create the rollout record, or take back the one a previous run of this rollout left (it keeps its
    executed order and progress; the plan is the new one, computed from that progress)."""
    lock.check(token)
    rollout = lock.read_rollout(rollout_id)
    if rollout is None:
        rollout = Rollout.create(rollout_id, inventory, plan, lock.read_progress(rollout_id))
    elif rollout.target_release != plan.target_release:
        raise RolloutRunnerError(
            f"rollout {rollout_id} targets {rollout.target_release}, not {plan.target_release}: finish or "
            "abort it first, or use another rollout id"
        )
    elif rollout.state is RolloutState.SUCCEEDED:
        return rollout  # a re-run of a finished rollout: nothing to do
    else:
        rollout.plan = plan.to_dict()
    try:
        rollout.start()
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    lock.write_rollout(token, rollout)
    return rollout


def plan_only(
    lock: ClusterLock,
    rollout_id: str,
    inventory: Inventory,
    target_release: str,
    *,
    batch_mode: BatchMode | str = BatchMode.NODE,
    observed: Mapping[str, str] | None = None,
) -> tuple[Plan, dict[str, NodeProgress]]:
    """The plan from the progress in ZooKeeper (and what the nodes run now); writes nothing (``--check``)."""
    progress = dict(lock.read_progress(rollout_id))
    for node, release in (observed or {}).items():
        if release == target_release and node not in progress:
            progress[node] = NodeProgress(NodeState.ACTIVE, release)
    try:
        plan = plan_rollout(inventory, target_release, batch_mode=batch_mode, progress=progress)
    except PlanError as error:
        raise RolloutRunnerError(f"no safe plan: {error}") from None
    return plan, progress


def plan_and_begin(
    lock: ClusterLock,
    token: int,
    rollout_id: str,
    inventory: Inventory,
    target_release: str,
    *,
    batch_mode: BatchMode | str = BatchMode.NODE,
    observed: Mapping[str, str] | None = None,
) -> tuple[Rollout, Plan]:
    """Plan with the one planner from the progress in ZooKeeper, then begin (or take back) the rollout.

    ``observed`` maps nodes to the release they run now (``/etc/corral-release``): a node already on the
    target with no record in the middle of the procedure counts as done, so it is never rebooted.
    """
    plan, progress = plan_only(
        lock, rollout_id, inventory, target_release, batch_mode=batch_mode, observed=observed
    )
    rollout = begin_rollout(lock, token, rollout_id, inventory, plan)
    for node, record in progress.items():
        if node in rollout.nodes and rollout.nodes[node] != record and record.is_done(target_release):
            rollout.nodes[node] = record
    lock.write_rollout(token, rollout)
    return rollout, plan


def _rollout(lock: ClusterLock, rollout_id: str) -> Rollout:
    rollout = lock.read_rollout(rollout_id)
    if rollout is None:
        raise RolloutRunnerError(f"rollout {rollout_id} has no record: it was never begun")
    return rollout


def move_node(
    lock: ClusterLock,
    token: int,
    rollout_id: str,
    node: str,
    state: NodeState | str,
    *,
    release: str | None = None,
    boot_id_before_reboot: str | None = None,
    operator_override: bool = False,
) -> NodeProgress:
    """Record ``node``'s transition (checked by the rollout's rules), fenced by ``token``.

    ``operator_override`` is the rollback path (``corral_rollback_node``): a failed rollout is taken back
    just long enough to move that node back to active.
    """
    _rollout(lock, rollout_id)  # a clear refusal when the rollout was never begun

    def change(rollout: Rollout) -> NodeProgress:
        if operator_override and rollout.state is not RolloutState.RUNNING:
            rollout.start()
        try:
            return rollout.move_node(
                node, NodeState(state), release=release, boot_id_before_reboot=boot_id_before_reboot
            )
        except (StateError, ValueError) as error:
            raise RolloutRunnerError(str(error)) from None

    # Read-modify-write against the record's version: the nodes of one domain batch move at the same time.
    return lock.update_rollout(token, rollout_id, change, progress_of=node)


def next_action(
    lock: ClusterLock, rollout_id: str, node: str, *, release: str, boot_id: str
) -> tuple[str, str]:
    """What a (re)started run does next with ``node`` and the node's recorded state, from its progress and
    what it runs now: ``skip``, ``drain``, ``boot``, ``verify`` or ``stop``
    (``updater.domain.states.resume_action``)."""
    rollout = _rollout(lock, rollout_id)
    progress = rollout.nodes.get(node)
    if progress is None:
        raise RolloutRunnerError(f"node {node} is not part of rollout {rollout_id}")
    try:
        action = resume_action(node, progress, rollout.target_release, NodeObservation(release, boot_id))
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    return str(action), str(progress.state)


def finish_rollout(lock: ClusterLock, token: int, rollout_id: str, outcome: str, reason: str = "") -> Rollout:
    """``succeeded`` (every node done), ``failed`` (with the reason the operator sees) or ``aborted``."""
    rollout = _rollout(lock, rollout_id)
    try:
        if outcome == "succeeded":
            rollout.succeed()
        elif outcome == "failed":
            rollout.fail(reason or "failed")
        elif outcome == "aborted":
            rollout.abort(reason or "aborted")
        else:
            raise RolloutRunnerError(f"unknown rollout outcome {outcome!r}: succeeded, failed or aborted")
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    lock.write_rollout(token, rollout)
    return rollout


def progress_dicts(lock: ClusterLock, rollout_id: str) -> dict[str, dict[str, str | None]]:
    return {name: record.to_dict() for name, record in lock.read_progress(rollout_id).items()}


# --- operator control: pause / abort, checked before each node ----------------------------------------------
# ``rollouts/<id>/control`` holds an operator's request (JSON: action, actor, at). The per-node play checks it
# before it starts a node (``rollout_progress`` action ``control``), so the node in progress always finishes
# whole, and the same control works for a run of the playbook by hand. It is operator intent, not a node
# change, so it is written without the fencing token; applying it (pausing or aborting the record) is fenced.
CONTROL_ACTIONS = ("pause", "abort")


def _rollout_child(lock: ClusterLock, rollout_id: str, leaf: str) -> str:
    if not rollout_id or "/" in rollout_id or rollout_id in {".", ".."}:
        raise RolloutRunnerError(f"invalid rollout id {rollout_id!r}")
    return f"{lock.root}/rollouts/{rollout_id}/{leaf}"


def request_control(lock: ClusterLock, rollout_id: str, action: str, actor: str, at: float) -> None:
    """Ask the run of ``rollout_id`` to ``pause`` or ``abort`` once the node in progress is done."""
    if action not in CONTROL_ACTIONS:
        raise RolloutRunnerError(f"unknown control {action!r}: {' or '.join(CONTROL_ACTIONS)}")
    path = _rollout_child(lock, rollout_id, "control")
    value = json.dumps({"action": action, "actor": actor, "at": at}).encode()
    lock.client.ensure_path(path.rsplit("/", 1)[0])
    try:
        lock.client.create(path, value)
    except NodeExistsError:
        lock.client.set(path, value)


def read_control(lock: ClusterLock, rollout_id: str) -> dict[str, Any] | None:
    try:
        raw, _ = lock.client.get(_rollout_child(lock, rollout_id, "control"))
    except NoNodeError:
        return None
    data = json.loads(raw) if raw else None
    return dict(data) if isinstance(data, dict) and data.get("action") in CONTROL_ACTIONS else None


def clear_control(lock: ClusterLock, rollout_id: str) -> None:
    with contextlib.suppress(NoNodeError):
        lock.client.delete(_rollout_child(lock, rollout_id, "control"))


def apply_control(lock: ClusterLock, token: int, rollout_id: str) -> dict[str, Any] | None:
    """Called before a node starts: pause the rollout (it keeps the lock) or abort it (it releases the lock)
    when an operator asked for it; ``None`` (and nothing written) when nobody did."""
    control = read_control(lock, rollout_id)
    if control is None:
        return None
    rollout = _rollout(lock, rollout_id)
    reason = f"{control['action']} requested by {control.get('actor') or 'an operator'}"
    try:
        if control["action"] == "pause":
            rollout.pause(reason)
        else:
            rollout.abort(reason)
    except StateError as error:
        raise RolloutRunnerError(str(error)) from None
    lock.write_rollout(token, rollout)
    if control["action"] == "abort":
        lock.release(rollout_id, token)
    return {**control, "reason": reason}


# --- the run's owner: an ephemeral znode, gone when the process running the rollout is ----------------------
@dataclass(frozen=True)
class RunOwner:
    host: str
    pid: int
    process_start: str  # /proc/<pid>/stat start time: a recycled pid is not the same process
    since: float

    def to_json(self) -> bytes:
        return json.dumps(
            {"host": self.host, "pid": self.pid, "process_start": self.process_start, "since": self.since}
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RunOwner:
        data = json.loads(raw)
        return cls(str(data["host"]), int(data["pid"]), str(data["process_start"]), float(data["since"]))

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


class RunClaimed(RolloutRunnerError):
    """Another live process runs this rollout."""

    def __init__(self, rollout_id: str, owner: RunOwner | None) -> None:
        self.owner = owner
        who = owner.describe() if owner else "another process"
        super().__init__(f"rollout {rollout_id} is already being run by {who}")


def process_start(pid: int) -> str:
    """The start time of ``pid`` (clock ticks since boot) or ``""`` when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def claim_run(lock: ClusterLock, rollout_id: str, owner: RunOwner) -> None:
    """Become the one process running ``rollout_id``: an ephemeral znode tied to this ZooKeeper session."""
    path = _rollout_child(lock, rollout_id, "owner")
    lock.client.ensure_path(path.rsplit("/", 1)[0])
    try:
        lock.client.create(path, owner.to_json(), ephemeral=True)
    except NodeExistsError:
        raise RunClaimed(rollout_id, run_owner(lock, rollout_id)) from None


def run_owner(lock: ClusterLock, rollout_id: str) -> RunOwner | None:
    try:
        raw, _ = lock.client.get(_rollout_child(lock, rollout_id, "owner"))
    except NoNodeError:
        return None
    return RunOwner.from_json(raw)


def owner_is_dead_here(owner: RunOwner, host: str) -> bool:
    """True when ``owner`` ran on this host and its process is gone (its session has not expired yet)."""
    return owner.host == host and process_start(owner.pid) != owner.process_start


def drop_run_owner(lock: ClusterLock, rollout_id: str) -> None:
    with contextlib.suppress(NoNodeError):
        lock.client.delete(_rollout_child(lock, rollout_id, "owner"))


# --- boot pointers ------------------------------------------------------------------------------------------
def set_boot(
    lock: ClusterLock, boot: BootService, token: int, node: str, *, mode: str, image_id: str | None
) -> dict[str, Any]:
    """Point ``node`` at ``image_id`` (``once``: the next boot only; ``default``: from now on; ``clear``: drop
    a pending one-shot). The ZooKeeper record is written first (fenced by the newest token), then the boot
    service (fenced again at the resource)."""
    current = boot.state(node)
    if mode == "once":
        pointer: Mapping[str, Any] = {"once": image_id, "default": current.default}
    elif mode == "default":
        if image_id is None:
            raise RolloutRunnerError("mode 'default' needs an image")
        pointer = {"once": None, "default": image_id}
    elif mode == "clear":
        pointer, image_id = {"once": None, "default": current.default}, None
    else:
        raise RolloutRunnerError(f"unknown boot pointer mode {mode!r}: once, default or clear")
    if mode == "once" and image_id is None:
        raise RolloutRunnerError("mode 'once' needs an image")
    lock.set_boot_pointer(token, node, pointer)
    if mode == "default" and image_id is not None:
        return boot.make_default(node, image_id, token).to_dict()
    return boot.boot_once(node, image_id, token).to_dict()


# --- the per-node run from the target release's collection --------------------------------------------------
@dataclass(frozen=True)
class ChildRun:
    returncode: int
    log: Path
    tail: tuple[str, ...]
    orphaned: bool  # the controller's ansible-playbook went away and the run was stopped


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies, ``kill -9`` included
    (Linux ``PR_SET_PDEATHSIG``), so no child of a killed controller or worker goes on alone."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_release_playbook(
    argv: Sequence[str],
    *,
    collections_paths: Sequence[str | Path],
    log: Path,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
    tail_lines: int = 40,
) -> ChildRun:
    """Run ``argv`` (an ``ansible-playbook`` command) with ``collections_paths`` (the target release's
    collections first) as its collection path, streaming every line to ``on_line`` and ``log``.

    The run is stopped (SIGTERM to its process group, SIGKILL after 10 s) as soon as this process's parent
    goes away: when the operator's ``ansible-playbook`` is killed, its per-node run does not go on alone. When
    this process itself is killed (``kill -9`` of the operator's whole process group), the run gets SIGTERM
    from the kernel (:func:`die_with_parent`). Any worker it left finishing a task is fenced off by the next
    run's newer token.
    """
    environment = dict(os.environ if env is None else env)
    environment["ANSIBLE_COLLECTIONS_PATH"] = ":".join(str(path) for path in collections_paths if str(path))
    log.parent.mkdir(parents=True, exist_ok=True)
    parent = os.getppid()
    tail: list[str] = []
    orphaned = False
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (a single prctl call, no locks taken)
        )
        assert process.stdout is not None  # noqa: S101 (stdout=PIPE)
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                if os.getppid() != parent:
                    orphaned = True
                    _stop(process)
                    break
                if not selector.select(timeout=1.0):
                    continue
                line = process.stdout.readline()
                if not line:
                    break
                line = line.rstrip("\n")
                out.write(line + "\n")
                out.flush()
                tail = [*tail[-(tail_lines - 1) :], line]
                on_line(line)
        returncode = process.wait()
    return ChildRun(returncode, log, tuple(tail), orphaned)


def _stop(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
