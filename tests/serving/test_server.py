"""The REST contract, against a real TorchServe (see ``conftest.server``)."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch

from gp_serve.client.score_csv import score_csv
from gp_serve.handler import gp_artifact
from gp_serve.serving.local_server import LocalTorchServe
from tests.serving.cases import BAD_REQUESTS, JSON
from tests.serving.conftest import BATCH_MODEL, BATCH_SIZE, Exported

pytestmark = pytest.mark.server

TOLERANCE = 1e-9


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|``, per output column, worst."""
    assert actual.shape == expected.shape
    columns = [(actual, expected)] if actual.dim() < 2 else zip(actual.T, expected.T, strict=True)
    errors = [((a - e).abs().max() / e.abs().max()).item() for a, e in columns]
    return max(errors)


def post(server: LocalTorchServe, body: dict | list, model: str = "gp") -> requests.Response:
    return requests.post(
        f"{server.inference_url}/predictions/{model}",
        data=json.dumps(body),
        headers={"Content-Type": JSON, **server.headers()},
        timeout=120,
    )


def points(q: int, seed: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(q, 2, generator=generator, dtype=torch.float64)


@pytest.fixture(scope="module")
def module(exported: Exported) -> torch.jit.ScriptModule:
    """The same ``posterior.pt``, loaded in process."""
    return torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("q", [1, 5, 37])
def test_full_matches_module_and_eager(server, exported, module, q: int, noise: bool) -> None:
    X = points(q, seed=q)
    response = post(
        server, {"inputs": X.tolist(), "covariance": "full", "observation_noise": noise}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["model"] == "gp" and answer["version"] == "1.0"
    assert answer["outputs"] == ["branin", "currin"]
    assert answer["covariance_layout"] == gp_artifact.COVARIANCE_LAYOUT == "output-major"
    assert answer["observation_noise"] is noise
    mean, variance = (
        torch.tensor(answer[key], dtype=torch.float64) for key in ("mean", "variance")
    )
    covariance = torch.tensor(answer["covariance"], dtype=torch.float64)
    assert mean.shape == variance.shape == (q, 2) and covariance.shape == (2 * q, 2 * q)

    mv = module.mean_var_noisy(X) if noise else module.mean_var(X)
    full = module.forward_noisy(X) if noise else module.forward(X)
    assert relative_error(mean, mv[0]) <= TOLERANCE
    assert relative_error(variance, mv[1]) <= TOLERANCE
    assert relative_error(covariance, full[1]) <= TOLERANCE

    with torch.no_grad():
        posterior = exported.model.posterior(X, observation_noise=noise)
    assert relative_error(mean, posterior.mean) <= TOLERANCE
    assert relative_error(variance, posterior.variance) <= TOLERANCE
    assert relative_error(covariance, posterior.distribution.covariance_matrix) <= TOLERANCE


def test_floats_round_trip_exactly(server, module) -> None:
    """The served floats are bit for bit the module's (same points, same call)."""
    X = points(3, seed=11)
    answer = post(server, {"inputs": X.tolist(), "covariance": "diag"}).json()
    with torch.inference_mode():
        torch.set_num_threads(1)  # as the workers (model-config.yaml torch_threads)
        mean, variance = module.mean_var(X)
    assert answer["mean"] == mean.tolist()
    assert answer["variance"] == variance.tolist()


def test_diag_and_none(server) -> None:
    X = points(6, seed=3).tolist()
    full = post(server, {"inputs": X}).json()
    diag = post(server, {"inputs": X, "covariance": "diag"}).json()
    none = post(server, {"inputs": X, "covariance": "none"}).json()
    assert "covariance" in full and "covariance" not in diag and "covariance" not in none
    covariance = torch.tensor(full["covariance"], dtype=torch.float64)
    # a full answer's variances are its covariance's diagonal (one module call); without
    # a covariance they come from mean_var, whose rounding differs in the last bits
    assert (
        torch.tensor(full["variance"], dtype=torch.float64).t().flatten().tolist()
        == covariance.diagonal().tolist()
    )
    for answer in (diag, none):
        assert answer["mean"] == full["mean"] and answer["variance"] == diag["variance"]
        assert (
            relative_error(
                torch.tensor(answer["variance"], dtype=torch.float64),
                torch.tensor(full["variance"], dtype=torch.float64),
            )
            <= TOLERANCE
        )


def test_request_forms_agree(server) -> None:
    X = points(4, seed=5).tolist()
    expected = post(server, {"inputs": X, "covariance": "diag"}).json()
    named = [{"x2": x2, "x1": x1} for x1, x2 in X]
    bare = post(server, X).json()
    assert bare["mean"] == expected["mean"] and "covariance" in bare
    assert post(server, {"inputs": named, "covariance": "diag"}).json()["mean"] == expected["mean"]
    kserve = post(server, {"instances": named, "covariance": "diag"}).json()
    assert kserve["mean"] == expected["mean"]
    assert kserve["predictions"] == [
        {"mean": m, "variance": v}
        for m, v in zip(expected["mean"], expected["variance"], strict=True)
    ]


def test_extrapolation_lists_points_outside_training_bounds(server, exported) -> None:
    bounds = gp_artifact.load_metadata(exported.directory).input_bounds
    inside = [(lo + hi) / 2 for lo, hi in bounds]
    X = [
        inside,
        [bounds[0][0] - 0.5, inside[1]],
        inside,
        [inside[0], bounds[1][1] + 1e-9],
        [bounds[0][0], bounds[1][1]],
    ]
    answer = post(server, {"inputs": X, "covariance": "none"}).json()
    assert answer["extrapolation"] == [1, 3]


def test_full_covariance_limit(server) -> None:
    X = points(2001, seed=1).tolist()
    response = post(server, {"inputs": X})
    assert response.status_code == 413
    assert response.json() == {
        "error": 'a full covariance is limited to 2000 points, got 2001; send "covariance": '
        '"diag" (or "none") for more points (a 4002 x 4002 covariance; at most 4000 '
        "rows for 2 outputs)",
        "code": 413,
    }
    diag = post(server, {"inputs": X, "covariance": "diag"})
    assert diag.status_code == 200 and len(diag.json()["variance"]) == 2001


@pytest.fixture(scope="module")
def points_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """10,000 points in a CSV with the columns in reverse order (``x2,x1``)."""
    X = points(10_000, seed=42, low=-0.1, high=1.1)
    path = tmp_path_factory.mktemp("csv") / "points.csv"
    with open(path, "w", newline="") as f:
        f.write("x2,x1\n")
        f.writelines(f"{x2!r},{x1!r}\n" for x1, x2 in X.tolist())
    return path, X


def read_scores(text: str) -> tuple[list[str], torch.Tensor]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], torch.tensor([[float(v) for v in row] for row in rows[1:]], dtype=torch.float64)


def check_scores(text: str, X: torch.Tensor, module: torch.jit.ScriptModule) -> None:
    header, scores = read_scores(text)
    assert header == ["mean_branin", "std_branin", "mean_currin", "std_currin"]
    assert scores.shape == (X.size(0), 4)
    mean, variance = module.mean_var(X)
    assert relative_error(scores[:, [0, 2]], mean) <= TOLERANCE
    assert relative_error(scores[:, [1, 3]], variance.sqrt()) <= TOLERANCE


def test_csv_10000_rows_with_curl(server, points_csv, module, tmp_path: Path) -> None:
    path, X = points_csv
    out = tmp_path / "scores.csv"
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--data-binary",
            f"@{path}",
            "-H",
            "Content-Type: text/csv",
            "-H",
            f"Authorization: {server.headers()['Authorization']}",
            "-o",
            str(out),
            "-w",
            "%{http_code} %{content_type}",
            server.predict_url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert result.stdout.startswith("200 text/csv"), result.stdout + result.stderr
    check_scores(out.read_text(), X, module)


def test_csv_without_header(server, module) -> None:
    X = points(3, seed=8)
    body = "".join(f"{a!r},{b!r}\n" for a, b in X.tolist())
    response = requests.post(
        server.predict_url,
        data=body,
        headers={"Content-Type": "text/csv", **server.headers()},
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    check_scores(response.text, X, module)


def test_python_client_in_chunks(server, points_csv, module, tmp_path: Path) -> None:
    path, X = points_csv
    out = tmp_path / "scores.csv"
    assert (
        score_csv(
            path, out, server.predict_url, chunk_rows=3000, progress=False, headers=server.headers()
        )
        == 10_000
    )
    check_scores(out.read_text(), X, module)


def test_concurrent_clients_get_their_own_answers(server, module) -> None:
    def client(seed: int) -> list[str]:
        rng = random.Random(seed)
        failures = []
        for n in range(50):
            q = rng.randint(1, 40)
            mode = rng.choice(["full", "diag", "none"])
            X = points(q, seed=seed * 1000 + n)
            response = post(server, {"inputs": X.tolist(), "covariance": mode})
            if response.status_code != 200:
                failures.append(f"client {seed} request {n}: {response.status_code}")
                continue
            answer = response.json()
            mean, variance = module.mean_var(X)
            got = torch.tensor(answer["mean"], dtype=torch.float64)
            if got.shape != mean.shape or relative_error(got, mean) > TOLERANCE:
                failures.append(f"client {seed} request {n}: mean of another request")
            if ("covariance" in answer) != (mode == "full"):
                failures.append(f"client {seed} request {n}: covariance for {mode}")
        return failures

    with ThreadPoolExecutor(max_workers=8) as pool:
        failures = [f for result in pool.map(client, range(8)) for f in result]
    assert failures == []


def worker_pids(server: LocalTorchServe, model: str = "gp") -> list[int]:
    return server.worker_pids(model)


@pytest.mark.parametrize(
    "name, content_type, body, error", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS]
)
def test_bad_request_is_400_json(
    server, name: str, content_type: str, body: str, error: str
) -> None:
    response = requests.post(
        server.predict_url,
        data=body.encode(),
        headers={"Content-Type": content_type, **server.headers()},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"error": error, "code": 400}


def test_bad_requests_leave_workers_alive(server) -> None:
    before = worker_pids(server)
    statuses = {
        requests.post(
            server.predict_url,
            data=body.encode(),
            headers={"Content-Type": content_type, **server.headers()},
            timeout=60,
        ).status_code
        for _, content_type, body, _ in BAD_REQUESTS
    }
    assert statuses == {400}
    assert worker_pids(server) == before
    assert post(server, {"inputs": [[0.5, 0.5]]}).status_code == 200


def test_invalid_utf8_is_400(server) -> None:
    response = requests.post(
        server.predict_url,
        data=b"\xff\xfe\x00",
        timeout=60,
        headers={"Content-Type": JSON, **server.headers()},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "expected a UTF-8 encoded body, got invalid bytes: 'utf-8' codec can't decode byte 0xff"
    )


def test_json_sent_as_a_form_is_400(server) -> None:
    response = requests.post(
        server.predict_url,
        data=b'{"inputs": [[0.1, 0.2]]}',
        timeout=60,
        headers={"Content-Type": "application/x-www-form-urlencoded", **server.headers()},
    )
    assert response.status_code == 400
    assert (
        "(curl -d sends a form: add -H 'Content-Type: application/json')"
        in (response.json()["error"])
    )


def wait_for_log_line(server: LocalTorchServe, marker: str, words: list[str]) -> bool:
    """Whether a ``ts_log.log`` line with ``marker`` and all ``words`` appears (30 s)."""
    for _ in range(300):
        lines = (server.workdir / "ts_log.log").read_text().splitlines()
        if any(marker in line and all(w in line for w in words) for line in lines):
            return True
        time.sleep(0.1)
    return False


def test_one_bad_request_in_a_batch(server, module) -> None:
    """``gpbatch`` (batchSize 4) answers a batch of 3 good and 1 bad request."""
    bodies = [
        {"inputs": points(i + 1, seed=100 + i).tolist(), "covariance": "diag"}
        for i in range(BATCH_SIZE)
    ]
    bodies[2] = {"inputs": [[0.1, "bad"]]}
    barrier = threading.Barrier(BATCH_SIZE)

    def send(body: dict) -> requests.Response:
        barrier.wait()
        return post(server, body, model=BATCH_MODEL)

    with ThreadPoolExecutor(max_workers=BATCH_SIZE) as pool:
        responses = list(pool.map(send, bodies))
    assert [r.status_code for r in responses] == [200, 200, 400, 200]
    assert responses[2].json()["code"] == 400
    for body, response in zip(bodies, responses, strict=True):
        if response.status_code == 200:
            mean = module.mean_var(torch.tensor(body["inputs"], dtype=torch.float64))[0]
            got = torch.tensor(response.json()["mean"], dtype=torch.float64)
            assert relative_error(got, mean) <= TOLERANCE
    # The worker logs one PredictionTime metric per batch, tagged with its request
    # ids; the frontend copies it to ts_log.log asynchronously, so wait for it.
    ids = [response.headers["x-request-id"] for response in responses]
    assert wait_for_log_line(server, "[METRICS]PredictionTime", ids), "not one batch"


def test_management_describes_the_model(server, exported) -> None:
    response = requests.get(
        f"{server.management_url}/models/gp",
        params={"customized": "true"},
        headers=server.headers("management"),
        timeout=10,
    )
    assert response.status_code == 200
    described = response.json()[0]
    assert described["batchSize"] == 1 and described["minWorkers"] == 2
    metadata = described["customizedMetadata"]
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    expected = gp_artifact.load_metadata(exported.directory).document
    assert {key: metadata[key] for key in expected} == expected
    assert metadata["serving"]["max_full_covariance_points"] == 2000
    assert metadata["serving"]["max_points"] == 100_000


def test_prometheus_metrics(server) -> None:
    response = requests.get(f"{server.metrics_url}/metrics", timeout=10)
    assert response.status_code == 200 and "# TYPE" in response.text


def test_inputs_too_far_out_are_400(server) -> None:
    """Finite inputs whose posterior overflows are refused, not answered with NaN.

    (GPyTorch centres distances on the points' mean, so one such point makes the
    whole request non-finite.)
    """
    response = post(server, {"inputs": [[0.5, 0.5], [1e308, -1e308]], "covariance": "diag"})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "the posterior is not finite at points [0, 1] (first 10): expected inputs at a sane "
        "distance from the training bounds"
    )
