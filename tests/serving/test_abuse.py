"""The abuse tier: hostile and maximal requests against a real TorchServe on loopback.

No body here (each at most ``max_request_size``) may get a 5xx, replace a worker or grow its
memory without bound; most run on a server of their own (`abuse`). See docs/testing.md.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
import torch

from gp_serve.handler import gp_artifact
from gp_serve.handler.codecs import decode_request, v2
from gp_serve.handler.codecs.budget import Budget, RequestError
from gp_serve.serving.archive import write_model_config
from gp_serve.serving.load import closed_loop
from gp_serve.serving.local_server import LocalTorchServe
from gp_serve.serving.properties import DEFAULT_CONFIG, read_properties
from tests.serving.conftest import Exported, own_server

pytestmark = pytest.mark.server

SMALL_RESPONSE = 4 * 1024 * 1024
MAX_REQUEST = int(read_properties(DEFAULT_CONFIG)["max_request_size"])
# A worker's resident memory may grow this much over the maximal bodies (measured: see
# docs/serving.md; the body, its text and one scan of it, then returned to the allocator).
MAX_RSS_GROWTH_BYTES = 400 * 1024 * 1024
PROMPT_S = 1.0
JSON = "application/json"


@pytest.fixture(scope="module")
def abuse(exported: Exported, tmp_path_factory: pytest.TempPathFactory):
    """A TorchServe of its own serving ``gp`` with `SMALL_RESPONSE` (one worker)."""
    root = tmp_path_factory.mktemp("abuse")
    config = write_model_config(
        root / "model-config.yaml",
        {"max_response_bytes": SMALL_RESPONSE},
        minWorkers=1,
        maxWorkers=1,
    )
    with own_server(
        exported.directory, root, config, max_response_size=str(SMALL_RESPONSE)
    ) as server:
        yield server


def budget(exported: Exported, **limits) -> Budget:
    """The served gp's budget (a SingleTaskGP: independent outputs)."""
    return Budget(exported.input_names, exported.output_names, correlated_outputs=False, **limits)


def oracle(body: bytes, headers: dict, exported: Exported, **limits) -> RequestError:
    """The codecs' refusal of ``body`` in process (the message the server must give)."""
    try:
        decode_request({"body": body}, headers, budget(exported, **limits))
    except RequestError as e:
        return e
    raise AssertionError("the body was accepted in process")


def post(
    server: LocalTorchServe,
    body: bytes,
    headers: dict | None = None,
    path: str = "",
    timeout: float = 120,
) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(
        path or server.predict_url,
        data=body,
        timeout=timeout,
        headers={"Content-Type": JSON, **(headers or {}), **server.headers()},
    )
    return response, time.monotonic() - started


def rss(server: LocalTorchServe) -> dict[int, int]:
    return {pid: psutil.Process(pid).memory_info().rss for pid in server.worker_pids()}


def fill(prefix: bytes, item: bytes, suffix: bytes, size: int) -> bytes:
    """``prefix + item,item,... + suffix`` as large as fits in ``size`` bytes."""
    count = (size - len(prefix) - len(suffix) + 1) // (len(item) + 1)
    return prefix + b",".join([item] * count) + suffix


