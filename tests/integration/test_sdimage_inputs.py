"""`vigil-provision sd-image` with hostile or impossible inputs: a clear error, and the
image is left exactly as it was. Also every file first boot needs is read back."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML, what cloud-init parses network-config with

from tests.integration.test_sdimage import (
    BOOT_START,
    build_image,
    device_folder,
    pytestmark,  # noqa: F401 - the same markers and tool check
    read,
    sd_image,
    wheels,
)
from vigil.errors import BadConfigValue
from vigil.provision.fat import FatPartition
from vigil.provision.sdimage import FirstBoot

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_first_boot_needs_reads_back_intact(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=True), device_folder(tmp_path)
    psk = tmp_path / "psk"
    psk.write_text("correct horse battery\n")
    assert sd_image(image, device, wheels(tmp_path), "--wifi-ssid", 'Caf\u00e9 "5G"',
                    "--wifi-psk-file", str(psk), "--wifi-country", "MX") == 0  # fmt: skip
    for name in ("device.toml", "device.key", "mqtt-password", "ca.pem"):
        assert read(image, f"vigil/{name}") == (device / name).read_text()
    for unit in ("vigil-device.service", "vigil-fuel-gauge.service"):
        assert read(image, f"vigil/{unit}") == (ROOT / "systemd" / unit).read_text()
    assert (
        read(image, "vigil/install.sh")
        == (ROOT / "vigil/provision/firstboot/install.sh").read_text()
    )
    network = json.loads(read(image, "network-config"))["network"]  # JSON is valid YAML
    wlan = network["wifis"]["wlan0"]
    wpa_key = hashlib.pbkdf2_hmac("sha1", b"correct horse battery", 'Caf\u00e9 "5G"'.encode(),
                                  4096, 32).hex()  # fmt: skip
    assert wlan["access-points"] == {'Caf\u00e9 "5G"': {"password": wpa_key}}
    assert wlan["regulatory-domain"] == "MX"
    assert b"correct horse" not in image.read_bytes()  # only the derived key is on the card
    user_data = json.loads(read(image, "user-data").removeprefix("#cloud-config\n"))
    assert user_data["user"]["lock_passwd"] is True
    assert user_data["user"]["sudo"] is None  # no login, so no sudo rule
    assert user_data["ssh_pwauth"] is False
    assert user_data["runcmd"] == [["sh", "/boot/firmware/vigil/install.sh", "--start"]]
    assert read(image, "cmdline.txt").split()[-1] == f"ds=nocloud;i={instance(image)}"


def instance(image: Path) -> str:
    return read(image, "meta-data").removeprefix("instance-id: ").strip()


def test_wpa_key_is_the_ieee_802_11i_derivation(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=False), device_folder(tmp_path)
    psk = tmp_path / "psk"
    psk.write_text("password\n")
    assert sd_image(image, device, wheels(tmp_path), "--wifi-ssid", "IEEE",
                    "--wifi-psk-file", str(psk)) == 0  # fmt: skip
    # The test vector of IEEE 802.11i annex H.4 (passphrase "password", SSID "IEEE").
    key = "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    assert f"VIGIL_WIFI_PSK={key}\n" in read(image, "vigil/firstboot.env")


def test_open_network_and_ssh_key_on_cloud_init(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=True), device_folder(tmp_path)
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3Nza tech@laptop\n")
    assert sd_image(image, device, wheels(tmp_path), "--wifi-ssid", "Cafe",
                    "--ssh-key-file", str(key)) == 0  # fmt: skip
    point = json.loads(read(image, "network-config"))["network"]["wifis"]["wlan0"]
    assert point["access-points"] == {"Cafe": {"auth": {"key-management": "none"}}}
    user_data = json.loads(read(image, "user-data").removeprefix("#cloud-config\n"))
    assert user_data["user"]["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3Nza tech@laptop"]
    assert user_data["user"]["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user_data["runcmd"][0] == ["systemctl", "enable", "--now", "ssh"]
    assert "enable_ssh" not in user_data  # not a cloud-init key: Imager dropped it
    assert sd_image(image, device, wheels(tmp_path)) == 0  # again: still one ds= word
    assert read(image, "cmdline.txt").count("ds=nocloud") == 1


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--wifi-ssid", "Office\n[wifi-security]"], "--wifi-ssid"),
        (["--wifi-ssid", "x" * 33], "--wifi-ssid"),
        (["--wifi-ssid", "Office", "--wifi-psk-file", "PSK:short"], "--wifi-psk-file"),
        (["--wifi-ssid", "Office", "--wifi-psk-file", "PSK:pass\nphrase1"], "--wifi-psk-file"),
        (["--wifi-psk-file", "PSK:no ssid given"], "needs --wifi-ssid"),
        (["--wifi-country", "mx"], "--wifi-country"),
        (["--user", "root"], "--user"),
        (["--user", "admin; reboot"], "--user"),
        (["--ssh-key-file", "KEY:ssh-ed25519 AAAA a\nssh-rsa BBBB b"], "--ssh-key-file"),
        (["--ssh-key-file", "KEY:-----BEGIN OPENSSH PRIVATE KEY-----"], "--ssh-key-file"),
    ],
)
def test_hostile_first_boot_values_are_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], complaint: str
) -> None:
    image, device = build_image(tmp_path, trixie=False), device_folder(tmp_path)
    args = []
    for flag in flags:  # PSK:/KEY: values go through a file, as the technician's would
        holder = tmp_path / flag[:3].lower()
        if flag.startswith(("PSK:", "KEY:")):
            holder.write_text(flag[4:])
        args.append(str(holder) if flag.startswith(("PSK:", "KEY:")) else flag)
    before = image.read_bytes()
    assert sd_image(image, device, wheels(tmp_path), *args) == 1
    assert complaint in capsys.readouterr().err
    assert image.read_bytes() == before


def test_first_boot_values_are_checked_wherever_they_come_from() -> None:
    with pytest.raises(BadConfigValue):
        FirstBoot(wifi_ssid="ok", wifi_psk="x" * 64)  # 64 characters must be hex
    assert FirstBoot(wifi_ssid="ok", wifi_psk="ab" * 32).wifi_psk == "ab" * 32
    assert FirstBoot(wifi_ssid="open cafe").wifi_psk is None


def test_wheels_that_do_not_fit_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, device, wheel_dir = (
        build_image(tmp_path, trixie=False),
        device_folder(tmp_path),
        wheels(tmp_path),
    )
    with (wheel_dir / "huge-1.0-py3-none-any.whl").open("wb") as f:
        f.truncate(80 << 20)  # sparse: bigger than the 64 MiB partition, costs no disk
    before = image.read_bytes()
    assert sd_image(image, device, wheel_dir) == 1
    assert "KiB free" in capsys.readouterr().err
    assert image.read_bytes() == before


def test_an_image_without_a_fat_partition_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "linux-only.img"
    with image.open("wb") as f:
        f.truncate(16 << 20)
    table = "label: dos\nstart=2048, type=83\n"
    subprocess.run(["sfdisk", "--quiet", str(image)], input=table, text=True, check=True)
    assert sd_image(image, device_folder(tmp_path), wheels(tmp_path)) == 1
    assert "no FAT boot partition" in capsys.readouterr().err


def test_a_fat_partition_entry_without_a_file_system_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "unformatted.img"
    with image.open("wb") as f:
        f.truncate((BOOT_START + 65536) * 512)
    table = f"label: dos\nstart={BOOT_START}, type=c\n"
    subprocess.run(["sfdisk", "--quiet", str(image)], input=table, text=True, check=True)
    before = image.read_bytes()
    assert sd_image(image, device_folder(tmp_path), wheels(tmp_path)) == 1
    assert "mdir failed" in capsys.readouterr().err
    assert image.read_bytes() == before


def test_a_truncated_image_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = build_image(tmp_path, trixie=False)
    with image.open("r+b") as f:
        f.truncate(BOOT_START * 512)  # the card copy stopped before the boot partition
    assert sd_image(image, device_folder(tmp_path), wheels(tmp_path)) == 1
    assert "past the end" in capsys.readouterr().err


def test_free_space_is_read_from_the_partition(tmp_path: Path) -> None:
    image = build_image(tmp_path, trixie=False)
    free = FatPartition(image, BOOT_START * 512).free_bytes()
    assert free is not None
    assert 50 << 20 < free < 64 << 20


@pytest.mark.parametrize(("shell", "script"), [("bash", "firstrun.sh"), ("sh", "install.sh")])
def test_first_boot_scripts_pass_shellcheck(shell: str, script: str) -> None:
    # They run once, as root, on a device nobody is watching: no second chance to debug.
    path = ROOT / "vigil/provision/firstboot" / script
    shellcheck = Path(sys.executable).parent / "shellcheck"  # from the dev extra
    result = subprocess.run([str(shellcheck), "-s", shell, str(path)], capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "shred -u" in path.read_text()  # secrets and the Wi-Fi key leave the FAT partition


HOSTILE_SSIDS = ["caf\u00e9 \U0001f600", 'a "quoted": #not-a-comment', "- *alias &anchor !tag",
                 "back\\slash %40 @x", "{flow: [seq]}", "  spaced  "]  # fmt: skip


def test_ssids_survive_cloud_inits_yaml_reader(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=True), device_folder(tmp_path)
    psk = tmp_path / "psk"
    psk.write_text("correct horse battery\n")
    for ssid in HOSTILE_SSIDS:
        assert sd_image(image, device, wheels(tmp_path), "--wifi-ssid", ssid,
                        "--wifi-psk-file", str(psk)) == 0  # fmt: skip
        network = yaml.safe_load(read(image, "network-config"))["network"]
        assert list(network["wifis"]["wlan0"]["access-points"]) == [ssid]
        user_data = yaml.safe_load(read(image, "user-data"))
        assert user_data["runcmd"][-1][-1] == "--start"
