"""Docker HEALTHCHECK: healthy only when every loaded model answers a real prediction.

Run in the image as ``python -m gp_serve.serving.healthcheck`` (standard library only); exit 0
if all answer, 1 otherwise, with the reason on stdout. See docs/docker.md.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

from gp_serve.handler import gp_artifact
from gp_serve.serving import auth
from gp_serve.serving.properties import address, read_properties

TIMEOUT_S = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "4"))
# The whole check's limit, below the Dockerfile's --timeout=8s: the check reports a slow server
# itself instead of Docker killing it silently.
DEADLINE_S = float(os.environ.get("HEALTHCHECK_DEADLINE_S", "6"))
CONFIG = os.environ.get("TS_CONFIG_FILE", "/home/model-server/config.properties")
# TorchServe's own variable for its log folder (default: logs/ in its working directory).
MODEL_LOG = os.path.join(os.environ.get("LOG_LOCATION", "logs"), "model_log.log")
LOG_TAIL_BYTES = 256 * 1024


def _token(api: str) -> str | None:
    """A bearer token if token authorization is on: TorchServe's key file in the cwd."""
    try:
        return auth.read_key(".", api)
    except auth.AuthError:
        return None


class _Clock:
    """The time left of the check's DEADLINE_S, as each call's timeout (at most TIMEOUT_S)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def timeout(self, what: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0.05:
            raise TimeoutError(f"no time left for {what} within {DEADLINE_S:g} s")
        return min(TIMEOUT_S, left)


def _call(
    clock: _Clock, url: str, body: bytes | None = None, api: str = "management"
) -> tuple[int, bytes]:
    timeout = clock.timeout(("POST " if body is not None else "GET ") + url)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    token = _token(api)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _probe_point(description: list) -> list[list[float]]:
    """The centre of the model's training box (its describe metadata), or HEALTHCHECK_INPUTS."""
    override = os.environ.get("HEALTHCHECK_INPUTS")
    if override:
        return json.loads(override)
    meta = description[0].get("customizedMetadata")
    if isinstance(meta, str):
        meta = json.loads(meta)
    return [gp_artifact.validate(meta).centre()]


def _load_error(name: str | None = None) -> str | None:
    """The handler's last "cannot load" line for model ``name`` (or any) in the model log."""
    try:
        with open(MODEL_LOG, "rb") as f:
            f.seek(max(0, os.path.getsize(MODEL_LOG) - LOG_TAIL_BYTES))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    marker = gp_artifact.LOAD_ERROR_MARKER + ("" if name is None else f" {name!r}")
    found = [line[line.index(marker) :] for line in lines if marker in line]
    return found[-1] if found else None


def check() -> str:
    """Raise RuntimeError unless every model answers; return a one-line summary."""
    clock = _Clock(DEADLINE_S)
    props = read_properties(CONFIG)
    inference, management = address(props, "inference"), address(props, "management")
    status, body = _call(clock, f"{management}/models")
    if status != 200:
        raise RuntimeError(f"GET {management}/models -> {status}: {body[:200]!r}")
    names = [m["modelName"] for m in json.loads(body).get("models", [])]
    if not names:
        raise RuntimeError("no model is registered")
    answered = []
    for name in names:
        status, body = _call(clock, f"{management}/models/{quote(name)}?customized=true")
        if status != 200:
            raise RuntimeError(_load_error(name) or f"describe {name} -> {status}: {body[:200]!r}")
        try:
            point = _probe_point(json.loads(body))
        except (ValueError, IndexError, AttributeError) as e:  # ArtifactError is a ValueError
            raise RuntimeError(f"{name}: no usable metadata ({e}); set HEALTHCHECK_INPUTS") from e
        payload = json.dumps({"inputs": point, "covariance": "none"}).encode()
        status, body = _call(clock, f"{inference}/predictions/{quote(name)}", payload, "inference")
        if status != 200:
            raise RuntimeError(
                _load_error(name) or f"POST /predictions/{name} -> {status}: {body[:200]!r}"
            )
        mean = json.loads(body).get("mean")
        values = [v for row in mean or [] for v in row]
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise RuntimeError(f"{name}: no finite mean in {body[:200]!r}")
        answered.append(name)
    return f"healthy: {', '.join(answered)} answered a prediction"


def main() -> int:
    try:
        print(check())
        return 0
    except Exception as e:  # (broad: any failure means unhealthy)
        # A model that cannot load also slows the server (its workers keep dying): whatever
        # failed, the handler's own reason is the one to report.
        print(f"unhealthy: {_load_error() or e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
