"""The storage layout KServe's TorchServe runtime mounts at ``/mnt/models``.

    python -m serving.kserve_layout --mar model_store/gp.mar --out DIR   # make kserve-layout

writes ``DIR/config/config.properties`` and ``DIR/model-store/gp.mar``, the layout KServe's
``pytorch`` runtime (and ours, ``deploy/kserve/servingruntime.yaml``) starts TorchServe on:
``--model-store=/mnt/models/model-store --ts-config=/mnt/models/config/config.properties``.
The config is the repository's ``config.properties`` (limits, token authorization, body
sizes as the serving side chose them) with what differs in a pod (`POD_SETTINGS`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from serving.properties import DEFAULT_CONFIG, read_properties, write_properties

MOUNT = "/mnt/models"
CONFIG_PATH = "config/config.properties"
STORE_PATH = "model-store"
# KServe routes the pod's port 8080 (http1) to the kserve-container; TorchServe itself is that
# container here (no KServe wrapper in between), so it answers v1 and v2 on 8080. Management
# stays inside the pod; metrics are scraped on 8082 (the runtime's prometheus annotations).
POD_SETTINGS = {
    "inference_address": "http://0.0.0.0:8080",
    "management_address": "http://127.0.0.1:8085",
    "metrics_address": "http://0.0.0.0:8082",
    "model_store": f"{MOUNT}/{STORE_PATH}",
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
                  if key not in POD_SETTINGS and key != "allowed_urls"}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.kserve_layout",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--mar", type=Path, default=Path("model_store/gp.mar"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        out = write_layout(args.mar, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
