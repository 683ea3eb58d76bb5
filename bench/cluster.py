"""Scale-out: what a gateway adds, how creates spread, how fast a dead node is routed
around, how fast snapshots copy between nodes.

Three node servers on this machine, each in a network namespace of its own, two
gateways and a PostgreSQL, all set up as the cluster tests do (``tests/cluster``):

- ``gateway_added_ms``: a ``GET`` of a sandbox's record through a gateway minus the same
  ``GET`` straight to its node's internal port, over interleaved pairs (median and p95
  of the per-pair differences).
- ``spread_stddev``: sandboxes per node after creates on equal nodes.
- ``failover_s``: SIGKILL a node's server, then create through a gateway asking for that
  node: the time until a create has succeeded elsewhere.
- ``snapshot_copy_mib_s``: a node fetching a snapshot (64 MiB written in its sandbox)
  from another, checked file by file: the files' bytes over the wall time.

Needs root (namespaces, a bridge); run after ``./bootstrap.sh test`` has installed
PostgreSQL.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import Target, median, p95, report

# The cluster tests' harness makes the nodes, gateways and PostgreSQL: reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sietch.cluster.wire import CALLER_HEADER, SECRET_HEADER, encode_caller
from sietch.core.tenants import Caller
from tests.cluster.harness import SECRET, Cluster, cluster
from tests.cluster.network import ClusterNet
from tests.cluster.postgres import Postgres

SMALL = {"memory_mib": 256}
TARGETS = {
    "gateway_added_ms": Target(3),
    "spread_stddev": Target(1),
    "failover_s": Target(10),
}


def gateway_added(c: Cluster, pairs: int) -> tuple[float, float]:
    with c.client(0) as http:
        sandbox = http.post("/sandboxes", json=SMALL).json()
    node = c.node(c.catalog.locate(sandbox["id"]).node)  # type: ignore[union-attr]
    direct_headers = {
        SECRET_HEADER: SECRET,
        CALLER_HEADER: encode_caller(Caller("default", "bench", admin=True)),
    }
    path = f"/api/v1/sandboxes/{sandbox['id']}"
    added = []
    with (
        httpx.Client(base_url=c.gateways[0].url, headers=c.client().headers) as gateway,
        httpx.Client(base_url=node.url, headers=direct_headers) as direct,
    ):
        for client in (gateway, direct):  # warm both connections
            client.get(path).raise_for_status()
        for _ in range(pairs):
            started = time.perf_counter()
            gateway.get(path).raise_for_status()
            through = time.perf_counter() - started
            started = time.perf_counter()
            direct.get(path).raise_for_status()
            added.append((through - (time.perf_counter() - started)) * 1000)
        gateway.delete(path)
    return median(added), p95(added)


def spread(c: Cluster, creates: int) -> tuple[float, dict[str, int]]:
    def create(n: int) -> str:
        with c.client(n % 2) as http:
            answer = http.post("/sandboxes", json=SMALL)
            if answer.status_code != 201:
                raise RuntimeError(f"a create failed: {answer.status_code} {answer.text}")
            return str(answer.json()["id"])

    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(create, range(creates)))
    counts = {n.name: 0 for n in c.nodes}
    for sandbox_id in ids:
        counts[c.catalog.locate(sandbox_id).node] += 1  # type: ignore[union-attr]
    with ThreadPoolExecutor(3) as pool, c.client(0) as http:
        list(pool.map(lambda i: http.delete(f"/sandboxes/{i}"), ids))
    return statistics.pstdev(counts.values()), counts


def snapshot_copy(c: Cluster) -> list[float]:
    with c.client(0) as http:
        sandbox = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-1"}).json()
        write = "head -c 67108864 /dev/urandom > /root/blob && sync"
        http.post(f"/sandboxes/{sandbox['id']}/exec", json={"cmd": ["sh", "-c", write]})
        snap = http.post(f"/sandboxes/{sandbox['id']}/snapshots", json={}).json()
        http.delete(f"/sandboxes/{sandbox['id']}")
    source = c.node("node-1")
    files = source.state_dir.glob(f"**/snapshots/{snap['id']}/**/*")
    size = sum(p.stat().st_size for p in files if p.is_file())
    rates = []
    for target in ("node-2", "node-3"):
        started = time.perf_counter()
        answer = httpx.post(
            f"{c.node(target).url}/internal/snapshots/{snap['id']}/fetch",
            json={"source": source.url},
            headers={SECRET_HEADER: SECRET},
            timeout=600,
        )
        answer.raise_for_status()
        rates.append(size / (1 << 20) / (time.perf_counter() - started))
    with c.client(0) as http:
        http.delete(f"/snapshots/{snap['id']}")
    return rates


def failover(c: Cluster) -> float:
    victim = c.node("node-3")
    victim.stop(signal.SIGKILL)
    started = time.perf_counter()
    try:
        with c.client(1) as http:
            while True:
                answer = http.post("/sandboxes", json={**SMALL, "prefer_node": "node-3"})
                if answer.status_code == 201:
                    took = time.perf_counter() - started
                    http.delete(f"/sandboxes/{answer.json()['id']}")
                    return took
    finally:
        victim.up()


def main(pairs: int, creates: int) -> None:
    net = ClusterNet()
    net.up()
    pg = Postgres(listen=(net.host_address,), clients=(net.subnet,))
    pg.start()
    try:
        with cluster(net, pg, [{}, {}, {}], gateways=2) as c:
            added, added_p95 = gateway_added(c, pairs)
            stddev, counts = spread(c, creates)
            rates = snapshot_copy(c)
            failover_s = failover(c)
    finally:
        pg.stop()
        net.down()
    report(
        {
            "pairs": pairs,
            "gateway_added_ms": round(added, 2),
            "gateway_added_p95_ms": round(added_p95, 2),
            "creates": creates,
            "spread": counts,
            "spread_stddev": round(stddev, 2),
            "failover_s": round(failover_s, 2),
            "snapshot_copy_mib_s": round(median(rates), 1),
            "snapshot_copy_runs": [round(r, 1) for r in rates],
        },
        TARGETS,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--creates", type=int, default=30)
    args = parser.parse_args()
    main(args.pairs, args.creates)
