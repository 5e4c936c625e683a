"""The storage layout KServe's TorchServe runtime mounts at ``/mnt/models``.

    gp-serve kserve-layout --mar model_store/gp.mar --out DIR   # make kserve-layout

writes ``DIR/config/config.properties`` and ``DIR/model-store/gp.mar``, the layout KServe's
``pytorch`` runtime (and ours, ``deploy/kserve/servingruntime.yaml``) starts TorchServe on:
``--model-store=/mnt/models/model-store --ts-config=/mnt/models/config/config.properties``.
The config is the repository's ``config.properties`` (limits, body sizes as the serving side
chose them) with what differs in a pod (`POD_SETTINGS`: addresses, token authorization off,
the model API off, ``allowed_urls`` anchored to the pod's store).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from gp_serve.serving.properties import (DEFAULT_CONFIG, allowed_store_urls, read_properties,
                                write_properties)

MOUNT = "/mnt/models"
CONFIG_PATH = "config/config.properties"
STORE_PATH = "model-store"
# KServe routes the pod's port 8080 (http1) to the kserve-container; TorchServe itself is that
# container here (no KServe wrapper in between), so it answers v1 and v2 on 8080.
POD_SETTINGS = {
    "inference_address": "http://0.0.0.0:8080",
    # Management, REST and gRPC, on the pod's loopback: only this pod's containers reach it.
    "management_address": "http://127.0.0.1:8085",
    "grpc_management_address": "127.0.0.1",
    # gRPC inference too: KServe routes only http1 (8080) here, and TorchServe's gRPC service is
    # not the v2 GRPCInferenceService KServe clients call (docs/kserve.md).
    "grpc_inference_address": "127.0.0.1",
    # Metrics on every interface: Prometheus scrapes the pod from another pod, at the pod IP
    # (the runtime's prometheus.kserve.io annotations). It only reads (TorchServe asks no key
    # for it either way): model names, counts and latencies.
    "metrics_address": "http://0.0.0.0:8082",
    # Token authorization off: the kubelet's readiness and liveness probes (httpGet) and the
    # clients behind KServe's ingress cannot carry a key TorchServe makes up per pod at start.
    # What guards management instead is loopback (above): it trusts the pod's network namespace,
    # i.e. every container of the pod (KServe's queue-proxy, any injected sidecar).
    "disable_token_authorization": "true",
    # The pod serves the models of its storage layout, read-only at /mnt/models: no registering
    # or unregistering (a new InferenceService revision changes them), and allowed_urls admits
    # only the .mar files of that store.
    "enable_model_api": "false",
    "model_store": f"{MOUNT}/{STORE_PATH}",
    "allowed_urls": allowed_store_urls(f"{MOUNT}/{STORE_PATH}"),
    "load_models": "all",
    # TS_<KEY> environment variables (the ServingRuntime's env) override any key.
    "enable_envvars_config": "true",
}
# As in the image's own config (docker/container-config.sh): let TorchServe's shutdown hook log
# the models' unregistering on SIGTERM before log4j stops.
SHUTDOWN_VMARG = "-Dlog4j2.shutdownHookEnabled=false"


def pod_config(source: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """The layout's ``config.properties``: ``source`` with `POD_SETTINGS`."""
    properties = {key: value for key, value in read_properties(source).items()
                  if key not in POD_SETTINGS}
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
    parser.add_argument("--mar", type=Path, default=Path("model_store/gp.mar"),
                        help="the model archive (default: model_store/gp.mar)")
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
