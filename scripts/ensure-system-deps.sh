#!/usr/bin/env bash
# Install the system tools Vigil's tests and demo need, when they are missing.
# mosquitto: the real broker tests start; mtools/dosfstools/fdisk: the SD-image tool's
# tests build a FAT image without root; systemd-analyze: unit file checks; the PostgreSQL
# server tools (initdb, pg_ctl): the store tests start their own server on a free port.
set -euo pipefail

# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off PATH;
# tests/support/postgres.py looks in the same places.
have_postgres_server() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] && [ -x "$(dirname "$initdb")/pg_ctl" ] && return 0
    done
    return 1
}

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need+=(mosquitto-clients mosquitto)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v mkfs.vfat >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.vfat ] || need+=(dosfstools)
command -v sfdisk >/dev/null 2>&1 || [ -x /usr/sbin/sfdisk ] || need+=(fdisk)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
have_postgres_server || need+=(postgresql)
# As root the tests run PostgreSQL as 'nobody' (initdb refuses root) through runuser.
command -v runuser >/dev/null 2>&1 || [ -x /usr/sbin/runuser ] || need+=(util-linux)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "installing missing system packages: ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
        echo "need root (or sudo) to install: ${need[*]}" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
