#!/usr/bin/env bash
# Install what `make pi-proof` needs besides `make system-deps`, when it is missing, and
# let the kernel run aarch64 binaries: qemu-user-static registers qemu-aarch64 with
# binfmt_misc (the F flag: the chroot needs no copy of qemu), mmdebstrap builds the
# arm64 roots from Debian's packages. Needs root: the proof chroots, and so does the build.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "make pi-proof needs root (it builds and chroots into arm64 roots)" >&2
    exit 1
fi

need=()
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
# mmdebstrap only recommends arch-test, which it needs for a foreign architecture; the
# install below skips recommends, so name it.
command -v arch-test >/dev/null 2>&1 || need+=(arch-test)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# The trixie root is signed with keys that Debian 12's keyring package carries.
[ -e /usr/share/keyrings/debian-archive-trixie-stable.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing missing system packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    update-binfmts --enable qemu-aarch64
fi
grep -q '^enabled' "$BINFMT/qemu-aarch64" || {
    echo "$BINFMT/qemu-aarch64 is not enabled: update-binfmts --enable qemu-aarch64" >&2
    exit 1
}
