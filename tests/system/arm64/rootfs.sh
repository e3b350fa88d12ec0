#!/usr/bin/env bash
# An emulated arm64 device for the ARM64 device check (tests/system/test_arm64_device.py).
#
#   rootfs.sh prepare   build or reuse an arm64 Debian root filesystem with Python (cached outside the checkout,
#                       keyed by the Debian suite, mirror and packages), and in it a venv holding the edge
#                       dependencies only (aarch64 wheels; rebuilt when the list below changes); prints the cache
#                       folder on its last line
#   rootfs.sh run DIR WORK -- CMD...
#                       run CMD in DIR's root filesystem under qemu-user, with WORK (a host folder) at /work, /proc
#                       mounted and an ARM cpuinfo over /proc/cpuinfo, all in a private mount namespace (nothing
#                       leaks when the process ends); exec's, so the caller's PID is the device's process
#
# Exit 3 with the reason on stderr where an emulated device cannot be set up here (not root, not x86-64 Linux, no
# apt, no network to Debian's mirror): the test skips with that reason.
set -euo pipefail

SUITE=bookworm                                # Debian 12 arm64: Python 3.11 (Debian has no arm64 3.10)
MIRROR=${FEDGE_ARM64_MIRROR:-http://deb.debian.org/debian}
PYTAG=3.11
# The edge dependencies (pyproject's base dependencies), pinned to what resolves for aarch64 today.
WHEELS=(numpy==2.4.6 grpcio==1.85.3 protobuf==6.33.6 onnxruntime==1.32.0 cryptography==50.0.2
        prometheus-client==0.26.0 h11==0.16.0)
INCLUDE=python3,python3-venv,ca-certificates
CACHE_ROOT=${FEDGE_ARM64_CACHE:-/var/cache/fedge-arm64}

cannot() { echo "arm64 device check unavailable: $*" >&2; exit 3; }

# Debian 12's qemu 7.2 passes the host's x86 /proc/cpuinfo through, on which onnxruntime's CPU detection crashes
# (../shared/research/arm64-device-probe.md): the device sees this one instead.
CPUINFO='processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd42
CPU revision	: 1
'

host_tools() {
    [ "$(id -u)" = 0 ] || cannot "needs root (debootstrap, binfmt_misc, chroot)"
    [ "$(uname -sm)" = "Linux x86_64" ] || cannot "host is $(uname -sm), not Linux x86_64"
    command -v apt-get >/dev/null || cannot "no apt-get to install qemu-user-static and debootstrap"
    if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
            || ! command -v update-binfmts >/dev/null; then
        echo "[arm64] installing qemu-user-static binfmt-support debootstrap" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            qemu-user-static binfmt-support debootstrap; } >&2 || cannot "apt-get install of qemu-user-static failed"
    fi
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || cannot "cannot mount binfmt_misc"
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >&2 \
        || cannot "cannot register qemu-aarch64 with binfmt_misc"
}

prepare() {
    host_tools
    local key dir
    key=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" "$CPUINFO" | sha256sum | cut -c1-16)
    dir="$CACHE_ROOT/$key"
    [ -e "$dir/ready" ] && echo "[arm64] reusing the root filesystem $dir" >&2 || debootstrap_rootfs "$dir"
    edge_venv "$dir"
    # Older keys are stale builds from other inputs.
    find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} + 2>/dev/null || true
    echo "$dir"
}

debootstrap_rootfs() {
    local dir=$1 tmp
    mkdir -p "$CACHE_ROOT"
    tmp=$(mktemp -d "$CACHE_ROOT/.build-XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "[arm64] debootstrap $SUITE arm64 (cold: ~8 min of emulated dpkg)" >&2
    debootstrap --arch=arm64 --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/rootfs" "$MIRROR" \
        > "$tmp/debootstrap.log" 2>&1 \
        || { tail -20 "$tmp/debootstrap.log" >&2; cannot "debootstrap from $MIRROR failed (log above)"; }
    printf '%s' "$CPUINFO" > "$tmp/cpuinfo"
    touch "$tmp/ready"
    trap - EXIT
    mv "$tmp" "$dir"
}

edge_venv() {
    local dir=$1 want
    want=$(printf '%s\n' "$PYTAG" "${WHEELS[@]}" | sha256sum | cut -c1-16)
    if [ "$(cat "$dir/rootfs/opt/edge/.wheels" 2>/dev/null)" = "$want" ]; then return; fi
    echo "[arm64] device venv /opt/edge with the edge dependencies' aarch64 wheels (~2 min)" >&2
    rm -rf "$dir/rootfs/opt/edge" "$dir/rootfs/opt/wheels"
    # Resolved on the host (native pip, the host's index), installed offline in the device.
    "${FEDGE_ARM64_HOST_PYTHON:-python3}" -m pip download -q --only-binary=:all: --implementation cp \
        --python-version "$PYTAG" --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 -d "$dir/rootfs/opt/wheels" \
        "${WHEELS[@]}" >&2
    in_device "$dir" "" python3 -m venv /opt/edge
    in_device "$dir" "" /opt/edge/bin/pip install -q --no-index --find-links /opt/wheels "${WHEELS[@]}"
    in_device "$dir" "" /opt/edge/bin/python -c \
        'import onnxruntime, numpy, grpc; print("[arm64] device python ok: onnxruntime", onnxruntime.__version__)' >&2
    echo "$want" > "$dir/rootfs/opt/edge/.wheels"
}

# in_device DIR WORK CMD...: CMD in DIR/rootfs, WORK (if any) at /work, a clean environment (no host pip settings).
in_device() {
    local dir=$1 work=$2; shift 2
    local root="$dir/rootfs"
    mkdir -p "$root/work"
    # shellcheck disable=SC2016
    ${EXEC:-} unshare --mount --propagation private -- /bin/sh -c '
        root=$1 cpuinfo=$2 work=$3; shift 3
        mount -t proc proc "$root/proc" && mount --bind "$cpuinfo" "$root/proc/cpuinfo" || exit 3
        mount --bind /dev "$root/dev" || exit 3
        if [ -n "$work" ]; then mount --bind "$work" "$root/work" || exit 3; fi
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
            PATH=/opt/edge/bin:/usr/local/bin:/usr/bin:/bin "$@"' sh "$root" "$dir/cpuinfo" "$work" "$@"
}

case "${1:-}" in
    prepare) prepare ;;
    run) dir=$2 work=$3; shift 3; [ "${1:-}" = "--" ] && shift; EXEC=exec in_device "$dir" "$work" "$@" ;;
    *) echo "usage: $0 prepare | run DIR WORK -- CMD..." >&2; exit 2 ;;
esac
