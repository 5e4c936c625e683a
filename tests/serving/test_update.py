"""Model updates against a real TorchServe: ``python -m serving.update`` under load.

A server of the module's own serves model A as ``gp`` 1.0 to clients that check every answer
against A's and B's in-process answers; the failed updates run first, then the update to B.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving import update
from gp_serve.serving.archive import write_model_config
from gp_serve.serving.load import Answer, Request, closed_loop
from gp_serve.serving.local_server import LocalTorchServe
from tests.conftest import REPO
from tests.serving.conftest import Exported, fit_branin_currin, own_server

pytestmark = pytest.mark.server

CLIENTS = 8
LOAD_BEFORE_S = 3.0  # load before the update starts, and after it ends
MAX_LOAD_S = 150.0  # the clients stop by then whatever happens
MAX_REQUESTS = 5000  # per client
REQUEST_TIMEOUT_S = 30.0
# (q, weight): mostly small requests; one in six of 20000 points (~0.3 s of the server's time,
# a 1.6 MB answer), so that the old version still has work queued and in flight when the
# default changes: an unregister that did not wait for it would leave those requests
# unanswered (measured: 7 and 8 of the 8 clients lost one when the drain was skipped).
MIX = [(1, 2), (2, 2), (5, 1), (20000, 1)]
UPDATE_TIMEOUT_S = 240
TOLERANCE = 1e-8


@pytest.fixture(scope="module")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Another fit of the same problem (other seed, 30 points): ``exported``'s inputs and
    outputs, other answers."""
    return fit_branin_currin(tmp_path_factory.mktemp("model_b"), seed=11, points=30)


@pytest.fixture(scope="module")
def served_a(exported: Exported, tmp_path_factory: pytest.TempPathFactory):
    """A TorchServe of its own serving ``exported`` as ``gp`` version 1.0 (2 workers)."""
    with own_server(exported.directory, tmp_path_factory.mktemp("update")) as server:
        yield server


def posterior(artifact: Exported):
    return torch.jit.load(str(artifact.directory / gp_artifact.POSTERIOR_FILE))


@dataclass
class Clients:
    """``count`` clients posting predictions (`MIX`) to ``/predictions/gp`` until stopped.

    Each answer is labelled with the reference (``label -> (module, version)``) whose
    in-process mean and variance it equals (<= 1e-8 relative) and whose version it names;
    anything else (an HTTP error, a timeout, a wrong answer) is a failure.
    """

    server: LocalTorchServe
    references: dict[str, tuple[object, str]]
    bounds: list[list[float]]
    count: int = CLIENTS
    pause_s: float = 0.0  # between a client's requests
    seen: list[list[tuple[float, str, float]]] = field(default_factory=list)  # (t, label, s)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.seen = [[] for _ in range(self.count)]
        self.thread = threading.Thread(target=self._load, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=REQUEST_TIMEOUT_S + 10)
        assert not self.thread.is_alive(), "a client hung past its timeout"

    @property
    def requests(self) -> int:
        return sum(map(len, self.seen)) + len(self.failures)

    def labels(self, index: int) -> list[str]:
        """Client ``index``'s labels with repeats collapsed (``["A", "B"]``: one switch)."""
        runs: list[str] = []
        for _, label, _ in self.seen[index]:
            if not runs or runs[-1] != label:
                runs.append(label)
        return runs

    def _load(self) -> None:
        result = closed_loop(
            self.server.predict_url,
            self._bodies,
            self.count,
            MAX_LOAD_S,
            self._check,
            requests=MAX_REQUESTS,
            stop=self.stop,
            headers=self.server.headers("inference"),
            pause_s=self.pause_s,
            timeout=REQUEST_TIMEOUT_S,
        )
        self.failures = result.errors

    def _bodies(self, index: int) -> Iterator[Request]:
        """Client ``index``'s requests: drawn from a pool of one body per `MIX` size, each with
        every reference's answer."""
        rng, pool = random.Random(index), []
        for q, _ in MIX:
            X = torch.tensor(
                [[rng.uniform(lo, hi) for lo, hi in self.bounds] for _ in range(q)],
                dtype=torch.float64,
            )
            expected = {
                label: (tuple(t.detach() for t in module.mean_var(X)), version)
                for label, (module, version) in self.references.items()
            }
            pool.append(
                Request(
                    json.dumps({"inputs": X.tolist(), "covariance": "diag"}).encode(),
                    expected=expected,
                )
            )
        weights = [weight for _, weight in MIX]
        while True:
            yield rng.choices(pool, weights)[0]

    def _check(self, answer: Answer, request: Request) -> str | None:
        label = self._label(answer.json(), request.expected)
        if label is None:
            return f"an answer equal to no reference: {answer.text[:200]}"
        self.seen[answer.client].append((answer.arrived, label, answer.elapsed))
        return None

    @staticmethod
    def _label(answer: dict, expected: dict) -> str | None:
        for label, ((mean, variance), version) in expected.items():
            if answer.get("version") != version:
                continue
            got_mean = torch.tensor(answer["mean"], dtype=torch.float64)
            got_variance = torch.tensor(answer["variance"], dtype=torch.float64)
            if (
                update.relative_error(got_mean, mean) <= TOLERANCE
                and update.relative_error(got_variance, variance) <= TOLERANCE
            ):
                return label
        return None


