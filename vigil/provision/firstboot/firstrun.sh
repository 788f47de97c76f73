#!/bin/bash
# Bookworm first boot, started from cmdline.txt (systemd.run=...) the way Raspberry Pi
# Imager does it: admin login, SSH key, Wi-Fi, then Vigil; finally it removes itself from
# cmdline.txt and systemd reboots (systemd.run_success_action=reboot). Like Imager, it
# uses Raspberry Pi OS's own helpers (userconf, imager_custom) when the image has them.
set +e
BOOT=/boot/firmware
[ -f "$BOOT/cmdline.txt" ] || BOOT=/boot
# shellcheck source=/dev/null  # written by vigil-provision sd-image
. "$BOOT/vigil/firstboot.env"
USERCONF=/usr/lib/userconf-pi/userconf
CUSTOM=/usr/lib/raspberrypi-sys-mods/imager_custom

# The admin login: rename the image's first user (uid 1000), which also cancels the
# interactive "create a user" wizard. No password (locked): SSH key only, or no login.
if [ -x "$USERCONF" ]; then
    "$USERCONF" "$VIGIL_USER" ''
elif ! id "$VIGIL_USER" >/dev/null 2>&1; then
    useradd -m -G sudo -s /bin/bash "$VIGIL_USER"
fi
usermod -L "$VIGIL_USER"
HOME_DIR=$(getent passwd "$VIGIL_USER" | cut -d: -f6)

if [ -n "$VIGIL_SSH_KEY" ]; then
    install -d -m 0700 -o "$VIGIL_USER" -g "$VIGIL_USER" "$HOME_DIR/.ssh"
    printf '%s\n' "$VIGIL_SSH_KEY" > "$HOME_DIR/.ssh/authorized_keys"
    chown "$VIGIL_USER:$VIGIL_USER" "$HOME_DIR/.ssh/authorized_keys"
    chmod 0600 "$HOME_DIR/.ssh/authorized_keys"
    install -d /etc/ssh/sshd_config.d
    printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\n' \
        > /etc/ssh/sshd_config.d/vigil.conf
    # A key-only login has no password to give sudo.
    printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$VIGIL_USER" > "/etc/sudoers.d/010_$VIGIL_USER-nopasswd"
    chmod 0440 "/etc/sudoers.d/010_$VIGIL_USER-nopasswd"
    systemctl enable ssh
fi

if [ -n "$VIGIL_WIFI_SSID" ] && [ -x "$CUSTOM" ]; then
    "$CUSTOM" set_wlan "$VIGIL_WIFI_SSID" "$VIGIL_WIFI_PSK" "$VIGIL_WIFI_COUNTRY"
elif [ -n "$VIGIL_WIFI_SSID" ]; then
    CONN=/etc/NetworkManager/system-connections/vigil-wifi.nmconnection
    {
        printf '[connection]\nid=vigil-wifi\ntype=wifi\nautoconnect=true\n'
        printf '[wifi]\nmode=infrastructure\nssid=%s\n' "$VIGIL_WIFI_SSID"
        [ -n "$VIGIL_WIFI_PSK" ] && printf '[wifi-security]\nkey-mgmt=wpa-psk\npsk=%s\n' \
            "$VIGIL_WIFI_PSK"
        printf '[ipv4]\nmethod=auto\n[ipv6]\nmethod=auto\n'
    } > "$CONN"
    chmod 0600 "$CONN"  # NetworkManager ignores connection files others can read
    raspi-config nonint do_wifi_country "$VIGIL_WIFI_COUNTRY"
    rfkill unblock wifi
    for f in /var/lib/systemd/rfkill/*:wlan; do [ -e "$f" ] && echo 0 > "$f"; done
fi

sh "$BOOT/vigil/install.sh"

# The Wi-Fi key must not stay on the FAT partition either.
shred -u "$BOOT/vigil/firstboot.env" 2>/dev/null || rm -f "$BOOT/vigil/firstboot.env"
rm -f "$BOOT/firstrun.sh"
sed -i 's| systemd.run.*||g' "$BOOT/cmdline.txt"
exit 0
