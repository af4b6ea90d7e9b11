"""corral-lab: the lab cluster of privileged-LXC nodes (up, down, status, power, ssh, boots, boot, image).

Every command is a thin call into updater.lab.lab; `--lab NAME` (default demo) keeps several labs apart,
and state lives under /var/lib/corral-lab/NAME. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from updater.lab import layout as lay
from updater.lab.errors import LabError
from updater.lab.host import require_root
from updater.lab.image import ImageStore, cache_key
from updater.lab.lab import DEFAULT_ROLES_DIR, DEFAULT_VERSION, Lab
from updater.lab.packages import collect


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-lab", description=__doc__)
    parser.add_argument(
        "--lab", default=os.environ.get("CORRAL_LAB", lay.DEFAULT_LAB), help="lab name (demo)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("CORRAL_LAB_ROOT", str(lay.DEFAULT_ROOT))),
        help="where labs and the image cache live (/var/lib/corral-lab)",
    )
    # `--lab`/`--root` may also follow the command (`corral-lab up --lab citest`); there they override.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lab", default=argparse.SUPPRESS, help="lab name")
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="labs and image cache")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", parents=[common], help="create or complete the lab and wait until every node is SSH-ready"
    )
    up.add_argument("--nodes", type=int, default=3, help=f"{lay.MIN_NODES}-{lay.MAX_NODES} (3)")
    up.add_argument("--disks", type=int, help="data disks per node (new lab: 1; default: keep)")
    up.add_argument("--disk-size", type=float, help="GiB per data disk, sparse (new lab: 12; default: keep)")
    up.add_argument("--image", help="boot this image id instead of the one built from the roles' packages")
    up.add_argument("--racks", type=int, help="spread nodes over R racks (corral_rack); 0 = none (default)")
    up.add_argument("--roles-dir", type=Path, default=DEFAULT_ROLES_DIR)
    up.add_argument("--json", action="store_true", help="print the result as JSON (for the lab role)")

    sub.add_parser("down", parents=[common], help="remove everything up made (the image cache stays)")
    status = sub.add_parser("status", parents=[common], help="nodes, power state, images, BMCs")
    status.add_argument("--json", action="store_true")
    sub.add_parser("inventory", parents=[common], help="print the path of the lab's Ansible inventory")

    power = sub.add_parser("power", parents=[common], help="chassis power of one node (what its BMC does)")
    power.add_argument("node")
    power.add_argument("action", choices=["on", "off", "cycle", "status"])
    power.add_argument("--no-wait", action="store_true", help="on/cycle: do not wait for SSH")

    ssh = sub.add_parser("ssh", parents=[common], help="SSH to a node as root with the lab's key")
    ssh.add_argument("node")
    ssh.add_argument("remote", nargs=argparse.REMAINDER, help="command to run (default: a shell)")

    boots = sub.add_parser("boots", parents=[common], help="the boot log: time, node, image, once|default")
    boots.add_argument("node", nargs="?")

    boot = sub.add_parser("boot", parents=[common], help="set a node's boot pointer")
    boot.add_argument("node")
    which = boot.add_mutually_exclusive_group(required=True)
    which.add_argument("--once", metavar="IMAGE", help="boot IMAGE at the next start only")
    which.add_argument("--default", metavar="IMAGE", help="boot IMAGE from now on")
    which.add_argument("--clear-once", action="store_true", help="drop a pending one-shot image")

    _add_image_commands(sub, common)
    return parser


def _add_image_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    image = sub.add_parser("image", parents=[common], help="node images in the shared cache")
    isub = image.add_subparsers(dest="image_command", required=True)
    isub.add_parser("list", parents=[common], help="cached images")
    build = isub.add_parser(
        "build", parents=[common], help="build (or find cached) the image of the roles' package union"
    )
    build.add_argument("--version", default=DEFAULT_VERSION)
    build.add_argument("--roles-dir", type=Path, default=DEFAULT_ROLES_DIR)
    build.add_argument("--extra-package", action="append", default=[], help="add a package (repeatable)")
    derive = isub.add_parser(
        "derive", parents=[common], help="a new image from a cached one with a small change (no debootstrap)"
    )
    derive.add_argument("--from", dest="base", required=True, metavar="ID")
    derive.add_argument("--version", required=True)
    derive.add_argument("--file", action="append", default=[], metavar="PATH=LOCAL", help="put LOCAL at PATH")
    derive.add_argument("--note", default="")
    prune = isub.add_parser(
        "prune", parents=[common], help="remove cached images no lab uses (keeps the current build)"
    )
    prune.add_argument("--roles-dir", type=Path, default=DEFAULT_ROLES_DIR)
    prune.add_argument("--version", default=DEFAULT_VERSION)
    imp = isub.add_parser(
        "import", parents=[common], help="add an image artifact (tar) to the cache, checking its SHA-256"
    )
    imp.add_argument("artifact", type=Path)
    imp.add_argument("--sha256")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except LabError as exc:
        print(f"corral-lab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("corral-lab: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:  # noqa: PLR0911, PLR0912 - one branch per command
    lab = Lab(args.lab, root=args.root)
    cmd = args.command
    if cmd == "up":
        result = lab.up(
            nodes=args.nodes,
            disks_per_node=args.disks,
            disk_size_gib=args.disk_size,
            image=args.image,
            racks=args.racks,
            roles_dir=args.roles_dir,
            out=None if args.json else sys.stdout,
        )
        if args.json:
            print(json.dumps({**asdict(result), "inventory": str(result.inventory)}))
        else:
            print(f"image {result.image}{' (built)' if result.image_built else ''}")
            print(f"inventory {result.inventory}")
            print(f"up in {result.seconds:.1f}s ({'changed' if result.changed else 'nothing to do'})")
        return 0
    if cmd == "down":
        removed = lab.down()
        print(f"lab {args.lab}: {'removed' if removed else 'nothing to remove'}")
        return 0
    if cmd == "status":
        return _status(lab, args.json)
    if cmd == "inventory":
        path = lab.layout.inventory_file
        if not path.is_file():
            raise LabError(f"lab {args.lab!r} has no inventory yet (run `corral-lab up --lab {args.lab}`)")
        print(path)
        return 0
    if cmd == "power":
        state = lab.power(args.node, args.action, wait_ssh=not args.no_wait)
        print(f"{args.node}: {_power_word(state)}")
        return 0
    if cmd == "ssh":
        argv = lab.ssh_command(args.node, *args.remote)
        os.execvp(argv[0], argv)  # noqa: S606 - hand the terminal to ssh
    if cmd == "boots":
        for b in lab.boots(args.node):
            print(f"{b.time}  {b.node:<7} {b.image}  {b.kind}")
        return 0
    if cmd == "boot":
        require_root("boot")
        if args.clear_once:
            lab.boot_once(args.node, None)
        elif args.once:
            lab.boot_once(args.node, args.once)
        else:
            lab.set_default(args.node, args.default)
        ptr = lab.boot_pointer(args.node)
        print(f"{args.node}: default {ptr.default}, next boot {ptr.next or '(default)'}")
        return 0
    if cmd == "image":
        return _image(args)
    raise LabError(f"unknown command {cmd!r}")


def _power_word(state: str) -> str:
    return {"RUNNING": "on", "STOPPED": "off", "ABSENT": "absent"}.get(state, state.lower())


def _status(lab: Lab, as_json: bool) -> int:
    nodes = lab.status()
    if as_json:
        print(json.dumps({"lab": lab.name, "nodes": [asdict(n) for n in nodes]}, indent=2))
        return 0
    layout = lab.layout
    print(f"lab {lab.name}: bridge {layout.bridge} {layout.network}, inventory {layout.inventory_file}")
    print(f"{'node':<7}{'power':<7}{'address':<14}{'booted':<14}{'default':<14}{'next':<14}{'disks':<14}bmc")
    for n in nodes:
        print(
            f"{n.name:<7}{_power_word(n.state):<7}{n.address:<14}{(n.booted or '-')[:12]:<14}"
            f"{n.default[:12]:<14}{(n.next or '-')[:12]:<14}{','.join(n.data_disks) or '-':<14}{n.bmc}"
        )
    return 0


def _image(args: argparse.Namespace) -> int:
    store = ImageStore(args.root / "images")
    sub = args.image_command
    if sub == "list":
        for img in store.images():
            r = img.release
            print(f"{img.id}  version {r.version}  built {r.build_date}  {r.note or ''}".rstrip())
        return 0
    require_root(f"image {sub}")
    if sub == "build":
        img, built = store.ensure(collect(args.roles_dir, tuple(args.extra_package)), args.version)
        print(f"{img.id} ({'built' if built else 'cached'})")
        return 0
    if sub == "derive":
        files = {}
        for spec in args.file:
            path, sep, local = spec.partition("=")
            if not sep:
                raise LabError(f"--file {spec!r}: use PATH=LOCALFILE")
            try:
                files[path] = Path(local).read_text(encoding="utf-8")
            except OSError as exc:
                raise LabError(f"--file {spec!r}: cannot read {local}: {exc.strerror}") from exc
        img = store.derive(args.base, args.version, files, note=args.note)
        print(img.id)
        return 0
    if sub == "prune":
        current = store.cached(cache_key(collect(args.roles_dir), args.version))
        for image_id in store.prune({current.id} if current else set()):
            print(f"removed {image_id}")
        return 0
    if sub == "import":
        img = store.import_artifact(args.artifact, args.sha256)
        print(img.id)
        return 0
    raise LabError(f"unknown image command {sub!r}")


if __name__ == "__main__":
    sys.exit(main())
