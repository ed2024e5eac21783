"""tdxcheck's version and the one envelope every ``--json`` result (and every saved coverage
baseline) carries, so that tools read them without guessing:

    {"schema": "tdxcheck/1", "tool": "tdxcheck", "version": "0.2.0", "command": "check",
     "config": {"name": "default", ...every key of the configuration...} | null,
     "host": "any" | "kvm" | "<scenario file>" | null, ...the command's own fields}

``schema`` changes only when a field changes meaning or goes away; new fields may appear.
Imports nothing from the rest of the checker (every layer may use it).
"""

from __future__ import annotations

from typing import Any

JSON_SCHEMA = "tdxcheck/1"
_HEAD = ("schema", "tool", "version", "command", "config", "host")


def version() -> str:
    """The installed distribution's version (pyproject.toml), or ``unknown``."""
    from importlib import metadata

    try:
        return metadata.version("tdxcheck")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def envelope(command: str, result: dict[str, Any], *, config: dict[str, Any] | None = None,
             host: str | None = None) -> dict[str, Any]:
    """``result`` under the common head (its own ``schema``/``tool``/``config``/``host``
    keys, if any, give way to the head's)."""
    head: dict[str, Any] = {"schema": JSON_SCHEMA, "tool": "tdxcheck", "version": version(),
                            "command": command, "config": config, "host": host}
    return {**head, **{k: v for k, v in result.items() if k not in _HEAD}}


def config_json(config: Any) -> dict[str, Any] | None:
    """A configuration as JSON: its name and every value (platform keys, object counts,
    GPAs).  Takes the any host's ``Config``, a scenario's ``Config`` (a ``Platform``) or a
    kvm ``KvmConfig``."""
    if config is None:
        return None
    from dataclasses import asdict, fields, is_dataclass

    out: dict[str, Any] = {"name": getattr(config, "name", "scenario")}
    plat = getattr(config, "platform", config)
    if is_dataclass(plat):
        out.update(asdict(plat))  # type: ignore[arg-type]
    if plat is not config and is_dataclass(config):
        for f in fields(config):
            if f.name in ("name", "platform"):
                continue
            v = getattr(config, f.name)
            out[f.name] = [hex(g) for g in v] if f.name == "gpas" else v
    return out
