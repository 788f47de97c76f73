"""Step 5: the wearable's unit tests (device and wire format) under the emulated aarch64 Python,
against the Vigil that first boot installed into /opt/vigil/venv (not a source checkout)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.pi_proof.roots import Chroot, Release

REPO = Path(__file__).resolve().parents[2]
TESTS = ("tests/unit/test_device_*.py", "tests/unit/test_wire_*.py")
# Only the tests, their support and data: `vigil` itself must come from the installed wheel.
# test_device_cli reads the demo's sources: its --help names the config the demo writes.
SUPPORT = ("pyproject.toml", "tests/__init__.py", "tests/conftest.py", "tests/unit/__init__.py",
           "tests/unit/conftest.py", "demo/*.py")  # fmt: skip
DATA = "tests/data"
INSIDE = "/root/vigil-tests"
# tests/conftest.py imports psycopg (its PostgreSQL fixture), hence psycopg with its libpq.
# Emulated aarch64 on a loaded machine is many times slower than any real CPU: hypothesis's
# per-example deadline and its "too slow" health checks measure that, not the code, so they
# are off for this run (`-p emulated`); every assertion stays.
EMULATED_PLUGIN = """from hypothesis import HealthCheck, settings
settings.register_profile("emulated", deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile("emulated")
"""
TOOLS = ("pytest", "pytest-timeout", "pytest-mock", "hypothesis", "psycopg[binary]")


def download_test_tools(release: Release, dest: Path) -> None:
    """aarch64 wheels of the test tools for the release's Python (make wheels-pi-test)."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "wheels-pi-test", f"PI_PYTHON={release.python}",
         f"PI_WHEELS={dest}"], cwd=REPO, check=True, capture_output=True, timeout=600,
    )  # fmt: skip


def run_unit_tests(chroot: Chroot, wheels: Path) -> str:
    """Install the test tools, copy the tests in, run them; return pytest's closing line."""
    home = chroot.path(INSIDE)
    if home.exists():
        shutil.rmtree(home)
    for pattern in (*SUPPORT, "tests/support/*.py", *TESTS):
        for source in REPO.glob(pattern):
            target = home / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    shutil.copytree(REPO / DATA, home / DATA)
    (home / "emulated.py").write_text(EMULATED_PLUGIN)
    shutil.copytree(wheels, home / "wheels")
    python = "/opt/vigil/venv/bin/python"
    chroot.run(python, "-m", "pip", "install", "--quiet", "--no-index",
               "--find-links", f"{INSIDE}/wheels", *TOOLS)  # fmt: skip
    tests = sorted(str(p.relative_to(home)) for t in TESTS for p in home.glob(t))
    result = chroot.run(
        "sh", "-c", f'cd {INSIDE} && exec "$0" "$@"', python, "-m", "pytest", "-q",
        "-p", "no:cacheprovider", "-p", "emulated", *tests,
        timeout=1800, check=False,
    )  # fmt: skip
    lines = [ln for ln in result.stdout.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    closing = lines[-1].strip("= ") if lines else "no pytest summary"
    if result.returncode != 0:
        raise RuntimeError(f"{closing}\n{result.stdout[-4000:]}")
    return closing
