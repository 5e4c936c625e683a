"""Generated bodies against a real TorchServe: never a 5xx, never a dead worker, exact answers.

Hypothesis generates, from a fixed seed (``derandomize=True``: every run sends the same
bodies), valid requests (JSON in every envelope, CSV with every quirk), structurally wrong
JSON, byte-mutated valid bodies and hostile ones (deep nesting, huge numbers, lone
surrogates, binary), each with a content type drawn from a wide list. For every body:

- the status is never 5xx;
- an error is a JSON ``{"error", "code"}`` with ``code`` equal to the status, and its
  message is exactly the one the codecs give for that body in process (so the
  rule that fired is the rule that was broken);
- a 200 answer equals the in-process TorchScript module's (<= 1e-9 relative).

The worker pids are the same before and after.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import requests
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from gp_serve.handler import gp_artifact
from gp_serve.handler.codecs import decode_request
from gp_serve.handler.codecs.budget import Budget, RequestError
from gp_serve.serving.local_server import LocalTorchServe
from tests.serving.conftest import Exported
from tests.serving.test_server import TOLERANCE, relative_error, worker_pids

pytestmark = pytest.mark.server

BODIES = 2000
# Content types TorchServe hands to the handler as the raw body ...
RAW_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/csv",
    "text/csv; charset=utf-8",
    "application/csv",
    "Text/CSV",
    "text/plain",
    "application/octet-stream",
    "image/png",
    "application/json;;;=",
    "*/*",
    None,
]
# ... and form types it decodes into fields itself (no oracle for the message: 4xx or 200).
FORM_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
]
SENT: list[str] = []  # one entry per body sent, for the count check


@pytest.fixture(scope="module")
def module(exported: Exported) -> torch.jit.ScriptModule:
    return torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))


# --- strategies ---------------------------------------------------------------------------

coordinate = st.floats(-0.25, 1.25, allow_nan=False, allow_infinity=False)
point = st.tuples(coordinate, coordinate)


@st.composite
def valid_json(draw) -> bytes:
    points = draw(st.lists(point, min_size=1, max_size=12))
    named = draw(st.booleans())
    rows = [{"x2": b, "x1": a} if named else [a, b] for a, b in points]
    envelope = draw(st.sampled_from(["inputs", "instances", "list"]))
    if envelope == "list":
        return json.dumps(rows).encode()
    body: dict = {envelope: rows}
    if draw(st.booleans()):
        body["covariance"] = draw(st.sampled_from(["full", "diag", "none"]))
    if draw(st.booleans()):
        body["observation_noise"] = draw(st.booleans())
    return json.dumps(body, indent=draw(st.sampled_from([None, 1]))).encode()


@st.composite
def valid_csv(draw) -> bytes:
    points = draw(st.lists(point, min_size=1, max_size=30))
    header = draw(st.sampled_from([None, ["x1", "x2"], ["x2", "x1"], [" x2", "x1 "]]))
    out = io.StringIO()
    writer = csv.writer(
        out,
        lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
    )
    if header:
        writer.writerow(header)
    fmt = draw(st.sampled_from([repr, "{:.6e}".format, "{:.17g}".format]))
    for a, b in points:
        values = {"x1": fmt(a), "x2": fmt(b)}
        writer.writerow(
            [values[name.strip()] for name in header] if header else [values["x1"], values["x2"]]
        )
        if draw(st.integers(0, 9)) == 0:
            out.write(draw(st.sampled_from(["\n", "\r\n", " ,  \n"])))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    return bom + out.getvalue().encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["inputs", "instances", "covariance", "observation_noise", "x1", "x2", "other"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@st.composite
def wrong_json(draw) -> bytes:
    value = draw(json_values)
    if draw(st.booleans()):
        value = {draw(st.sampled_from(["inputs", "instances"])): value}
    return json.dumps(value).encode()  # allow_nan: NaN/Infinity literals too


@st.composite
def mutated(draw) -> bytes:
    body = bytearray(draw(valid_json() | valid_csv()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if kind == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            body[at:at] = draw(
                st.binary(min_size=1, max_size=6)
                | st.sampled_from([b"[", b"]", b",", b'"', b"\\", b"\r\n", b"\xed\xa0\x80"])
            )
        else:
            body = body[:at]
    return bytes(body)


@st.composite
def hostile(draw) -> bytes:
    kind = draw(
        st.sampled_from(["deep", "digits", "exponent", "surrogate", "binary", "long-float"])
    )
    if kind == "deep":
        depth = draw(st.integers(30, 20000))
        opener = draw(st.sampled_from(["[", '{"a":', '{"inputs":']))
        closer = {"[": "]", '{"a":': "}", '{"inputs":': "}"}[opener]
        return (opener * depth + "0" + closer * draw(st.integers(0, depth))).encode()
    if kind == "digits":
        return b'{"inputs": [[1' + b"0" * draw(st.integers(300, 20000)) + b", 0.5]]}"
    if kind == "exponent":
        exponent = draw(st.integers(300, 100000))
        return f'{{"inputs": [[1e{exponent}, 0.5]]}}'.encode()
    if kind == "surrogate":
        return b'{"inputs": [[0.5, 0.5]], "\\ud83d": "\\udc00\\ud800"}'
    if kind == "long-float":
        return b"[[0." + b"7" * draw(st.integers(100, 50000)) + b", 0.25]]"
    return draw(st.binary(max_size=200))


bodies = st.one_of(valid_json(), valid_csv(), wrong_json(), mutated(), hostile())
content_types = st.sampled_from(RAW_TYPES + FORM_TYPES)


# --- the check ----------------------------------------------------------------------------


def expected(body: bytes, content_type: str | None, exported: Exported):
    """The codecs' verdict in process: a RequestError, or the parsed request (with
    the served model's budget: the default limits, a SingleTaskGP's independent outputs)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    budget = Budget(exported.input_names, exported.output_names, correlated_outputs=False)
    try:
        return decode_request({"body": body}, headers, budget)
    except RequestError as e:
        return e


