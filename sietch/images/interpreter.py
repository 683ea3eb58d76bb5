"""The code-interpreter image's guest side: a Jupyter kernel behind the HTTP gateway the
``e2b-code-interpreter`` SDK speaks, running before the template snapshot is taken.

The image's ``/etc/sietch/start`` runs the gateway (``interpreter/sietch_gateway.py``,
on Debian's ``jupyter_client``) as the unprivileged user; the gateway starts the default
Python kernel and imports numpy, pandas and matplotlib in it without binding a name, and
``/etc/sietch/ready`` succeeds once ``/health`` answers, i.e. once that kernel is idle. The
template snapshot thus holds a warm kernel with an empty namespace and an execution count
of 0, and every sandbox restored from it runs its first cell at once.

The kernel loads ``sietch_kernel`` (``interpreter/sietch_kernel.py``), which adds the
rich-result formats the SDK reads beyond IPython's own: chart data of a matplotlib figure,
the columns of a pandas DataFrame.
"""

from __future__ import annotations

from importlib import resources

PORT = 49999
"""Where the gateway listens (every guest address): the SDK's ``JUPYTER_PORT``."""
GATEWAY = "/usr/local/bin/sietch-kernel-gateway"
READY_TIMEOUT_S = 1200
"""Seconds the template boot waits for the warm kernel (see the agent's services.py)."""
KERNEL_EXTENSION = "usr/lib/python3/dist-packages/sietch_kernel.py"
"""On the sys.path of Debian's every python3, whatever its minor version."""

PACKAGES = (
    *("python3-ipykernel", "python3-jupyter-client"),
    *("python3-numpy", "python3-pandas", "python3-matplotlib"),
    # matplotlib's fonttools wants scipy or munkres: scipy would bring pythran, boost,
    # g++ and OpenBLAS (+600 MB), and OpenBLAS picks code for the CPU it guesses, which
    # crashes (SIGILL) on TCG's qemu64. numpy then uses the reference BLAS.
    *("python3-munkres", "libblas3", "liblapack3"),
)

_KERNEL_CONFIG = """\
# Written by Sietch's image builder (sietch/images/interpreter.py).
c.InteractiveShellApp.extensions = ["sietch_kernel"]
# Figures come back at figsize x dpi, not cropped to their content.
c.InlineBackend.print_figure_kwargs = {"bbox_inches": None}
# Tracebacks as plain text: they are read by programs and models, not terminals.
c.InteractiveShell.colors = "NoColor"
# History in memory only (In, Out, %history): a sandbox's kernel is one session, and the
# SQLite file's commit after every cell (fsyncs) held cells up for hundreds of ms.
c.HistoryManager.enabled = False
"""


def _resource(name: str) -> bytes:
    return resources.files("sietch.images").joinpath(f"interpreter/{name}").read_bytes()


def files(user: str) -> tuple[tuple[str, int, bytes], ...]:
    """(path in the tree, mode, content) of the files the image adds."""
    # setpriv: the gateway and its kernels run as the user, with the user's login env.
    start = (
        "#!/bin/sh\n"
        f"exec setpriv --reuid={user} --regid={user} --init-groups --reset-env "
        f"env HOME=/home/{user} LANG=C.UTF-8 python3 {GATEWAY} --port {PORT} "
        f"--cwd /home/{user}\n"
    )
    ready = f"#!/bin/sh\nexec curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:{PORT}/health\n"
    return (
        (GATEWAY.lstrip("/"), 0o755, _resource("sietch_gateway.py")),
        (KERNEL_EXTENSION, 0o644, _resource("sietch_kernel.py")),
        ("etc/ipython/ipython_kernel_config.py", 0o644, _KERNEL_CONFIG.encode()),
        ("etc/sietch/start", 0o755, start.encode()),
        ("etc/sietch/ready", 0o755, ready.encode()),
        ("etc/sietch/ready-timeout", 0o644, f"{READY_TIMEOUT_S}\n".encode()),
    )


def hooks(user: str, uid: int) -> tuple[str, ...]:
    """Shell run in the tree (``$1``): matplotlib's font cache, built once here rather
    than in every kernel's first import (seconds under emulation)."""
    return (
        f'chroot --userspec={uid}:{uid} "$1" env HOME=/home/{user} '
        "python3 -c 'import matplotlib.pyplot'",
    )
