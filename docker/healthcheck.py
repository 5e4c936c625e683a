"""Docker HEALTHCHECK: healthy only when every loaded model answers a real prediction.

``/ping`` says the frontend is up, not that a worker can load the model and compute. This asks
the management API which models are loaded, reads each one's metadata (input bounds, from the
handler's describe), and POSTs one point at the centre of the training box to
``/predictions/<model>``; the answer must be HTTP 200 with finite means. Exit 0 if all answer,
1 otherwise (with the reason on stdout, which ``docker inspect`` keeps).

Addresses come from the same place TorchServe takes them: ``TS_INFERENCE_ADDRESS`` /
``TS_MANAGEMENT_ADDRESS`` if set, else the config file (``TS_CONFIG_FILE``). A model whose
metadata has no bounds is asked at ``HEALTHCHECK_INPUTS`` (a JSON list of points) if set.
With token authorization on, the keys are read from TorchServe's ``key_file.json`` (cwd).
Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

TIMEOUT_S = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "4"))
CONFIG = os.environ.get("TS_CONFIG_FILE", "/home/model-server/config.properties")


def _properties(path: str) -> dict[str, str]:
    props: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    props[key.strip()] = value.strip()
    except OSError:
        pass
    return props


def _base_url(env: str, key: str, default: str, props: dict[str, str]) -> str:
    """The address a local client reaches: a wildcard bind becomes loopback."""
    url = os.environ.get(env) or props.get(key) or default
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}"


def _token(api: str) -> str | None:
    """A bearer token if token authorization is on: TorchServe's key_file.json in the cwd."""
    try:
        with open("key_file.json", encoding="utf-8") as f:
            return json.load(f)[api]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _call(url: str, body: bytes | None = None, api: str = "management") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    token = _token(api)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _probe_point(description: list) -> list[list[float]] | None:
    """The centre of the model's training box, from its describe metadata."""
    override = os.environ.get("HEALTHCHECK_INPUTS")
    if override:
        return json.loads(override)
    for entry in description:
        meta = entry.get("customizedMetadata")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except ValueError:
                continue
        if isinstance(meta, dict) and meta.get("input_bounds"):
            return [[(float(lo) + float(hi)) / 2.0 for lo, hi in meta["input_bounds"]]]
    return None


def check() -> str:
    """Raise RuntimeError unless every model answers; return a one-line summary."""
    props = _properties(CONFIG)
    inference = _base_url(
        "TS_INFERENCE_ADDRESS", "inference_address", "http://127.0.0.1:8080", props
    )
    management = _base_url(
        "TS_MANAGEMENT_ADDRESS", "management_address", "http://127.0.0.1:8081", props
    )
    status, body = _call(f"{management}/models")
    if status != 200:
        raise RuntimeError(f"GET {management}/models -> {status}: {body[:200]!r}")
    names = [m["modelName"] for m in json.loads(body).get("models", [])]
    if not names:
        raise RuntimeError("no model is registered")
    answered = []
    for name in names:
        status, body = _call(f"{management}/models/{quote(name)}?customized=true")
        if status != 200:
            raise RuntimeError(f"describe {name} -> {status}: {body[:200]!r}")
        point = _probe_point(json.loads(body))
        if point is None:
            raise RuntimeError(f"{name}: no input_bounds in its metadata; set HEALTHCHECK_INPUTS")
        payload = json.dumps({"inputs": point, "covariance": "none"}).encode()
        status, body = _call(f"{inference}/predictions/{quote(name)}", payload, "inference")
        if status != 200:
            raise RuntimeError(f"POST /predictions/{name} -> {status}: {body[:200]!r}")
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
    except Exception as e:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
