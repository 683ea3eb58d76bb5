"""A real PostgreSQL for the cluster tests: Debian's server binaries, ``initdb`` in a temp
dir as an unprivileged user (PostgreSQL refuses to run as root), on a free loopback port.
Started once per test run; each test that needs a clean catalog gets a database of its own.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.conftest import short_tmpdir
from tests.server.harness import free_port

PG_BIN = Path("/usr/lib/postgresql")


def _bin(name: str) -> str:
    """A server binary of the newest PostgreSQL installed (they are not on PATH)."""
    versions = sorted(PG_BIN.glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: ./bootstrap.sh test installs it")
    return str(versions[-1] / name)


def _runner() -> list[str]:
    """Run as the package's ``postgres`` user (or nobody) when we are root."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


class Postgres:
    """One throwaway cluster: ``url(db)`` for a database; :meth:`database` makes one."""

    def __init__(self, listen: tuple[str, ...] = (), clients: tuple[str, ...] = ()) -> None:
        """``listen``: addresses besides loopback; ``clients``: the subnets they let in."""
        self.listen = ("127.0.0.1", *listen)
        self.clients = clients
        self.dir = short_tmpdir("pg")
        self.port = free_port()
        self.data = self.dir / "data"

    def start(self) -> None:
        runner = _runner()
        if runner:
            user = runner[2]
            shutil.chown(self.dir, user)
        subprocess.run(
            [
                *runner,
                _bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "sietch",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.writelines(f"host all all {subnet} trust\n" for subnet in self.clients)
        subprocess.run(
            [
                *runner,
                _bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.dir} -c listen_addresses={','.join(self.listen)} "
                "-c fsync=off -c max_connections=200",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            [*_runner(), _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://sietch@{host}:{self.port}/{db}"

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test; dropped after it. Yields its name."""
        name = "t_" + secrets.token_hex(4)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield name
        finally:
            with psycopg.connect(self.url(), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
