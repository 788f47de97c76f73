#!/bin/sh
# Vigil first boot: install the daemon from the wheels on the boot partition, move the
# secrets off the FAT partition (which has no file permissions) to 0600 files owned by
# the service user, enable the service. Runs once, as root, from firstrun.sh (Bookworm)
# or cloud-init's runcmd (Trixie, with --start: the system is up, start it now).
# Needs no network.
set -eu
BOOT=/boot/firmware
[ -d "$BOOT/vigil" ] || BOOT=/boot
SRC="$BOOT/vigil"
VENV=/opt/vigil/venv
LOG=/var/log/vigil-firstboot.log
exec >>"$LOG" 2>&1
echo "vigil first boot: $(date)"

# A wearable that failed to install looks like any other: put the log where the technician
# sees it, on the FAT partition that every card reader shows.
report() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "vigil first boot: FAILED ($status)"
        cp "$LOG" "$BOOT/vigil-firstboot-FAILED.txt" 2>/dev/null || true
    fi
}
trap report EXIT
rm -f "$BOOT/vigil-firstboot-FAILED.txt"

id vigil >/dev/null 2>&1 || useradd --system --home-dir /var/lib/vigil-device \
    --shell /usr/sbin/nologin vigil
for g in gpio dialout i2c; do getent group "$g" >/dev/null && usermod -aG "$g" vigil; done

# The secrets first, before the slow and fallible install: they must not stay on the FAT
# partition, readable by anyone with the card, whatever happens next.
install -d -m 0700 -o vigil -g vigil /var/lib/vigil-device
install -d -m 0755 /etc/vigil
install -m 0600 -o vigil -g vigil "$SRC/device.key" /var/lib/vigil-device/device.key
install -m 0600 -o vigil -g vigil "$SRC/mqtt-password" /etc/vigil/mqtt-password
for f in device.key mqtt-password; do
    shred -u "$SRC/$f" 2>/dev/null || rm -f "$SRC/$f"
done
install -m 0644 "$SRC/ca.pem" /etc/vigil/ca.pem
install -m 0644 "$SRC/device.toml" /etc/vigil/device.toml
install -m 0644 "$SRC/vigil-device.service" /etc/systemd/system/vigil-device.service
install -m 0644 "$SRC/vigil-fuel-gauge.service" /etc/systemd/system/vigil-fuel-gauge.service
# dtoverlay=disable-bt gives the PL011 UART to the GPS; the service that would attach the
# Bluetooth modem to that UART must not start (Raspberry Pi's UART documentation).
systemctl disable hciuart.service 2>/dev/null || true
install -d /etc/systemd/system.conf.d
printf '[Manager]\nRuntimeWatchdogSec=10s\n' > /etc/systemd/system.conf.d/vigil-watchdog.conf
# The journal lives in RAM only: a seized card keeps no record of what the wearable did or
# when (docs/protocol.md §8). The journal already on the card goes with it.
install -d /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' > /etc/systemd/journald.conf.d/vigil-volatile.conf
rm -rf /var/log/journal
systemctl restart systemd-journald.service 2>/dev/null || true

# --system-site-packages: the GPIO backend lgpio has no wheel for every Python (none for
# 3.13), and Raspberry Pi OS Lite ships it as python3-lgpio; what the wheels install into
# the venv comes first on its path. Debian keeps ensurepip in python3-venv (the Lite images
# have it); without it, make the venv without pip and run pip from its shipped wheel.
if python3 -m venv --clear --system-site-packages "$VENV"; then
    PIP="$VENV/bin/python -m pip"
else
    python3 -m venv --clear --system-site-packages --without-pip "$VENV"
    PIP_WHEEL=""
    for wheel in "$SRC"/wheels/pip-*.whl; do if [ -e "$wheel" ]; then PIP_WHEEL=$wheel; fi; done
    if [ -n "$PIP_WHEEL" ]; then
        PIP="$VENV/bin/python $PIP_WHEEL/pip"
    else
        PIP="python3 -m pip --python $VENV/bin/python"
    fi
fi
$PIP install --no-index --find-links "$SRC/wheels" 'vigil[device]'
$PIP install --no-index --find-links "$SRC/wheels" 'lgpio>=0.2' \
    || echo "vigil first boot: no lgpio wheel for this Python, using the image's python3-lgpio"
if ! "$VENV/bin/python" -c 'import lgpio'; then
    echo "vigil first boot: no lgpio at all (apt install python3-lgpio, or ship its wheel)"
    exit 1
fi
rm -rf "$SRC/wheels"  # installed: give the boot partition its space back

systemctl daemon-reload
systemctl enable vigil-fuel-gauge.service vigil-device.service
if [ "${1:-}" = "--start" ]; then
    systemctl start --no-block vigil-fuel-gauge.service vigil-device.service
fi
echo "vigil first boot: done"
