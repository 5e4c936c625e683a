"""TorchServe's ``config.properties``: the one reader, and the addresses it defines.

    python -m gp_serve.serving.properties [--config FILE] inference|management|metrics [PATH]

prints an address (``PATH`` appended) for shell use. Standard library only. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit


def _default_config() -> Path:
    """The checkout's ``config.properties``, or the copy a non-editable install puts under
    ``<prefix>/share/gp-serve/`` (pyproject.toml's data-files)."""
    checkout = Path(__file__).resolve().parents[1] / "config.properties"
    if checkout.is_file():
        return checkout
    return Path(sys.prefix) / "share" / "gp-serve" / "config.properties"


DEFAULT_CONFIG = _default_config()
APIS = ("inference", "management", "metrics")


class ConfigError(ValueError):
    """The config file is missing or lacks a setting."""


def read_properties(path: str | os.PathLike) -> dict[str, str]:
    """Read a Java ``.properties`` file of ``key=value`` lines (no continuations).

    Raises:
        ConfigError: If the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e
    return parse_properties(text)


def parse_properties(text: str) -> dict[str, str]:
    """The ``key=value`` lines of a ``.properties`` text (``#``/``!`` comments skipped)."""
    properties = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            properties[key.strip()] = value.strip()
    return properties


def write_properties(properties: dict[str, str], path: str | os.PathLike) -> Path:
    """Write ``key=value`` lines (the inverse of `read_properties`)."""
    path = Path(path)
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    return path


def escape(value: str) -> str:
    """``value`` as a ``.properties`` value (backslashes doubled: Java's loader unescapes)."""
    return value.replace("\\", "\\\\")


def allowed_store_urls(model_store: str | os.PathLike) -> str:
    """TorchServe's ``allowed_urls`` admitting only ``.mar`` files directly in ``model_store``
    (an absolute path), as a ``.properties`` value (a Java regex, escaped)."""
    store = os.path.abspath(model_store).rstrip("/")
    return escape(f"file://{re.escape(store)}/[^/]+\\.mar")


def address(properties: dict[str, str], api: str, environ: dict | None = None) -> str:
    """The base URL a local client uses to reach ``api`` (``inference``, ...).

    TorchServe's ``TS_<API>_ADDRESS`` environment variable wins when set (as it does for
    TorchServe with ``enable_envvars_config=true``), then ``<api>_address`` in the
    config. A wildcard bind (``0.0.0.0``, ``::``) is reached on loopback.

    Raises:
        ConfigError: If neither defines the address.
    """
    key = f"{api}_address"
    env = os.environ if environ is None else environ
    url = env.get(f"TS_{key.upper()}") or properties.get(key)
    if not url:
        raise ConfigError(f"expected {key} in the TorchServe config, got none")
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}"


def port(properties: dict[str, str], api: str) -> int:
    """The TCP port of ``api`` in the config (for publishing and exposing it)."""
    return urlsplit(address(properties, api, environ={})).port or 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The address command's options."""
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG),
        help="the TorchServe config (default: the repository's)",
    )
    parser.add_argument("api", choices=APIS)
    parser.add_argument("path", nargs="?", default="", help="appended to the address")


def run(args: argparse.Namespace) -> int:
    """Print the address; 1 (``error: ...`` on stderr) if the config does not define it."""
    try:
        print(address(read_properties(args.config), args.api) + args.path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gp_serve.serving.properties``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "python -m gp_serve.serving.properties", argv)


if __name__ == "__main__":
    sys.exit(main())