def maximal_bodies() -> dict[str, tuple[bytes, dict]]:
    """The largest body under ``max_request_size`` in each envelope (all points valid)."""
    size = MAX_REQUEST - 1024
    tensor = b'{"inputs": [{"name": "X", "datatype": "FP64", "shape": [%d, 2], "data": ['
    v2_count = (size - 200) // 8  # numbers "0.5," of 4 bytes
    v2_json = (tensor % (v2_count // 2)) + b",".join([b"0.5"] * (v2_count // 2 * 2)) + b"]}]}"
    q = (size - 200) // 16
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP64",
                    "shape": [q, 2],
                    "parameters": {"binary_data_size": 16 * q},
                }
            ]
        }
    ).encode()
    return {
        "inputs-diag": (fill(b'{"covariance": "diag", "inputs": [', b"[0.5,0.5]", b"]}", size), {}),
        "instances": (
            fill(b'{"covariance": "none", "instances": [', b'{"x1":0.5,"x2":0.5}', b"]}", size),
            {},
        ),
        "list": (fill(b"[", b"[0.5,0.5]", b"]", size), {}),
        "v2-json": (v2_json, {}),
        "v2-binary": (header + bytes(16 * q), {v2.HEADER_LENGTH: str(len(header))}),
        "csv": (b"x1,x2\n" + b"0,0\n" * ((size - 6) // 4), {"Content-Type": "text/csv"}),
    }


def test_maximal_bodies_are_refused_before_compute(abuse, exported: Exported) -> None:
    pids, before = abuse.worker_pids(), rss(abuse)
    seconds = {}
    for name, (body, headers) in maximal_bodies().items():
        assert len(body) <= MAX_REQUEST, name
        response, seconds[name] = post(abuse, body, headers)
        expected = oracle(body, headers, exported)
        assert (response.status_code, response.json()["error"]) == (413, str(expected)), name
    after = rss(abuse)
    growth = {pid: after[pid] - before[pid] for pid in pids}
    print(
        f"\n[abuse] maximal bodies ({MAX_REQUEST // 2**20} MiB): 413 in "
        + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items())
        + f"; worker RSS {before} -> {after} (growth {growth})"
    )
    assert abuse.worker_pids() == pids
    assert max(growth.values()) < MAX_RSS_GROWTH_BYTES, growth


def test_slow_pattern_cells_are_400_at_once(abuse) -> None:
    """A cell of 100,000 digits and a letter, in a data row and in the header row: once
    quadratic (a 500 after 120 s and a replaced worker), now linear."""
    pids = abuse.worker_pids()
    digits = "1" * 100_000 + "a"
    for body, error in [
        (
            f"x1,x2\n0.1,{digits}\n",
            "CSV line 2, column x2: a cell of 100001 characters: "
            "expected a number of at most 400 characters, got '11111111111111111111111111111111"
            "11111... (100001 characters)'",
        ),
        (
            f"{digits},x2\n0.1,0.2\n",
            "CSV header: expected the input names ['x1', 'x2'] (in any "
            "order), got ['1111111111111111111111111111111111111... (100001 characters)', 'x2']",
        ),
        (
            f"0.1,{digits[:399]}a\n",
            "CSV line 1, column x2: expected a finite number, got "
            "'1111111111111111111111111111111111111...'",
        ),
    ]:
        response, elapsed = post(abuse, body.encode(), {"Content-Type": "text/csv"})
        print(
            f"\n[abuse] slow-pattern cell ({len(body)} bytes): HTTP {response.status_code} "
            f"in {elapsed:.3f} s"
        )
        assert (response.status_code, response.json()["error"]) == (400, error)
        assert elapsed < PROMPT_S
    assert abuse.worker_pids() == pids


def test_the_answer_just_under_and_just_over_max_response_size(abuse, exported) -> None:
    b = budget(exported, max_response_bytes=SMALL_RESPONSE)
    q = 1
    while b.answer_bytes(q + 1, True, extra_bytes=8) <= SMALL_RESPONSE:
        q += 1
    X = torch.rand(q + 1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    under, _ = post(abuse, json.dumps({"inputs": X[:q].tolist()}).encode())
    assert under.status_code == 200, under.text[:300]
    assert len(under.content) <= SMALL_RESPONSE
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    mean, covariance = module(X[:q])
    got = torch.tensor(under.json()["covariance"], dtype=torch.float64)
    assert ((got - covariance).abs().max() / covariance.abs().max()).item() <= 1e-9
    over, elapsed = post(abuse, json.dumps({"inputs": X.tolist()}).encode())
    print(
        f"\n[abuse] max_response_size {SMALL_RESPONSE}: q={q} answered ({len(under.content)} "
        f"bytes), q={q + 1} refused in {elapsed:.3f} s"
    )
    assert over.status_code == 413
    assert over.json()["error"] == (
        f"the answer to {q + 1} points with covariance 'full' could take "
        f"{b.answer_bytes(q + 1, True, extra_bytes=8)} bytes, over the limit of "
        f'{SMALL_RESPONSE} bytes (max_response_size): ask for "diag" (no covariance), send '
        "fewer points or score a CSV in chunks (client.score_csv --chunk-rows)"
    )


def test_huge_keys_and_header_cells_get_short_errors(abuse) -> None:
    """3 MB of client input in a key or a cell: quoted cut, error bodies under 1 KB."""
    pids = abuse.worker_pids()
    cut = "... (3000000 characters)"
    bodies = [
        (
            json.dumps({"inputs": [[0.1, 0.2]], "k" * 3_000_000: 1}).encode(),
            {},
            f"unknown keys [\"{'k' * 37}{cut}\"]: expected only 'inputs' and ['covariance', "
            "'observation_noise', 'samples', 'base_samples', 'quantiles', 'acquisition', "
            "'gradients']",
        ),
        (
            b"h" * 3_000_000 + b",x2\n0.1,0.2\n",
            {"Content-Type": "text/csv"},
            "CSV line 1: a cell of more than 131072 characters: expected numbers of at most 400 "
            "characters",
        ),
        (
            json.dumps({"inputs": [{"x1": 0.1, "x2": 0.2, "z" * 3_000_000: 0}]}).encode(),
            {},
            f"inputs[0]: expected an object with exactly the inputs ['x1', 'x2'], got unknown "
            f'["{"z" * 37}{cut}"] and missing []',
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "X",
                            "shape": [1, 2],
                            "datatype": "FP64",
                            "data": [0, 0],
                            "y" * 3_000_000: 0,
                        }
                    ]
                }
            ).encode(),
            {},
            f"inputs[0]: unknown keys [\"{'y' * 37}{cut}\"]: expected only ['name', 'shape', "
            "'datatype', 'data', 'parameters']",
        ),
    ]
    for body, headers, error in bodies:
        response, _ = post(abuse, body, headers)
        assert (response.status_code, response.json()["error"]) == (400, error)
        assert len(response.content) < 1024
    assert abuse.worker_pids() == pids


