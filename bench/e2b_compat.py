"""E2B compatibility cost: the e2b SDK's ``commands.run("true")`` vs. Sietch's SDK, and the
code interpreter through e2b-code-interpreter.

Starts ``python -m sietch.server`` (as users run it) on a fresh state dir, with the e2b
SDKs pointed at it by ``E2B_API_URL``/``E2B_SANDBOX_URL``. One default sandbox per SDK;
the two ``true`` runs alternate, so drift (TCG timer noise, a busy host) hits both alike.
Then, with the code-interpreter image's template made and the warm pool refilled:
``run_code("1+1")`` on a warm sandbox, and create -> first ``run_code`` result.

The last line is JSON: ``{"e2b_run_true_median_ms", "sietch_run_true_median_ms",
"run_code_median_ms", "ci_create_to_result_ms", ...}`` with medians and p95s.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from burst import cpu_seconds
from common import Target, api_server, median, new_state_dir, p95, report
from e2b import Sandbox as E2bSandbox
from e2b_code_interpreter import Sandbox as CiSandbox
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch import Sandbox
from sietch.core.models import SandboxState
from sietch.core.pool import is_pooled
from sietch.core.store import Store

TEMPLATE_TIMEOUT_S = 1800
"""The first code-interpreter create boots the image and makes its template."""
POOL_WAIT_S = 600.0
IMAGE = "code-interpreter"


def ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def stats(name: str, values: list[float]) -> dict[str, float]:
    return {f"{name}_median_ms": round(median(values), 2), f"{name}_p95_ms": round(p95(values), 2)}


def run_true(runs: int, warmup: int, url: str, key: str) -> dict[str, float]:
    e2b = E2bSandbox.create(timeout=3600)
    own = Sandbox.create(url=url, api_key=key)
    try:
        e_ms: list[float] = []
        s_ms: list[float] = []
        for i in range(warmup + runs):
            e = ms(lambda: e2b.commands.run("true"))
            s = ms(lambda: own.exec("true"))
            if i >= warmup:
                e_ms.append(e)
                s_ms.append(s)
    finally:
        e2b.kill()
        own.kill()
        own.close()
    return stats("e2b_run_true", e_ms) | stats("sietch_run_true", s_ms)


def pooled(state: Path) -> None:
    """Wait until the warm pool holds an idle code-interpreter sandbox again (a create then
    only hands one out): a pooled record whose QEMU has stopped burning CPU."""
    store = Store(state / "sietch.db")
    try:
        for attempt in Retrying(stop=stop_after_delay(POOL_WAIT_S), wait=wait_fixed(0.5)):
            with attempt:
                pids = [
                    i.pid
                    for i in store.all(SandboxState.RUNNING)
                    if is_pooled(i) and i.image == IMAGE and i.pid is not None
                ]
                assert pids, "no pooled code-interpreter sandbox yet"
                before = cpu_seconds(pids[0])
                time.sleep(0.5)
                assert cpu_seconds(pids[0]) - before < 0.15, "the pooled sandbox is still busy"
    finally:
        store.close()


def code_interpreter(runs: int, creates: int, state: Path) -> dict[str, float]:
    first = CiSandbox.create(timeout=3600, request_timeout=TEMPLATE_TIMEOUT_S)
    try:
        assert first.run_code("1+1").text == "2"
        run_ms = [ms(lambda: first.run_code("1+1")) for _ in range(runs)]
    finally:
        first.kill()
    create_ms = []
    for _ in range(creates):
        pooled(state)
        started = time.perf_counter()
        sb = CiSandbox.create(timeout=600)
        try:
            assert sb.run_code("1+1").text == "2"
            create_ms.append((time.perf_counter() - started) * 1000)
        finally:
            sb.kill()
    return stats("run_code", run_ms) | {
        "ci_create_to_result_ms": round(median(create_ms), 2),
        "ci_create_to_result_p95_ms": round(p95(create_ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--creates", type=int, default=5)
    args = parser.parse_args()
    state = new_state_dir()
    with api_server(state) as (url, key):
        os.environ.update({"E2B_API_KEY": key, "E2B_API_URL": url, "E2B_SANDBOX_URL": url})
        figures: dict[str, float | int] = run_true(args.runs, args.warmup, url, key)
        figures |= code_interpreter(args.runs, args.creates, state)
    figures["runs"] = args.runs
    figures["e2b_vs_sietch"] = round(
        figures["e2b_run_true_median_ms"] / figures["sietch_run_true_median_ms"], 2
    )
    report(
        figures,
        {
            "e2b_vs_sietch": Target(1.3),
            "ci_create_to_result_ms": Target(500),
        },
    )


if __name__ == "__main__":
    main()