def in_process(request, module) -> dict[str, torch.Tensor]:
    """The module's answer to the decoded request: mean, variance and, for a full covariance,
    the covariance (the oracle; a CSV request has neither noise nor a covariance)."""
    X = torch.tensor(request.points, dtype=torch.float64)
    noisy = request.observation_noise
    mean, variance = (module.mean_var_noisy if noisy else module.mean_var)(X)
    answer = {"mean": mean, "variance": variance}
    if request.covariance == "full":
        answer["covariance"] = (module.forward_noisy if noisy else module.forward)(X)[1]
    return answer


def check_answer(response: requests.Response, request, expected: dict[str, torch.Tensor]) -> None:
    mean, variance = expected["mean"], expected["variance"]
    if request.envelope == "csv":
        assert response.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.text)))
        got = torch.tensor([[float(v) for v in row] for row in rows[1:]], dtype=torch.float64)
        assert relative_error(got[:, [0, 2]], mean) <= TOLERANCE
        assert relative_error(got[:, [1, 3]], variance.sqrt()) <= TOLERANCE
        return
    answer = response.json()
    assert relative_error(torch.tensor(answer["mean"], dtype=torch.float64), mean) <= TOLERANCE
    assert (
        relative_error(torch.tensor(answer["variance"], dtype=torch.float64), variance) <= TOLERANCE
    )
    assert ("covariance" in answer) == (request.covariance == "full")
    if request.covariance == "full":
        got = torch.tensor(answer["covariance"], dtype=torch.float64)
        assert relative_error(got, expected["covariance"]) <= TOLERANCE


@pytest.fixture(scope="module")
def pids_before(server: LocalTorchServe) -> list[int]:
    return worker_pids(server)


@settings(
    max_examples=BODIES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
@given(body=bodies, content_type=content_types)
def test_generated_bodies(
    server, exported, module, pids_before, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = requests.post(
        server.predict_url, data=body, headers={**headers, **server.headers()}, timeout=120
    )
    SENT.append(content_type or "")
    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code != 200:
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        error = response.json()
        assert set(error) == {"error", "code"} and error["code"] == response.status_code
    if content_type in FORM_TYPES:
        return  # TorchServe decoded the form itself: no in-process oracle for the message
    verdict = expected(body, content_type, exported)
    if isinstance(verdict, RequestError):
        assert (response.status_code, response.json()["error"]) == (verdict.status, str(verdict))
        return
    oracle = in_process(verdict, module)
    if not all(bool(torch.isfinite(t).all()) for t in oracle.values()):
        # (finite inputs far out: inf - inf in a kernel): the handler's 400
        assert response.status_code == 400, response.text[:500]
        assert response.json()["error"].startswith("the posterior is not finite at points ")
    else:
        assert response.status_code == 200, response.text[:500]
        check_answer(response, verdict, oracle)


def test_every_body_was_sent_and_no_worker_restarted(server, pids_before) -> None:
    assert len(SENT) >= BODIES
    assert worker_pids(server) == pids_before
    assert (
        requests.post(
            server.predict_url, json={"inputs": [[0.5, 0.5]]}, headers=server.headers(), timeout=60
        ).status_code
        == 200
    )
