#!/bin/bash
# Bookworm first boot, started from cmdline.txt (systemd.run=...), as Raspberry Pi
# Imager does it: user, Wi-Fi, then Vigil; finally remove itself from cmdline.txt.
set +e
BOOT=/boot/firmware
[ -f "$BOOT/cmdline.txt" ] || BOOT=/boot
. "$BOOT/vigil/firstboot.env"

if ! id "$VIGIL_USER" >/dev/null 2>&1; then
    useradd -m -G sudo,gpio,dialout,i2c -s /bin/bash "$VIGIL_USER"
fi
if [ -n "$VIGIL_SSH_KEY" ]; then
    install -d -m 0700 -o "$VIGIL_USER" "/home/$VIGIL_USER/.ssh"
    printf '%s\n' "$VIGIL_SSH_KEY" > "/home/$VIGIL_USER/.ssh/authorized_keys"
    chown "$VIGIL_USER" "/home/$VIGIL_USER/.ssh/authorized_keys"
    chmod 0600 "/home/$VIGIL_USER/.ssh/authorized_keys"
    systemctl enable ssh
fi
if [ -n "$VIGIL_WIFI_SSID" ]; then
    CONN=/etc/NetworkManager/system-connections/vigil-wifi.nmconnection
    cat > "$CONN" <<WIFI
[connection]
id=vigil-wifi
type=wifi
autoconnect=true
[wifi]
mode=infrastructure
ssid=$VIGIL_WIFI_SSID
[wifi-security]
key-mgmt=wpa-psk
psk=$VIGIL_WIFI_PSK
[ipv4]
method=auto
[ipv6]
method=auto
WIFI
    chmod 0600 "$CONN"
    rfkill unblock wifi 2>/dev/null
    [ -n "$VIGIL_WIFI_COUNTRY" ] && raspi-config nonint do_wifi_country "$VIGIL_WIFI_COUNTRY"
fi
sh "$BOOT/vigil/install.sh"
rm -f "$BOOT/vigil/firstboot.env"

rm -f "$BOOT/firstrun.sh"
sed -i 's| systemd.run.*||g' "$BOOT/cmdline.txt"
exit 0
