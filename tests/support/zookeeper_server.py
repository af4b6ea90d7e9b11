"""A real, standalone ZooKeeper server on 127.0.0.1 for tests (Debian's ``zookeeper`` package).

Each server gets its own data directory and zoo.cfg, listens only on a free loopback port (the
AdminServer is off, no JMX), and is stopped by the caller's fixture even when the test fails::

    with ZooKeeperServer(tmp_path / "zk") as zk:
        client = KazooClient(hosts=zk.hosts)

``restart()`` keeps the data directory, to test that state survives a server restart.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
# Without a binding slf4j discards every log line; slf4j-simple writes them to stderr (our log file).
SLF4J_BINDING = Path("/usr/share/java/slf4j-simple.jar")
JAVA = "/usr/bin/java"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


def four_letter_word(port: int, word: str, timeout: float = 2.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(word.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    def __init__(self, directory: Path, *, tick_ms: int = 500, start_timeout: float = 60.0) -> None:
        if not ZOOKEEPER_JAR.exists():
            raise RuntimeError(f"{ZOOKEEPER_JAR} is missing: install Debian's zookeeper package")
        self.directory = directory
        self.data_dir = directory / "data"
        self.config = directory / "zoo.cfg"
        self.log = directory / "zookeeper.log"
        self.port = free_port()
        self.tick_ms = tick_ms
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    f"tickTime={self.tick_ms}",
                    f"dataDir={self.data_dir}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,mntr",
                    "preAllocSize=1024",
                    "maxClientCnxns=0",
                    "",
                ]
            )
        )

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("ZooKeeper is already running")
        self._write_config()
        classpath = ":".join(str(jar) for jar in (ZOOKEEPER_JAR, SLF4J_BINDING) if jar.exists())
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [JAVA, "-Xmx128m", "-XX:+UseSerialGC", "-cp", classpath, MAIN_CLASS, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"ZooKeeper exited at start; its log:\n{self.log.read_text()[-4000:]}")
            try:
                if "Mode: standalone" in four_letter_word(self.port, "srvr"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ZooKeeper did not serve within {self.start_timeout:g} s; log: {self.log}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ZooKeeperServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
