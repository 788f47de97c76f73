"""`make pi-proof`: first boot on an arm64 Debian userland under qemu-user, per release.

    python -m tests.pi_proof [--release bookworm] [--release trixie] [--keep]

For each release: (1) the cached arm64 root, (2) a provisioned card's real first boot in
it, (3) what that left checked, (4) the installed daemon, emulated, delivering an alarm to
the host's hub and getting its receipt, (5) the device's unit tests on emulated aarch64.
Prints a table (release, step, result, time) and exits 1 if any step failed. Needs root.
See docs/pi-proof.md for what this covers and what only a real Pi can.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.pi_proof.alarm import deliver_alarm
from tests.pi_proof.firstboot import (
    boot,
    check_admin,
    check_boot_partition,
    check_installed,
    copy_boot_partition,
    stand_in_lgpio,
    write_card,
)
from tests.pi_proof.roots import RELEASES, Chroot, Release, root_tar, unpack
from tests.pi_proof.unit_tests import REPO, download_test_tools, run_unit_tests
from tests.support.deployment import deploy


@dataclass
class Row:
    release: str
    step: str
    result: str
    seconds: float
    detail: str = ""


@dataclass
class Proof:
    """One release's run: steps in order; after a failure the rest are not run."""

    release: Release
    work: Path
    rows: list[Row] = field(default_factory=list)
    chroot: Chroot | None = None

    def step(self, name: str, action: Callable[[], str]) -> None:
        if any(r.result != "PASS" for r in self.rows):
            self.rows.append(Row(self.release.name, name, "not run", 0.0))
            return
        start = time.monotonic()
        try:
            detail, result = action(), "PASS"
        except Exception as exc:  # any failure is this step's result
            detail, result = f"{type(exc).__name__}: {exc}", "FAIL"
        self.rows.append(Row(self.release.name, name, result, time.monotonic() - start, detail))
        print(f"{self.release.name:9} {name:34} {result:7} {detail.splitlines()[0][:90]}",
              flush=True)  # fmt: skip


def prove(release: Release, work: Path) -> list[Row]:
    proof = Proof(release, work)
    work.mkdir(parents=True)
    deployed = deploy(work / "site")
    wheels, tools = work / "pi-wheels", work / "test-wheels"

    def root() -> str:
        tar, built = root_tar(release, work / "mmdebstrap.log")
        proof.chroot = Chroot(unpack(tar, work / "root"))
        python = proof.chroot.run("python3", "-c", "import platform, sys; "
                                  "print(platform.machine(), sys.version.split()[0])")  # fmt: skip
        return f"{'built' if built else 'cached'} {tar.name}: {python.stdout.strip()}"

    def first_boot() -> str:
        assert proof.chroot is not None
        subprocess.run(["make", "--no-print-directory", "-s", "wheels-pi",
                        f"PI_PYTHON={release.python}", f"PI_WHEELS={wheels}"],
                       cwd=REPO, check=True, capture_output=True, timeout=600)  # fmt: skip
        copy_boot_partition(write_card(work, deployed, release, wheels), proof.chroot)
        stand_in = stand_in_lgpio(proof.chroot, wheels)
        boot(proof.chroot, release)
        log = proof.chroot.path("/var/log/vigil-firstboot.log").read_text()
        if "vigil first boot: done" not in log:
            raise RuntimeError(f"install.sh did not finish:\n{log[-2000:]}")
        ignored = log.count("Running in chroot, ignoring")
        lgpio = "stand-in python3-lgpio" if stand_in else "lgpio wheel"
        return f"install.sh done; {lgpio}; {ignored} systemctl requests a chroot ignores"

    def installed() -> str:
        assert proof.chroot is not None
        problems = check_boot_partition(proof.chroot, release) + check_installed(proof.chroot)
        problems += check_admin(proof.chroot, release)
        if problems:
            raise RuntimeError("; ".join(problems))
        return "user, aarch64 venv, 0600 secrets, units verified and enabled, check OK"

    def alarm() -> str:
        assert proof.chroot is not None
        return str(deliver_alarm(work, deployed, proof.chroot, f"pi-proof {release.name}"))

    def unit() -> str:
        assert proof.chroot is not None
        download_test_tools(release, tools)
        return run_unit_tests(proof.chroot, tools)

    proof.step("1 arm64 root", root)
    proof.step("2 first boot (" + ("cloud-init" if release.cloud_init else "firstrun.sh") + ")",
               first_boot)  # fmt: skip
    proof.step("3 installed state", installed)
    proof.step("4 alarm -> hub -> receipt", alarm)
    proof.step("5 device unit tests (aarch64)", unit)
    return proof.rows


def table(rows: list[Row]) -> str:
    lines = [f"{'release':9} | {'step':34} | {'result':7} | {'time':>7} | detail"]
    lines.append("-" * 9 + "-+-" + "-" * 34 + "-+-" + "-" * 7 + "-+-" + "-" * 7 + "-+-" + "-" * 30)
    for r in rows:
        first = r.detail.splitlines()[0] if r.detail else ""
        lines.append(f"{r.release:9} | {r.step:34} | {r.result:7} | {r.seconds:6.1f}s | {first}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.pi_proof",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--release", action="append", choices=sorted(RELEASES))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (roots, logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vigil-pi-proof-", dir="/var/tmp"))
    started, rows = time.monotonic(), []
    try:
        for name in args.release or ["bookworm", "trixie"]:
            rows += prove(RELEASES[name], work / name)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + table(rows))
    for r in rows:
        if r.result == "FAIL":
            print(f"\n{r.release} {r.step}:\n{r.detail}")
    total = time.monotonic() - started
    print(f"\npi-proof: {sum(r.result == 'PASS' for r in rows)} of {len(rows)} steps passed "
          f"in {total / 60:.1f} min" + (f"; work folder {work}" if args.keep else ""))  # fmt: skip
    return 0 if all(r.result == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
