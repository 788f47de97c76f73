"""Write the small TOML files Vigil's configs are (sections of scalars)."""

from __future__ import annotations

import json
from typing import Any


def _toml_value(value: Any) -> str:
    """One TOML scalar: booleans, numbers and (escaped) strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)

    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def render_toml(doc: dict[str, dict[str, Any]]) -> str:
    """Render a two-level TOML document (sections of scalars)."""
    lines: list[str] = []
    for section, values in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(v)}" for key, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