@pytest.mark.parametrize(
    "value, error",
    [
        (
            "-1",
            "Inference-Header-Content-Length: expected a JSON header length between 1 and the "
            "body's 64 bytes, got -1",
        ),
        (
            "0",
            "Inference-Header-Content-Length: expected a JSON header length between 1 and the "
            "body's 64 bytes, got 0",
        ),
        (
            "99999999999999999999999",
            "Inference-Header-Content-Length: expected a JSON header "
            "length between 1 and the body's 64 bytes, got 99999999999999999999999",
        ),
        ("abc", "Inference-Header-Content-Length: expected a byte count, got 'abc'"),
        ("1e3", "Inference-Header-Content-Length: expected a byte count, got '1e3'"),
        (
            "9" * 5000,
            "Inference-Header-Content-Length: expected a byte count, got '"  # (int()
            + "9" * 37
            + "... (5000 characters)'",
        ),  # refuses more than 4300 digits)
    ],
)
def test_odd_header_lengths_are_400(abuse, value: str, error: str) -> None:
    body = b'{"inputs": [{"name": "X"}]}'.ljust(64, b" ")
    response, _ = post(abuse, body, {v2.HEADER_LENGTH: value})
    assert response.status_code == 400
    assert response.json() == {"error": error}


MANAGEMENT_CALLS = {
    "scale": ("PUT", "/models/gp?min_worker=16&max_worker=16"),
    "register": ("POST", "/models?url=gp.mar&model_name=other&initial_workers=1"),
    "unregister": ("DELETE", "/models/gp"),
    "set-default": ("PUT", "/models/gp/1.0/set-default"),
    "register-workflow": ("POST", "/workflows?url=gp.war"),
    "list": ("GET", "/models"),
    "describe": ("GET", "/models/gp?customized=true"),
    "token-api": ("POST", "/token?type=management"),
}
REFUSED = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"


