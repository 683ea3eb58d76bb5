"""User images: build from scratch, rebuild cached, rebuild after one COPY changed, and
create from the custom image against create from ``default``, interleaved.

The Dockerfile has the test's steps (FROM default, COPY, RUN, ENV, USER, WORKDIR,
COPY, EXPOSE, CMD) without the pip download: a RUN that compiles the app instead,
so the benchmark needs no network. A fresh ``ARG NONCE`` makes the first build's
keys new ("from scratch"); the layer cache is the bench state dir's own.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from common import Target, bench_manager, median, p95, report

from sietch.builder import Builder, BuildRequest
from sietch.builder.manage import Images
from sietch.core.manager import Manager

DOCKERFILE = """\
FROM default
ARG NONCE
RUN echo $NONCE > /etc/build-nonce
COPY app/ /srv/app/
RUN python3 -m compileall -q /srv/app
ENV APP_MODE=bench
USER user
WORKDIR /srv/app
COPY --chown=user:user version.txt ./
EXPOSE 8000
CMD ["python3", "-m", "http.server", "8000"]
"""


def _context(root: Path) -> Path:
    (root / "app").mkdir()
    (root / "app" / "index.html").write_text("<p>bench</p>\n")
    (root / "app" / "main.py").write_text("print('bench')\n")
    (root / "version.txt").write_text("1\n")
    return root


async def _pool_ready(manager: Manager, count: int) -> None:
    """Until the warm pool holds ``count`` sandboxes (one per template), or 120 s."""
    for _ in range(1200):
        if len(manager.pool.ready()) >= count:
            return
        await asyncio.sleep(0.1)


async def _create_ms(manager: Manager, image: str) -> float:
    started = time.perf_counter()
    info = await manager.create(image=image)
    await manager.sandbox(info.id).exec(["true"])
    elapsed = (time.perf_counter() - started) * 1000
    await manager.delete(info.id)
    return elapsed


async def main(runs: int, creates: int) -> None:
    ctx = _context(Path(tempfile.mkdtemp(prefix="bench-images-")))
    async with bench_manager() as manager:
        builder = Builder(manager)
        args = {"NONCE": secrets.token_hex(8)}

        async def build() -> float:
            request = BuildRequest(name="bench-web", dockerfile=DOCKERFILE, context=ctx,
                                   build_args=args)  # fmt: skip
            started = time.perf_counter()
            await builder.build(request, lambda event: None)
            return time.perf_counter() - started

        try:
            small = await build()
            cached = [await build() for _ in range(runs)]
            one_step = []
            for i in range(runs):
                (ctx / "version.txt").write_text(f"{i + 2}\n")
                one_step.append(await build())
            for image in ("default", "bench-web"):  # templates exist, pools fill
                await _create_ms(manager, image)
            custom, default = [], []
            for _ in range(creates):
                for image, into in (("bench-web", custom), ("default", default)):
                    await _pool_ready(manager, 2)
                    into.append(await _create_ms(manager, image))
        finally:
            await Images(builder).remove("bench-web", force=True)
            shutil.rmtree(ctx, ignore_errors=True)
    report(
        {
            "build_small_s": round(small, 2),
            "rebuild_cached_s": round(median(cached), 3),
            "rebuild_cached_p95_s": round(p95(cached), 3),
            "rebuild_one_step_s": round(median(one_step), 2),
            "rebuild_one_step_p95_s": round(p95(one_step), 2),
            "create_custom_median_ms": round(median(custom), 1),
            "create_custom_p95_ms": round(p95(custom), 1),
            "create_default_median_ms": round(median(default), 1),
            "create_default_p95_ms": round(p95(default), 1),
            "custom_over_default": round(median(custom) / median(default), 2),
            "runs": runs,
            "creates": creates,
        },
        {"rebuild_cached_s": Target(2.0), "custom_over_default": Target(1.2)},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="rebuilds of each kind")
    parser.add_argument("--creates", type=int, default=10, help="creates of each image")
    options = parser.parse_args()
    asyncio.run(main(options.runs, options.creates))
