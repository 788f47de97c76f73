"""`vigil-provision sd-image` on disk images built like Raspberry Pi OS's: MBR, FAT32 boot
partition, a Linux root partition. Every written file is read back with mtools."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from vigil.errors import BadImage
from vigil.provision.cli import main
from vigil.provision.fat import FatPartition, boot_partition_offset
from vigil.provision.sdimage import SYSTEMD_RUN
from vigil.wire import DeviceId, DeviceKeys

pytestmark = pytest.mark.integration

BOOT_START = 8192  # sectors, as in Raspberry Pi OS images
BOOT_SECTORS = 131072  # 64 MiB
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 rootwait\n"


def build_image(tmp_path: Path, *, trixie: bool) -> Path:
    image = tmp_path / "raspios.img"
    with image.open("wb") as f:
        f.truncate((BOOT_START + BOOT_SECTORS + 16384) * 512)
    table = f"label: dos\nstart={BOOT_START}, size={BOOT_SECTORS}, type=c\ntype=83\n"
    sfdisk, mkfs_vfat = require_tool("sfdisk"), require_tool("mkfs.vfat")  # fdisk, dosfstools
    subprocess.run([sfdisk, "--quiet", str(image)], input=table, text=True, check=True)
    subprocess.run([mkfs_vfat, "-F", "32", "--offset", str(BOOT_START), str(image),
                    str(BOOT_SECTORS // 2)], check=True, capture_output=True)  # fmt: skip
    fat = FatPartition(image, BOOT_START * 512)
    fat.write("config.txt", b"# stock\n[all]\narm_64bit=1\n")
    fat.write("cmdline.txt", CMDLINE.encode())
    if trixie:
        for name in ("user-data", "meta-data", "network-config"):
            fat.write(name, b"# stock cloud-init file\n")
    return image


def device_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "wearable"
    folder.mkdir()
    DeviceKeys.generate().save(folder / "device.key")
    (folder / "device.toml").write_text(f'[device]\nid = "{DeviceId.generate().hex}"\n')
    (folder / "mqtt-password").write_text("secret\n")
    (folder / "mqtt-password").chmod(0o600)
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir(exist_ok=True)
    for name in ("vigil-0.1.0-py3-none-any.whl", "paho_mqtt-2.1.0-py3-none-any.whl"):
        (folder / name).write_bytes(b"PK\x03\x04 wheel")
    return folder


def sd_image(image: Path, device: Path, wheel_dir: Path, *extra: str) -> int:
    return main(["sd-image", "--image", str(image), "--device", str(device),
                 "--wheels", str(wheel_dir), *extra])  # fmt: skip


def read(image: Path, name: str) -> str:
    data = FatPartition(image, boot_partition_offset(image)).read(name)
    assert data is not None, f"{name} is not on the boot partition"
    return data.decode()


def test_bookworm_image_gets_firstrun_and_everything_vigil_needs(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=False), device_folder(tmp_path)
    psk = tmp_path / "psk"
    psk.write_text("correct horse\n")
    assert sd_image(image, device, wheels(tmp_path), "--wifi-ssid", "Office",
                    "--wifi-psk-file", str(psk)) == 0  # fmt: skip
    cmdline = read(image, "cmdline.txt")
    assert "console=serial0" not in cmdline
    assert cmdline.strip().endswith(SYSTEMD_RUN.strip())
    assert "root=PARTUUID=1234-02" in cmdline
    assert "enable_uart=1" in read(image, "config.txt")
    assert "arm_64bit=1" in read(image, "config.txt")
    assert 'sh "$BOOT/vigil/install.sh"' in read(image, "firstrun.sh")
    env = read(image, "vigil/firstboot.env")
    assert "VIGIL_WIFI_SSID=Office" in env
    assert re.search(r"^VIGIL_WIFI_PSK=[0-9a-f]{64}$", env, flags=re.M)  # the derived key
    assert b"correct horse" not in image.read_bytes()
    for name in ("device.toml", "ca.pem", "install.sh", "vigil-device.service"):
        assert read(image, f"vigil/{name}")
    assert read(image, "vigil/device.key") == (device / "device.key").read_text()
    assert read(image, "vigil/wheels/vigil-0.1.0-py3-none-any.whl")
    assert "shred -u" in read(image, "vigil/install.sh")
    # The journal stays in RAM: nothing the wearable logged survives on the card.
    assert "[Journal]\\nStorage=volatile" in read(image, "vigil/install.sh")


def test_trixie_image_gets_cloud_init_files(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=True), device_folder(tmp_path)
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA tech@laptop\n")
    assert sd_image(image, device, wheels(tmp_path), "--ssh-key-file", str(key)) == 0
    user_data = read(image, "user-data")
    assert user_data.startswith("#cloud-config\n")
    assert "ssh-ed25519 AAAA tech@laptop" in user_data
    assert "/boot/firmware/vigil/install.sh" in user_data
    assert read(image, "meta-data").startswith("instance-id: vigil-")
    assert read(image, "network-config") == "# stock cloud-init file\n"  # no Wi-Fi: untouched
    assert "systemd.run" not in read(image, "cmdline.txt")
    assert "console=serial0" not in read(image, "cmdline.txt")


def test_running_twice_changes_nothing_more(tmp_path: Path) -> None:
    image, device = build_image(tmp_path, trixie=False), device_folder(tmp_path)
    wheel_dir = wheels(tmp_path)
    assert sd_image(image, device, wheel_dir) == 0
    first = (read(image, "config.txt"), read(image, "cmdline.txt"))
    assert sd_image(image, device, wheel_dir) == 0
    assert (read(image, "config.txt"), read(image, "cmdline.txt")) == first


@pytest.mark.parametrize("content", [b"", b"not an image at all" * 100, bytes(4096)])
def test_not_an_image_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "bad.img"
    image.write_bytes(content)
    with pytest.raises(BadImage):
        boot_partition_offset(image)
    assert sd_image(image, device_folder(tmp_path), wheels(tmp_path)) == 1


def test_missing_device_files_or_wheels_are_refused_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, device, wheel_dir = (
        build_image(tmp_path, trixie=False),
        device_folder(tmp_path),
        wheels(tmp_path),
    )
    before = image.read_bytes()
    (device / "mqtt-password").unlink()
    assert sd_image(image, device, wheel_dir) == 1
    assert "mqtt-password is missing" in capsys.readouterr().err
    (device / "mqtt-password").write_text("x")
    (device / "mqtt-password").chmod(0o644)
    assert sd_image(image, device, wheel_dir) == 1
    assert "chmod 600" in capsys.readouterr().err
    (device / "mqtt-password").chmod(0o600)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    assert sd_image(image, device, empty) == 1
    assert image.read_bytes() == before