def run_update(
    server: LocalTorchServe, model_dir: Path, *extra: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.update",
            "--model-dir",
            str(model_dir),
            "--workdir",
            str(server.workdir),
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=UPDATE_TIMEOUT_S + 60,
        check=False,
    )


def registered(server: LocalTorchServe) -> tuple[list[str], list[str]]:
    """(the model names listed, ``gp``'s registered versions), from the management API."""
    headers = server.headers("management")
    models = requests.get(f"{server.management_url}/models", headers=headers, timeout=30)
    versions = requests.get(f"{server.management_url}/models/gp/all", headers=headers, timeout=30)
    models.raise_for_status()
    versions.raise_for_status()
    return (
        [m["modelName"] for m in models.json()["models"]],
        sorted(v["modelVersion"] for v in versions.json()),
    )


def step_time(stdout: str, step: str) -> float:
    """The ``+<s>`` the update printed for the step starting with ``step``."""
    match = re.search(r"\[update \+\s*([\d.]+)s\] " + re.escape(step), stdout)
    assert match, f"no {step!r} step in:\n{stdout}"
    return float(match.group(1))


def drained(stdout: str) -> float:
    """The seconds the update waited for the old version to go idle."""
    match = re.search(r"idle \(drained in ([\d.]+) s\)", stdout)
    assert match, stdout
    return float(match.group(1))


