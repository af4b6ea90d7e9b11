"""A real, throw-away PostgreSQL server on loopback, for the integration and lab tiers.

Debian's server binaries (``/usr/lib/postgresql/15/bin``) refuse to run as root, so the cluster directory
belongs to the ``postgres`` system user and every server command runs through ``runuser``. The server
listens on 127.0.0.1 only, on a free port, with its socket in its own directory; ``stop()`` removes it all.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from tests.support.net import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_USER = "postgres"


class PostgresServer:
    def __init__(self) -> None:
        if not (PG_BIN / "pg_ctl").exists():
            raise RuntimeError(f"{PG_BIN / 'pg_ctl'} is missing: install the Debian 'postgresql' package")
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        self.data = self.dir / "data"
        self._started = False

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", SYSTEM_USER, "--", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "corral",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        self._started = True

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://corral:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{secrets.token_hex(6)}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        try:
            if self._started:
                self._as_postgres(
                    str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
                )
                self._started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            deadline = time.monotonic() + 5
            while self.dir.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
