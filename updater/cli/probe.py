"""corral-probe: keep using the cluster's services and report availability (DESIGN.md §6).

Runs until --duration elapses or it receives SIGTERM/SIGINT, then prints the report, writes it as JSON
with --report, and exits 0 only when every service met its target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from updater.domain.availability import format_report
from updater.probe.clients import HttpCheck, S3Reader, S3Writer, ZooKeeperWriter
from updater.probe.runner import Probe, ProbeClient


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-probe", description=__doc__)
    parser.add_argument("--zookeeper", help="ZooKeeper ensemble, host:port[,host:port...]")
    parser.add_argument("--vip-url", help="URL fetched through the cluster VIP, e.g. http://10.77.0.100/")
    parser.add_argument("--s3-endpoint", help="S3 endpoint through the VIP, e.g. http://10.77.0.100")
    parser.add_argument("--s3-bucket", default="corral-probe")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until SIGTERM/SIGINT)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between operations per service")
    parser.add_argument("--deadline", type=float, default=5.0, help="deadline of one operation in seconds")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--ready-file", type=Path, help="touch this file once every client is set up")
    return parser


def build_clients(args: argparse.Namespace) -> list[ProbeClient]:
    clients: list[ProbeClient] = []
    if args.zookeeper:
        clients.append(ZooKeeperWriter(args.zookeeper))
    if args.vip_url:
        clients.append(HttpCheck(args.vip_url))
    if args.s3_endpoint:
        # Credentials come from the environment only, so they never show in a process listing.
        access, secret = os.environ.get("CORRAL_S3_ACCESS_KEY"), os.environ.get("CORRAL_S3_SECRET_KEY")
        if not access or not secret:
            raise SystemExit(
                "corral-probe: --s3-endpoint needs CORRAL_S3_ACCESS_KEY and CORRAL_S3_SECRET_KEY set"
            )
        clients.append(S3Writer(args.s3_endpoint, access, secret, args.s3_bucket))
        clients.append(S3Reader(args.s3_endpoint, access, secret, args.s3_bucket))
    if not clients:
        raise SystemExit("corral-probe: name at least one service (--zookeeper, --vip-url, --s3-endpoint)")
    return clients


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clients = build_clients(args)
    probe = Probe(clients, interval_s=args.interval, deadline_s=args.deadline)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        probe.start()
    except Exception as exc:
        print(f"corral-probe: could not set up the clients: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.ready_file:
        args.ready_file.touch()
    stop.wait(args.duration)
    report = probe.stop()
    document = report.to_dict()
    writers = [c for c in clients if isinstance(c, S3Writer)]
    if writers:
        lost = [key for writer in writers for key in writer.verify_written()]
        document["integrity"] = {
            "objects_written": sum(len(w.written) for w in writers),
            "lost_or_altered": lost,
        }
        if lost:
            document["passed"] = False
    print(format_report(report))
    if "integrity" in document:
        print(
            f"objects written during the probe: {document['integrity']['objects_written']}, "
            f"lost or altered: {len(document['integrity']['lost_or_altered'])}"
        )
    if args.report:
        args.report.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if document["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