def test_a_failed_update_leaves_the_old_version_serving(
    served_a: LocalTorchServe,
    exported: Exported,
    model_b: Exported,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    assert registered(served_a) == (["gp"], ["1.0"])
    module_a = posterior(exported)
    bounds = gp_artifact.load_metadata(exported.directory).input_bounds
    clients = Clients(served_a, {"A": (module_a, "1.0")}, bounds, count=2, pause_s=0.02)
    clients.start()
    try:
        # Workers that cannot load (a handler setting it refuses): the command says why,
        # unregisters the new version and leaves A the default.
        broken = write_model_config(tmp_path / "model-config-broken.yaml", {"chunk_rows": "many"})
        run = run_update(served_a, model_b.directory, "--model-config", str(broken))
        print(f"\n{run.stdout}{run.stderr}")
        assert run.returncode == 1, run.stdout + run.stderr
        assert run.stderr.startswith(
            "error: update failed: a worker of version 2.0 failed to load: ValueError: invalid "
            "literal for int() with base 10: 'many'"
        ), run.stderr
        assert "rolled back: version 1.0 is the default, version 2.0 unregistered" in run.stderr
        assert registered(served_a) == (["gp"], ["1.0"])

        # Answers that differ from the artifact's in-process ones (its reference swapped for
        # A's): the equality check fails after registration, the new version is removed.
        monkeypatch.setattr(update, "load_reference", lambda directory, metadata: module_a)
        code = update.main(
            ["--model-dir", str(model_b.directory), "--workdir", str(served_a.workdir)]
        )
        monkeypatch.undo()
        out = capsys.readouterr()
        print(f"{out.out}{out.err}")
        assert code == 1, out.out + out.err
        assert "mean differs from the artifact's in-process answer by" in out.err, out.err
        assert "rolled back: version 1.0 is the default, version 2.0 unregistered" in out.err
        assert registered(served_a) == (["gp"], ["1.0"])

        # A foreign artifact (A's posterior.pt with B's metadata.json): refused before
        # anything is registered.
        foreign = tmp_path / "foreign"
        shutil.copytree(model_b.directory, foreign)
        shutil.copy(exported.directory / gp_artifact.POSTERIOR_FILE, foreign)
        code = update.main(["--model-dir", str(foreign), "--workdir", str(served_a.workdir)])
        out = capsys.readouterr()
        print(f"{out.out}{out.err}")
        assert code == 2, out.out + out.err
        assert "the file was changed after export" in out.err
        assert out.err.rstrip().endswith("(nothing changed)"), out.err
    finally:
        clients.finish()
    print(
        f"[update] rollbacks under {clients.count} clients: {clients.requests} requests, "
        f"{len(clients.failures)} failed"
    )
    assert clients.failures == [], clients.failures[:10]
    assert all(clients.labels(i) == ["A"] for i in range(clients.count))
    assert registered(served_a) == (["gp"], ["1.0"])
    assert sorted(p.name for p in served_a.model_store.iterdir()) == ["gp.mar"]


def test_an_update_under_load_fails_no_request(
    served_a: LocalTorchServe, exported: Exported, model_b: Exported
) -> None:
    assert registered(served_a) == (["gp"], ["1.0"])
    bounds = gp_artifact.load_metadata(exported.directory).input_bounds
    clients = Clients(
        served_a, {"A": (posterior(exported), "1.0"), "B": (posterior(model_b), "2.0")}, bounds
    )
    clients.start()
    try:
        time.sleep(LOAD_BEFORE_S)
        started = time.monotonic()
        run = run_update(served_a, model_b.directory)
        ended = time.monotonic()
        time.sleep(LOAD_BEFORE_S)
    finally:
        clients.finish()
    print(f"\n{run.stdout}{run.stderr}")
    assert run.returncode == 0, run.stdout + run.stderr + served_a.log_tail()

    answers = sorted(entry for seen in clients.seen for entry in seen)
    times = {label: [t for t, seen, _ in answers if seen == label] for label in "AB"}
    # The longest any client waited between its last A answer and its first B answer.
    gaps = [
        min(t for t, label, _ in seen if label == "B")
        - max(t for t, label, _ in seen if label == "A")
        for seen in clients.seen
        if {label for _, label, _ in seen} == {"A", "B"}
    ]
    latencies = sorted(elapsed for _, _, elapsed in answers) or [0.0]
    during = [n for t, _, n in answers if started <= t <= ended]
    print(
        f"[update] {clients.count} clients, {clients.requests} requests ({len(during)} while "
        f"the command ran), {len(clients.failures)} failed; the command took "
        f"{ended - started:.1f} s (set-default at +{step_time(run.stdout, 'set-default')} s, "
        f"old version drained in {drained(run.stdout):.1f} s); last A answer "
        f"{max(times['A'], default=0) - min(times['B'], default=0):+.3f} s after the first B "
        f"answer; longest gap of a client at the switch {max(gaps, default=0):.3f} s; latency "
        f"p50 {latencies[len(latencies) // 2] * 1e3:.0f} ms, p99 "
        f"{latencies[int(0.99 * len(latencies))] * 1e3:.0f} ms, max {latencies[-1]:.2f} s"
    )
    assert clients.failures == [], clients.failures[:10]
    for index in range(clients.count):  # A's answers, then B's: one switch, never back
        assert clients.labels(index) == ["A", "B"], (index, clients.labels(index))
    assert registered(served_a) == (["gp"], ["2.0"])
