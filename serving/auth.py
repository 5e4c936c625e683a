"""TorchServe's token authorization, as the operator's tools use it: the one reader of its keys.

    gp-serve token [--workdir logs] [inference|management]   # make token

prints a key for shell use. Standard library only. See docs/serving.md ("Trust model").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

KEY_FILE = "key_file.json"
APIS = ("inference", "management")
# Where `make start|serve` run TorchServe (the Makefile's SERVE_LOGS), so where its keys are.
DEFAULT_WORKDIR = "logs"
# TorchServe writes the file a moment after its launcher returns.
WAIT_S = 30.0


class AuthError(RuntimeError):
    """The key file is missing or does not hold the key asked for."""


def enabled(properties: dict[str, str]) -> bool:
    """Whether a TorchServe config (``config.properties``'s keys) turns token authorization
    on (TorchServe 0.12's default: it is on unless ``disable_token_authorization=true``)."""
    return properties.get("disable_token_authorization", "false") != "true"


def key_file(workdir: str | os.PathLike) -> Path:
    """Where TorchServe started in ``workdir`` writes its keys."""
    return Path(workdir) / KEY_FILE


def read_key(workdir: str | os.PathLike, api: str, wait_s: float = 0.0) -> str:
    """The current key of ``api`` (``inference`` or ``management``).

    Args:
        workdir: TorchServe's working directory.
        api: Which key.
        wait_s: Seconds to wait for the file to appear (TorchServe writes it at start).

    Raises:
        AuthError: If the file is missing (after ``wait_s``), unreadable or lacks the key.
    """
    if api not in APIS:
        raise AuthError(f"api: expected one of {list(APIS)}, got {api!r}")
    path = key_file(workdir)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            key = document[api]["key"]
            if isinstance(key, str) and key:
                return key
            raise AuthError(f"{path}: expected a non-empty {api} key, got {key!r}")
        except FileNotFoundError as e:
            if time.monotonic() >= deadline:
                raise AuthError(
                    f"{path}: no key file; TorchServe writes it in its working directory at "
                    "start when token authorization is on (is it running there?)"
                ) from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            if time.monotonic() >= deadline:
                raise AuthError(
                    f"{path}: cannot read the {api} key ({type(e).__name__}: {e})"
                ) from e
        time.sleep(0.1)


def headers(workdir: str | os.PathLike, api: str, wait_s: float = 0.0) -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}`` for ``api`` (see `read_key`)."""
    return {"Authorization": f"Bearer {read_key(workdir, api, wait_s)}"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The token command's options (``gp-serve token``)."""
    parser.add_argument(
        "--workdir",
        default=DEFAULT_WORKDIR,
        help=f"TorchServe's working directory (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "api", nargs="?", choices=APIS, default="inference", help="whose key (default: inference)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the key; 1 (``error: ...`` on stderr) if it cannot be read."""
    try:
        print(read_key(args.workdir, args.api))
    except AuthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gp-serve token``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve token", argv)


if __name__ == "__main__":
    sys.exit(main())
