#!/usr/bin/env bash
# Set up Sietch on a fresh Debian bookworm machine, then run it or its tests.
#
#   ./bootstrap.sh serve [ARGS]   install, build the default image, start the server
#   ./bootstrap.sh test  [ARGS]   install, build the test images, run the test suite
#   ./bootstrap.sh install        install and build only
#
# Every step is idempotent and cached: a second run only checks and starts.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
    python3 python3-venv qemu-system-x86 qemu-utils mmdebstrap busybox-static
    e2fsprogs xfsprogs cpio kmod util-linux iproute2 nftables slirp4netns ca-certificates
    g++ make libkrb5-dev
)
# Needed as commands, from whichever package has them: a machine may have another
# vendor's nodejs, which bundles npm and conflicts with Debian's npm package.
APT_COMMANDS=(npm)
VM_USER=sietch-vm
VENV=.venv

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap.sh installs system packages: run it as root (sudo $0 $*)" >&2
        exit 1
    fi
}

install_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    local tool
    for tool in "${APT_COMMANDS[@]}"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

create_vm_user() {
    # QEMU drops to this user (see sietch/vmm/process.py).
    if ! id "$VM_USER" >/dev/null 2>&1; then
        say "creating unprivileged user $VM_USER for QEMU"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$VM_USER"
    fi
    if getent group kvm >/dev/null; then
        usermod -a -G kvm "$VM_USER"
    fi
}

install_python() {
    local stamp="$VENV/.installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing Python packages"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e '.[dev]'
        echo "$want" >"$stamp"
    fi
}

build_images() {
    say "building images (cached: fast when nothing changed)"
    "$VENV/bin/sietch" image build "$@"
}

main() {
    local cmd=${1:-serve}
    shift || true
    need_root "$cmd"
    install_packages
    create_vm_user
    install_python
    case "$cmd" in
        install) build_images default minimal ;;
        serve)
            build_images default
            exec "$VENV/bin/sietch" serve "$@"
            ;;
        test)
            build_images default minimal desktop
            exec "$VENV/bin/python" -m pytest "$@"
            ;;
        *)
            echo "usage: $0 [serve|test|install] [ARGS...]" >&2
            exit 2
            ;;
    esac
}

main "$@"
