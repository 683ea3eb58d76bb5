"""The Python template builder writes the Dockerfile its steps mean: the same cache keys."""

from __future__ import annotations

from pathlib import Path

from sietch.builder.context import Context
from sietch.builder.dockerfile import parse
from sietch.builder.steps import plan
from sietch.client import Template

EQUIVALENT = """\
FROM default
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \\
    --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --break-system-packages tinyweb==1.0
COPY --chown=user:user app/ /srv/app/
ENV MODE=test GREETING="hello world"
WORKDIR /srv/app
USER user
RUN echo built > built.txt
EXPOSE 8000
HEALTHCHECK CMD curl -sf localhost:8000
CMD python3 -m http.server 8000
"""


def test_template_and_dockerfile_have_the_same_keys(tmp_path: Path) -> None:
    """Template(...).apt_install().pip_install().copy().env().workdir().user().run()
    .expose().start_cmd(ready=) plans to exactly the keys of the hand-written Dockerfile."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    template = (
        Template(base="default", context=tmp_path)
        .apt_install(["curl"])
        .pip_install(["tinyweb==1.0"])
        .copy("app/", "/srv/app/", chown="user:user")
        .env(MODE="test", GREETING="hello world")
        .workdir("/srv/app")
        .user("user")
        .run("echo built > built.txt")
        .expose(8000)
        .start_cmd("python3 -m http.server 8000", ready="curl -sf localhost:8000")
    )
    ctx = Context(tmp_path)
    ours = plan(parse(template.dockerfile()), "base", ctx)
    theirs = plan(parse(EQUIVALENT), "base", ctx)
    assert [s.key for s in ours] == [s.key for s in theirs]
    assert len(ours) == 10
    (tmp_path / "app" / "main.py").write_text("print('changed')\n")
    changed = plan(parse(template.dockerfile()), "base", ctx)
    assert [s.key for s in changed][:2] == [s.key for s in ours][:2]
    assert changed[2].key != ours[2].key
