"""The storage layout KServe's TorchServe runtime mounts at ``/mnt/models``.

    gp-serve kserve-layout --mar model_store/gp.mar --out DIR   # make kserve-layout

writes ``DIR/config/config.properties`` (the repository's, with `POD_SETTINGS`) and
``DIR/model-store/gp.mar``. See docs/kserve.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from gp_serve.serving.properties import (
    DEFAULT_CONFIG,
    allowed_store_urls,
    read_properties,
    write_properties,
)

MOUNT = "/mnt/models"
CONFIG_PATH = "config/config.properties"
STORE_PATH = "model-store"
# What differs in a pod from config.properties; docs/kserve.md gives each setting's reason.
POD_SETTINGS = {
    # KServe's http1 port: TorchServe is the kserve-container and answers v1 and v2 there.
    "inference_address": "http://0.0.0.0:8080",
    # Management (REST and gRPC) and gRPC inference on the pod's loopback only.
    "management_address": "http://127.0.0.1:8085",
    "grpc_management_address": "127.0.0.1",
    "grpc_inference_address": "127.0.0.1",
    # Prometheus scrapes the pod at its IP; metrics only read.
    "metrics_address": "http://0.0.0.0:8082",
    # Probes and clients behind KServe's ingress cannot carry TorchServe's per-pod keys.
    "disable_token_authorization": "true",
    # The pod serves its layout's models only: no registering, only that store's .mar files.
    "enable_model_api": "false",
    "model_store": f"{MOUNT}/{STORE_PATH}",
    "allowed_urls": allowed_store_urls(f"{MOUNT}/{STORE_PATH}"),
    "load_models": "all",
    # TS_<KEY> environment variables (the ServingRuntime's env) override any key.
    "enable_envvars_config": "true",
}
# As in the image's config (docker/container-config.sh): on SIGTERM, TorchServe's shutdown hook
# logs the models' unregistering before log4j stops.
SHUTDOWN_VMARG = "-Dlog4j2.shutdownHookEnabled=false"


def pod_config(source: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """The layout's ``config.properties``: ``source`` with `POD_SETTINGS`."""
    properties = {
        key: value for key, value in read_properties(source).items() if key not in POD_SETTINGS
    }
    properties.update(POD_SETTINGS)
    vmargs = properties.get("vmargs", "")
    properties["vmargs"] = f"{vmargs} {SHUTDOWN_VMARG}".strip()
    return properties


def write_layout(mar: Path, out: Path, source: Path = DEFAULT_CONFIG) -> Path:
    """Write the layout to ``out`` (created; an existing layout there is replaced).

    Args:
        mar: The model archive (``model_store/gp.mar``, `serving.archive`).
        out: The layout's root (what the InferenceService's ``storageUri`` holds).
        source: The TorchServe config it derives from.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: If ``mar`` does not exist.
    """
    if not mar.is_file():
        raise FileNotFoundError(f"{mar}: no model archive (run `make archive`)")
    (out / STORE_PATH).mkdir(parents=True, exist_ok=True)
    (out / CONFIG_PATH).parent.mkdir(parents=True, exist_ok=True)
    for stale in (out / STORE_PATH).glob("*.mar"):
        stale.unlink()
    shutil.copyfile(mar, out / STORE_PATH / mar.name)
    write_properties(pod_config(source), out / CONFIG_PATH)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The kserve-layout command's options (``gp-serve kserve-layout``)."""
    parser.add_argument(
        "--mar",
        type=Path,
        default=Path("model_store/gp.mar"),
        help="the model archive (default: model_store/gp.mar)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the layout's root")


def run(args: argparse.Namespace) -> int:
    """Write the layout and list its files; 2 (``error: ...``) if the archive is missing."""
    try:
        out = write_layout(args.mar, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gp-serve kserve-layout``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve kserve-layout", argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
