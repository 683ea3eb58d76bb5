"""The Dockerfile parser, the context's .dockerignore and globs, safe tar extraction: pure logic."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sietch.builder import safetar
from sietch.builder.context import Context
from sietch.builder.dockerfile import parse
from sietch.builder.steps import State, chain_key, plan
from sietch.errors import InvalidArgument

FULL = """\
# comment
ARG BASE=default
FROM $BASE
ARG VERSION=1.0
LABEL org.example.name="my app" version=$VERSION
ENV A=1 B="two words"
ENV LEGACY some value
WORKDIR /srv
WORKDIR app
COPY --chown=user:user --chmod=0644 src/*.py ./
ADD files.tar /opt/
RUN apt-get update && \\
    # a comment inside the continuation
    apt-get install -y curl
RUN ["python3", "-c", "print(1)"]
USER user
EXPOSE 8000 9000/tcp
HEALTHCHECK --start-period=30s CMD curl -sf localhost:8000
ENTRYPOINT ["python3"]
CMD ["-m", "http.server"]
"""


def test_every_supported_instruction_parses() -> None:
    """Each instruction becomes its kind with resolved arguments; continuations join and
    comments inside them vanish; ARG before FROM names the base."""
    df = parse(FULL, {"VERSION": "2.0"})
    assert df.base == "default"
    kinds = [i.kind for i in df.instructions]
    assert kinds == ["ARG", "LABEL", "ENV", "ENV", "WORKDIR", "WORKDIR", "COPY", "ADD", "RUN",
                     "RUN", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"]  # fmt: skip
    by = {i.line: i for i in df.instructions}
    assert by[5].args == ("org.example.name=my app", "version=2.0")
    assert by[6].args == ("A=1", "B=two words") and by[7].args == ("LEGACY=some value",)
    assert by[10].flag("chown") == "user:user" and by[10].args == ("src/*.py", "./")
    assert by[12].shell and by[12].args == ("apt-get update && apt-get install -y curl",)
    assert not by[15].shell and by[15].args == ("python3", "-c", "print(1)")
    assert by[17].args == ("8000", "9000")
    state = State()
    for ins in df.instructions:
        state.apply(ins)
    config = state.config()
    assert config.start == ["python3", "-m", "http.server"]
    assert config.workdir == "/srv/app" and config.user == "user"
    assert config.env == {"A": "1", "B": "two words", "LEGACY": "some value"}
    assert config.expose == [8000, 9000] and config.ready_timeout_s == 30
    assert config.ready == ["/bin/sh", "-c", "curl -sf localhost:8000"]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("FROM default\nVOLUME /data\n", 2, "volumes"),
        ("FROM default\nONBUILD RUN x\n", 2, "ONBUILD"),
        ("FROM default\nCOPY --from=build /a /b\n", 2, "multi-stage"),
        ("FROM default\nFROM minimal\n", 2, "second FROM"),
        ("FROM default\n\nFROBNICATE x\n", 3, "unknown instruction"),
        ("FROM default\nADD https://example.invalid/x /x\n", 2, "URL"),
        ("FROM default\nEXPOSE 53/udp\n", 2, "TCP"),
        ("RUN true\n", 1, "before FROM"),
        ("FROM default\nCOPY --owner=x a b\n", 2, "--owner"),
    ],
)
def test_unsupported_input_names_its_line(text: str, line: int, says: str) -> None:
    """What Sietch can't honour is an error naming the line, never silently ignored."""
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    assert f"line {line}" in caught.value.message and says in caught.value.message


def test_undeclared_build_arg_is_refused() -> None:
    """A --build-arg no ARG declares is an error (Docker warns; silence hides typos)."""
    with pytest.raises(InvalidArgument, match="NOPE"):
        parse("FROM default\n", {"NOPE": "1"})


def _ctx(root: Path) -> Context:
    for rel, text in {
        "src/a.py": "a", "src/b.py": "b", "src/c.txt": "c", "src/cache/x.pyc": "x",
        "keep.log": "k", "drop.log": "d", ".dockerignore": "*.log\n!keep.log\n**/cache\n",
    }.items():  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return Context(root)


def test_dockerignore_and_globs(tmp_path: Path) -> None:
    """Globs match inside their directory, .dockerignore drops files (with ! exceptions and
    **), and the context's digest changes only with what a COPY reads."""
    ctx = _ctx(tmp_path)
    assert [s.rel for s in ctx.sources("src/*.py", 1)] == ["src/a.py", "src/b.py"]
    assert ctx.ignored("drop.log") and not ctx.ignored("keep.log")
    assert ctx.ignored("src/cache/x.pyc")
    assert [rel for rel, _ in ctx.files(ctx.sources("src", 1)[0])] == ["a.py", "b.py", "c.txt"]
    with pytest.raises(InvalidArgument, match="matches nothing"):
        ctx.sources("drop.log", 4)
    before = ctx.digest(ctx.sources("src/*.py", 1))
    (tmp_path / "src/c.txt").write_text("changed")
    assert ctx.digest(ctx.sources("src/*.py", 1)) == before
    (tmp_path / "src/a.py").write_text("changed")
    assert ctx.digest(ctx.sources("src/*.py", 1)) != before


def test_copy_outside_the_context_is_refused(tmp_path: Path) -> None:
    """COPY ../x and a symlink leading out of the context are errors naming the line."""
    ctx = _ctx(tmp_path / "ctx")
    (tmp_path / "ctx" / "out").symlink_to(tmp_path)
    (tmp_path / "secret").write_text("s")
    for source in ("../secret", "out/secret", "out"):
        with pytest.raises(InvalidArgument, match=r"line 7.*outside"):
            ctx.sources(source, 7)


def test_keys_chain_and_follow_the_files(tmp_path: Path) -> None:
    """A step's key depends on its parent, its instruction and the files it reads; a change
    moves the keys from that step on and none before it."""
    ctx = _ctx(tmp_path)
    text = "FROM default\nRUN echo 1\nCOPY src/a.py /a\nRUN echo 2\n"
    first = [s.key for s in plan(parse(text), "base", ctx)]
    assert [s.key for s in plan(parse(text), "base", ctx)] == first
    (tmp_path / "src/a.py").write_text("new")
    second = [s.key for s in plan(parse(text), "base", ctx)]
    assert second[0] == first[0] and second[1] != first[1] and second[2] != first[2]
    assert next(s.key for s in plan(parse(text), "other", ctx)) != first[0]
    assert chain_key("p", "x") != chain_key("p", "y")


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    buf.seek(0)
    return buf


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ([(_member("/etc/passwd"), b"x")], "absolute"),
        ([(_member("a/../../x"), b"x")], "'..'"),
        ([(_member("dev/sda", tarfile.BLKTYPE), b"")], "device"),
        ([(_member("null", tarfile.CHRTYPE), b"")], "device"),
        ([(_member("up", tarfile.SYMTYPE, "../../etc"), b"")], "leaves"),
        ([(_member("l", tarfile.SYMTYPE, "/etc"), b""), (_member("l/passwd"), b"x")], "symlink"),
        ([(_member("big"), b"x" * 2048)], "more than"),
    ],
)
def test_unsafe_archives_are_refused_and_write_nothing_outside(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], says: str
) -> None:
    """Absolute and climbing paths, device files, escaping links and tar bombs are refused
    before anything of theirs is written; nothing appears outside the target."""
    dest = tmp_path / "dest"
    with pytest.raises(InvalidArgument, match=says):
        safetar.extract(_tar(*members), dest, max_bytes=1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert Path("/etc/passwd").read_text() != "x"
