"""Build contexts, a wheel and an app for the builder's tests, made on the spot."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

APP = """
import json, os, http.server
import tinyweb

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "user": os.environ.get("USER"), "uid": os.getuid(), "cwd": os.getcwd(),
            "mode": os.environ.get("APP_MODE"), "greeting": tinyweb.GREETING,
            "version": open("version.txt").read().strip(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


def wheel(directory: Path, name: str = "tinyweb", version: str = "1.0") -> Path:
    """A pure-python wheel whose module says GREETING = 'hi from a wheel'."""
    files = {
        f"{name}/__init__.py": b"GREETING = 'hi from a wheel'\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: sietch-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    lines.append(f"{record},,")
    files[record] = ("\n".join(lines) + "\n").encode()
    out = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return out


def web_dockerfile(wheel_url: str) -> str:
    return f"""\
# A small web app: its code, a wheel from a local index, its config.
FROM default
ARG MODE=test
COPY app/ /srv/app/
RUN pip install --break-system-packages --no-index \\
        {wheel_url}
ENV APP_MODE=$MODE
USER user
WORKDIR /srv/app
COPY --chown=user:user version.txt ./
EXPOSE 8000
CMD ["python3", "server.py"]
"""


def web_context(root: Path, version: str = "1") -> Path:
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "server.py").write_text(APP)
    (root / "version.txt").write_text(version + "\n")
    (root / "notes.tmp").write_text("ignored\n")
    (root / ".dockerignore").write_text("*.tmp\n")
    return root


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, **fields: object) -> None:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def layer_tar(entries: list[tuple[str, bytes | None, dict[str, object]]]) -> bytes:
    """A layer: (name, file content or None for a directory/link, TarInfo fields)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, fields in entries:
            _add(tar, name, data, **fields)
    return buf.getvalue()


def docker_save(out: Path, layers: list[bytes], config: dict[str, object]) -> Path:
    """A ``docker save`` archive: manifest.json, the config and one directory per layer."""
    config_blob = json.dumps(config).encode()
    config_name = hashlib.sha256(config_blob).hexdigest() + ".json"
    names = [f"{hashlib.sha256(layer).hexdigest()}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]
    with tarfile.open(out, "w") as tar:
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        _add(tar, config_name, config_blob)
        for name, layer in zip(names, layers, strict=True):
            _add(tar, name.partition("/")[0], None, type=tarfile.DIRTYPE, mode=0o755)
            _add(tar, name, layer)
    return out


TLS_SERVER = """
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello over tls\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("0.0.0.0", 8443), H)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def make_ca(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``ip`` signed by it: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sietch test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def apt_repo(root: Path, package: str = "sietch-hello") -> Path:
    """A flat apt repository in ``root``: one tiny .deb (made with dpkg-deb) and Packages."""
    import subprocess

    pkg = root / "build" / package
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: tests <t@t>\n"
        "Description: says hello from a local repository\n"
    )
    script = pkg / "usr" / "bin" / package
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho hello from a local apt repository\n")
    script.chmod(0o755)
    repo = root / "repo"
    repo.mkdir()
    deb = repo / f"{package}_1.0_all.deb"
    build = ["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)]
    subprocess.run(build, check=True, capture_output=True)
    scan = ["dpkg-scanpackages", "--multiversion", "."]
    index = subprocess.run(scan, cwd=repo, check=True, capture_output=True).stdout
    (repo / "Packages").write_bytes(index)
    return repo
