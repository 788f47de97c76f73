"""Read and write files on the FAT boot partition of a disk image, without root (mtools)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from vigil.errors import BadImage, ConfigError

SECTOR = 512
_FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}


def boot_partition_offset(image: Path) -> int:
    """Byte offset of the first FAT partition in the image's MBR partition table."""
    try:
        with image.open("rb") as f:
            mbr = f.read(SECTOR)
    except OSError as exc:
        raise BadImage(f"cannot read {image}: {exc}") from exc
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise BadImage(f"{image} has no MBR partition table: not a Raspberry Pi OS image")
    for number in range(4):
        entry = mbr[446 + 16 * number : 446 + 16 * (number + 1)]
        kind, start = entry[4], struct.unpack_from("<I", entry, 8)[0]
        if kind in _FAT_TYPES and start > 0:
            if start * SECTOR >= image.stat().st_size:
                raise BadImage(f"{image}: partition {number + 1} starts past the end (truncated?)")
            return int(start * SECTOR)
    raise BadImage(f"{image} has no FAT boot partition")


class FatPartition:
    """The boot partition at `offset` in `image`, through mtools (`mtype`, `mcopy`, `mmd`)."""

    def __init__(self, image: Path, offset: int) -> None:
        self._target = f"{image}@@{offset}"
        for tool in ("mtype", "mcopy", "mmd", "mdir"):
            if shutil.which(tool) is None:
                raise ConfigError(f"{tool} is not installed (package mtools)")
        self._mtools("mdir", "-b", "::/")  # fails early if there is no FAT file system

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        result = self._mtools("mtype", "-i", self._target, f"::/{name}", check=False)
        return result.stdout if result.returncode == 0 else None

    def write(self, name: str, data: bytes, source: Path | None = None) -> None:
        """Create or replace `name` with `data` (or with the file `source`)."""
        if source is not None:
            self._mtools("mcopy", "-o", "-i", self._target, str(source), f"::/{name}")
            return
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder) / Path(name).name
            tmp.write_bytes(data)
            self._mtools("mcopy", "-o", "-i", self._target, str(tmp), f"::/{name}")

    def free_bytes(self) -> int | None:
        """Free space on the partition, or None if mtools does not say."""
        listing = self._mtools("mdir", "::/", check=False).stdout.decode(errors="replace")
        found = re.search(r"([\d ]+) bytes free", listing)
        return int(found.group(1).replace(" ", "")) if found else None

    def mkdir(self, name: str) -> None:
        if self._mtools("mdir", "-b", "-i", self._target, f"::/{name}", check=False).returncode:
            self._mtools("mmd", "-i", self._target, f"::/{name}")

    def _mtools(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        if argv[0] == "mdir" and "-i" not in argv:
            argv = (argv[0], "-i", self._target, *argv[1:])
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        result = subprocess.run(  # noqa: S603 - mtools with our own arguments
            list(argv), capture_output=True, check=False, timeout=60, env=env
        )
        if check and result.returncode != 0:
            problem = result.stderr.decode(errors="replace").strip()
            raise BadImage(f"{argv[0]} failed on {self._target}: {problem}")
        return result
