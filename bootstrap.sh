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
    python3 python3-venv mmdebstrap busybox-static
    e2fsprogs xfsprogs cpio kmod util-linux iproute2 nftables slirp4netns ca-certificates
    g++ make libkrb5-dev
    gcc libc6-dev  # sietch-front, the guest agent's compiled hot path (static)
)
# QEMU 10 (bookworm-backports on bookworm): it maps snapshot memory from files
# it opens read-only (readonly=on,rom=off), and runs TCG guests ~2x faster than 7.2.
QEMU_PACKAGES=(qemu-system-x86 qemu-utils)
QEMU_MIN_VERSION=1:10
BACKPORTS_LIST=/etc/apt/sources.list.d/sietch-backports.sources
# For the tests only: chromium for the browser tests (tests/desktop/test_viewer.py,
# tests/console: Playwright drives it; its own browser downloads are not reachable),
# postgresql for the cluster tests (tests/cluster start one of their own: initdb in a temp dir).
TEST_APT_PACKAGES=(chromium postgresql)
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
    for pkg in "${APT_PACKAGES[@]}" "$@"; do
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

debian_mirror() {
    # The mirror the machine's own apt sources name for suite $1: deb822
    # stanzas first, then one-line sources.list entries. Never a built-in host.
    local suite=$1 file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -e "$file" ] || continue
        awk -v want="$suite" '
            function flush() {
                if (uris != "" && (" " suites " ") ~ (" " want " ")) { print uris; uris = ""; exit }
                uris = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            END { flush() }
        ' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$file" ] || continue
        sed -E 's/\[[^]]*\]//' "$file" | awk -v want="$suite" '$1 == "deb" && $3 == want { print $2 }'
    done
}

qemu_candidate() {
    apt-cache policy qemu-system-x86 2>/dev/null | awk '$1 == "Candidate:" { print $2 }'
}

add_backports() {
    local codename=$1 mirror
    mirror=$(debian_mirror "$codename" | head -n1)
    if [ -z "$mirror" ]; then
        echo "no apt source names a mirror for $codename: add $codename-backports by hand" >&2
        exit 1
    fi
    say "adding $codename-backports from $mirror (for QEMU 10)"
    printf '%s\n' "# Added by Sietch's bootstrap.sh, for QEMU 10." "Types: deb" "URIs: $mirror" \
        "Suites: $codename-backports" "Components: main" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$BACKPORTS_LIST"
    apt-get update -qq
}

install_qemu() {
    local installed codename target=()
    installed=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
    if dpkg --compare-versions "${installed:-0}" ge "$QEMU_MIN_VERSION" \
        && dpkg-query -W -f='${Status}' qemu-utils 2>/dev/null | grep -q "ok installed"; then
        return
    fi
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    apt-get update -qq
    if ! dpkg --compare-versions "$(qemu_candidate)" ge "$QEMU_MIN_VERSION"; then
        [ -e "$BACKPORTS_LIST" ] || add_backports "$codename"
        target=(-t "$codename-backports")
    fi
    say "installing QEMU 10 (${QEMU_PACKAGES[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${target[@]}" "${QEMU_PACKAGES[@]}" >/dev/null
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
        "$VENV/bin/pip" install -q -e '.[server,dev]'
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
    if [ "$cmd" = test ]; then install_packages "${TEST_APT_PACKAGES[@]}"; else install_packages; fi
    install_qemu
    create_vm_user
    install_python
    case "$cmd" in
        install) build_images default minimal ;;
        serve)
            build_images default
            exec "$VENV/bin/sietch" serve "$@"
            ;;
        test)
            build_images default minimal desktop desktop-e2b code-interpreter
            # A worker per core, each running whole groups (tests/conftest.py): under TCG a
            # test mostly keeps one core busy with one VM; groups go longest first, as
            # listed. A crashed worker ends the run (its test is named): xdist 3.8 can
            # hang at the end of a run once it has replaced one.
            exec "$VENV/bin/python" -m pytest -n auto --dist loadgroup --no-loadscope-reorder \
                --max-worker-restart=0 "$@"
            ;;
        *)
            echo "usage: $0 [serve|test|install] [ARGS...]" >&2
            exit 2
            ;;
    esac
}

main "$@"
