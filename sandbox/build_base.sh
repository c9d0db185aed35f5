#!/bin/sh
# Build the sandbox's Debian base image without any container registry: debootstrap a minimal Debian,
# install python3 + the kernel's packages + tini from Debian's own archive, and `docker import` the tree.
#
# Usage: sandbox/build_base.sh [IMAGE_TAG]        (default: lllm/sandbox-base:bookworm)
# Env:   LLLM_DEBIAN_MIRROR (default http://deb.debian.org/debian), LLLM_DEBIAN_SUITE (default bookworm),
#        LLLM_FORCE_BASE=1 rebuilds even when the image exists.
# Idempotent: when the image already exists it prints its name and exits 0 in well under a second.
# Needs root, debootstrap and a running Docker engine (apt-get install -y debootstrap docker.io).
set -eu

TAG="${1:-lllm/sandbox-base:bookworm}"
SUITE="${LLLM_DEBIAN_SUITE:-bookworm}"
MIRROR="${LLLM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3-ipykernel python3-numpy python3-pandas python3-matplotlib python3-pip python3-pytest tini"

if [ "${LLLM_FORCE_BASE:-0}" != "1" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "build_base.sh: debootstrap needs root (run as root or with sudo)" >&2
    exit 2
fi
command -v debootstrap >/dev/null 2>&1 || { echo "build_base.sh: debootstrap is missing: apt-get install -y debootstrap" >&2; exit 2; }

ROOTFS="$(mktemp -d /var/tmp/lllm-base.XXXXXX)"
cleanup() {
    umount "$ROOTFS/proc" 2>/dev/null || true
    rm -rf "$ROOTFS"
}
trap cleanup EXIT INT TERM

echo "build_base.sh: debootstrap $SUITE into $ROOTFS (about 2 minutes)" >&2
debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$MIRROR" >&2

cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
# debootstrap's --include cannot resolve these; apt inside the chroot can. No recommends: no compilers.
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $PACKAGES >&2
chroot "$ROOTFS" apt-get clean
umount "$ROOTFS/proc"
# Leave nothing of this machine in the image.
: > "$ROOTFS/etc/resolv.conf"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* "$ROOTFS"/var/log/*.log

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/usr/bin/python3"]' \
    - "$TAG" >&2
echo "$TAG"
