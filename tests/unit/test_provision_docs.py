"""Every `vigil-provision` command the guides show is one the CLI accepts as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vigil.provision.cli import EPILOG, build_parser

ROOT = Path(__file__).resolve().parents[2]
_CODE = re.compile(r"```(?:sh|console)?\n(.*?)```", re.DOTALL)


def shown_commands(text: str) -> list[str]:
    """The `vigil-provision ...` lines of `text`'s code blocks (and the epilog)."""
    blocks = _CODE.findall(text) or [text]
    joined = "\n".join(b.replace("\\\n", " ") for b in blocks)
    commands = []
    for line in joined.splitlines():
        at = line.find("vigil-provision ")
        if at >= 0:
            commands.append(line[at:].split("  #")[0].replace("[", "").replace("]", ""))
    return commands


GUIDES = {
    "docs/technician.md": (ROOT / "docs" / "technician.md").read_text(),
    "README.md": (ROOT / "README.md").read_text(),
    "--help epilog": EPILOG,
}
SHOWN = [(where, cmd) for where, text in GUIDES.items() for cmd in shown_commands(text)]


def test_the_guides_show_every_subcommand() -> None:
    guide = {shlex.split(cmd)[1] for where, cmd in SHOWN if where == "docs/technician.md"}
    assert guide >= {"broker-certs", "broker-config", "device", "sd-image", "revoke"}
    epilog = {shlex.split(cmd)[1] for where, cmd in SHOWN if where == "--help epilog"}
    assert epilog == guide


@pytest.mark.parametrize(("where", "command"), SHOWN)
def test_a_shown_command_parses(where: str, command: str) -> None:
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv)  # a usage error exits (2) and fails the test
    assert args.command == argv[0], where