@pytest.mark.parametrize("call", list(MANAGEMENT_CALLS))
@pytest.mark.parametrize("key", ["none", "wrong", "inference"])
def test_management_needs_the_management_key(abuse, call: str, key: str) -> None:
    """A local process without the management key can change (or read) nothing: TorchServe
    answers 400 ``InvalidKeyException`` and the model keeps its workers."""
    method, path = MANAGEMENT_CALLS[call]
    headers = {
        "none": {},
        "wrong": {"Authorization": "Bearer not-the-key"},
        "inference": abuse.headers("inference"),
    }[key]
    workers, keys = abuse.worker_pids(), (abuse.workdir / "key_file.json").read_bytes()
    response = requests.request(
        method, f"{abuse.management_url}{path}", headers=headers, timeout=30
    )
    assert response.status_code == 400, response.text
    refusal = response.json()  # ("Authentication" from the token API, else "Authorization")
    assert refusal["type"] == "InvalidKeyException", refusal
    assert refusal["message"] in (REFUSED, REFUSED.replace("Authorization", "Authentication"))
    assert abuse.worker_pids() == workers
    assert (abuse.workdir / "key_file.json").read_bytes() == keys  # (no key rotated)
    listed = requests.get(
        f"{abuse.management_url}/models", timeout=10, headers=abuse.headers("management")
    ).json()
    assert [model["modelName"] for model in listed["models"]] == ["gp"]


def test_inference_needs_the_inference_key(abuse) -> None:
    for path in ("/predictions/gp", "/ping", "/v2/health/ready"):
        response = requests.post(
            f"{abuse.inference_url}{path}", json={"inputs": [[0.5, 0.5]]}, timeout=30
        )
        assert response.status_code == 400 and response.json()["message"] == REFUSED, path
    assert requests.get(
        f"{abuse.inference_url}/ping", headers=abuse.headers(), timeout=30
    ).json() == {"status": "Healthy"}


def test_the_key_file_is_the_owners_only(abuse) -> None:
    mode = (abuse.workdir / "key_file.json").stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


def test_two_maximal_full_covariances_and_small_requests(server, exported: Exported) -> None:
    """Two concurrent full covariances at the limit (2000 points) on the session server's
    two workers, while a third client sends q=1 requests: every request is answered."""
    limit = budget(exported).max_full_points
    X = torch.rand(limit, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    big = json.dumps({"inputs": X.tolist()}).encode()
    small = json.dumps({"inputs": [[0.5, 0.5]], "covariance": "diag"}).encode()
    done, smalls = threading.Event(), []

    def small_client() -> None:
        smalls.append(
            closed_loop(server.predict_url, [small], 1, stop=done, headers=server.headers())
        )

    def big_request(_: int) -> tuple[int, float, int]:
        response, elapsed = post(server, big)
        return response.status_code, elapsed, len(response.content)

    thread = threading.Thread(target=small_client)
    thread.start()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            bigs = list(pool.map(big_request, range(2)))
    finally:
        done.set()
        thread.join(timeout=150)
    latencies, failures = smalls[0].latencies, smalls[0].errors
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    print(
        f"\n[abuse] 2 concurrent full covariances of {limit} points: "
        + ", ".join(f"HTTP {s} in {t:.1f} s ({n / 1e6:.0f} MB)" for s, t, n in bigs)
        + f"; q=1 client: {len(latencies)} requests, {len(failures)} failed, p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    assert [status for status, _, _ in bigs] == [200, 200]
    assert failures == [] and latencies


def test_a_describe_header_on_the_inference_port_is_a_prediction(abuse) -> None:
    """Only the management API's describe (no body) gets the metadata."""
    response, _ = post(
        abuse, b'{"inputs": [[0.5, 0.5]], "covariance": "diag"}', {"describe": "True"}
    )
    assert response.status_code == 200
    assert set(response.json()) >= {"mean", "variance"} and "serving" not in response.json()
    assert "serving" in abuse.metadata().document
