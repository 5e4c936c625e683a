"""gp-serve: export a fitted BoTorch model's posterior, archive it, serve it with TorchServe.

    gp-serve export --out build/model
    gp-serve archive --model-dir build/model --store model_store
    gp-serve start && gp-serve describe --name gp && gp-serve stop

`gp-serve COMMAND --help` shows a command's options and examples; docs/export.md and
docs/serving.md explain the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gp_serve

if TYPE_CHECKING:  # (imported where used: `gp-serve --help` imports no command's modules)
    from gp_serve.handler.gp_artifact import Metadata

PROG = "gp-serve"


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose ``add_arguments(parser)`` and ``run(args) -> int`` (and,
    where options depend on each other, ``check_args(args) -> str | None``) it runs.

    Attributes:
        module: The defining module, imported when the command runs.
        summary: One line, for ``gp-serve --help``.
        examples: Command lines for the command's ``--help``.
        defaults: Set on the parsed arguments (``action`` for serve, start and stop).
        prefix: Of the three function names (the commands defined in this module).
        extra: The pyproject extra whose packages the module imports (named when missing).
    """

    module: str
    summary: str
    examples: tuple[str, ...]
    defaults: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    extra: str = "serve"

    def function(self, name: str) -> Callable[..., Any]:
        """The module's function ``prefix + name`` (``add_arguments``, ``run``).

        Raises:
            AttributeError: If the module does not define it.
        """
        return getattr(import_module(self.module), self.prefix + name)

    def optional(self, name: str) -> Callable[..., Any] | None:
        """The module's function ``prefix + name`` (``check_args``), or None if it has none."""
        return getattr(import_module(self.module), self.prefix + name, None)


_LOCAL_SERVER = "gp_serve.serving.local_server"
COMMANDS = {
    "export": Command(
        "gp_serve.export.cli",
        "fit or load a BoTorch model and export its posterior",
        (
            "gp-serve export --out build/model",
            "gp-serve export --data train.csv --outputs y1,y2 --model list --out build/model",
            "gp-serve export --model-file model.pth --inputs x1,x2 --out build/model "
            "--format torchscript,onnx",
        ),
        extra="",
    ),
    "archive": Command(
        "gp_serve.serving.archive",
        "package an artifact and the handler as <store>/<name>.mar",
        (
            "gp-serve archive --model-dir build/model --store model_store",
            "gp-serve archive --model-dir build/other --store model_store --name other",
        ),
    ),
    "serve": Command(
        _LOCAL_SERVER,
        "run TorchServe on the store's models (Ctrl-C stops it)",
        (
            "gp-serve serve",
            "gp-serve serve --model-store model_store --models gp,other",
            "gp-serve serve --config my-config.properties --workdir /tmp/gp-serve",
        ),
        {"action": "serve"},
    ),
    "start": Command(
        _LOCAL_SERVER,
        "start TorchServe in the background; wait for every model",
        ("gp-serve start", "gp-serve start --models gp,other --workdir logs"),
        {"action": "start"},
    ),
    "stop": Command(
        _LOCAL_SERVER,
        "stop the TorchServe started in --workdir",
        ("gp-serve stop", "gp-serve stop --workdir /tmp/gp-serve"),
        {"action": "stop"},
    ),
    "describe": Command(
        __name__,
        "show what an artifact, a .mar or a running model holds",
        (
            "gp-serve describe build/model",
            "gp-serve describe model_store/gp.mar --json",
            "gp-serve describe --name gp --workdir logs",
            "gp-serve describe --url http://127.0.0.1:8081 --name other",
        ),
        prefix="describe_",
        extra="",
    ),
    "score": Command(
        "gp_serve.client.score_csv",
        "score a CSV of points against a running model, in chunks",
        (
            "gp-serve score points.csv -o scores.csv",
            "gp-serve score points.csv -o scores.csv --name other --chunk-rows 5000",
            "gp-serve score points.csv -o scores.csv --url http://127.0.0.1:8080/predictions/gp "
            '--token "$TOKEN"',
        ),
        extra="client",
    ),
    "token": Command(
        "gp_serve.serving.auth",
        "print the running server's inference or management key",
        ("gp-serve token", "gp-serve token --workdir logs management"),
    ),
    "update": Command(
        "gp_serve.serving.update",
        "serve a new artifact as a model's next version, no failures",
        (
            "gp-serve update --model-dir build/model-v2",
            "gp-serve update --model-dir build/model-v2 --name gp --version 3.0 --workdir logs",
        ),
    ),
    "kserve-layout": Command(
        "gp_serve.serving.kserve_layout",
        "write the storage layout KServe mounts at /mnt/models",
        (
            "gp-serve kserve-layout --out build/kserve-layout",
            "gp-serve kserve-layout --mar model_store/gp.mar --out build/kserve-layout",
        ),
    ),
    "soak": Command(
        "gp_serve.serving.soak",
        "mixed loopback load on a fresh TorchServe, with a report",
        ("gp-serve soak --seconds 60", "gp-serve soak --clients 16 --model-dir build/model"),
    ),
}


def build_parser(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The ``gp-serve`` parser, with the options of ``command`` only (its module imported).

    Returns:
        The parser and ``command``'s subparser (None without a command).
    """
    width = max(map(len, COMMANDS)) + 2
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<{width}}{spec.summary}" for name, spec in COMMANDS.items()),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {gp_serve.__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help="one of the commands below"
    )
    chosen = None
    for name, spec in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            description=spec.summary[0].upper() + spec.summary[1:] + ".",
            epilog="examples:\n" + "\n".join(f"  {line}" for line in spec.examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == command:
            spec.function("add_arguments")(sub)
            sub.set_defaults(**spec.defaults)
            chosen = sub
    return parser, chosen


def module_main(
    module_name: str, prog: str, argv: list[str] | None = None, description: str | None = None
) -> int:
    """A command's module run on its own (``python -m gp_serve.serving.archive``): its
    ``add_arguments``, ``check_args`` (if any) and ``run``, as ``gp-serve`` runs them.

    Args:
        module_name: The module (``__name__`` of the caller; ``__main__`` under ``-m``).
        prog: The name its usage shows.
        argv: The arguments (default ``sys.argv[1:]``).
        description: The help's description (default: the module's docstring).
    """
    module = sys.modules[module_name]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    check = getattr(module, "check_args", None)
    problem = check(args) if check is not None else None
    if problem:
        parser.error(problem)
    return module.run(args)


def main(argv: list[str] | None = None) -> int:
    """``gp-serve COMMAND [options]``: the command's exit status (2 for bad usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The first word that is not an option names the command (gp-serve's own options take
    # no value); only that command's module is imported.
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    command = word if word in COMMANDS else None
    try:
        parser, sub = build_parser(command)
    except ModuleNotFoundError as e:  # (a plain `pip install gp-serve` has no TorchServe)
        if command is None:  # (without a command, no command's module is imported)
            raise
        extra = COMMANDS[command].extra
        part = f"gp-serve's [{extra}] extra" if extra else "a dependency of gp-serve"
        print(
            f"error: {PROG} {command} needs the package {e.name!r} ({part}), which is not "
            f"installed here: pip install '<gp-serve checkout>[{extra or 'serve'}]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    spec = COMMANDS[args.command]
    check = spec.optional("check_args")
    problem = check(args) if check is not None else None
    if problem:
        # (parse_args accepted a command, so it is the first word: build_parser made its sub)
        assert sub is not None
        sub.error(problem)
    try:
        return spec.function("run")(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # (its reader stopped early: `gp-serve describe DIR | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# --- gp-serve describe -------------------------------------------------------------------

_MANIFEST = "MAR-INF/MANIFEST.json"


class DescribeError(RuntimeError):
    """The running model could not be described; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def describe_add_arguments(parser: argparse.ArgumentParser) -> None:
    """The describe command's options."""
    from gp_serve.serving.auth import DEFAULT_WORKDIR

    parser.add_argument(
        "artifact",
        nargs="?",
        type=Path,
        help="an exported artifact folder (metadata.json) or a model archive (.mar)",
    )
    parser.add_argument("--name", help="a model of the running TorchServe (default with --url: gp)")
    parser.add_argument(
        "--url", help="the running TorchServe's management API address (default: from its config)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(DEFAULT_WORKDIR),
        help="the running TorchServe's working directory: its keys, and its "
        f"config (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="its TorchServe config (default: <workdir>/ts-config.properties, "
        "which gp-serve start writes, else the repository's config.properties)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the JSON itself: metadata.json, or the management API's "
        "answer (its customizedMetadata decoded)",
    )


def describe_check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the options (for ``parser.error``), or None."""
    running = args.name is not None or args.url is not None
    if args.artifact is not None and running:
        return (
            f"expected an artifact or --name/--url of a running model, got both "
            f"({args.artifact} and --{'name' if args.name is not None else 'url'})"
        )
    if args.artifact is None and not running:
        return "expected an artifact folder or .mar, or --name/--url of a running model"
    return None


def describe_run(args: argparse.Namespace) -> int:
    """Print the description. Exit status 2 for an artifact (or config) refused, 1 if the
    running model cannot be described."""
    from gp_serve.handler import gp_artifact

    if args.artifact is not None:
        try:
            heading, metadata = _artifact(args.artifact)
        except gp_artifact.ArtifactError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(
            json.dumps(metadata.document, indent=2)
            if args.json
            else "\n".join([heading, *_describe(metadata.document)])
        )
        return 0
    try:
        url, answer = _served(args)
        document = answer[0]["customizedMetadata"]
        metadata = gp_artifact.validate(document)
    except DescribeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status
    except (gp_artifact.ArtifactError, KeyError, IndexError, TypeError) as e:
        print(
            f"error: GET {url}: expected a gp-serve model's description, got "
            f"{type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    entry = answer[0]
    workers = [worker.get("status", "?") for worker in entry.get("workers", [])]
    print(
        "\n".join(
            [
                f"model {entry.get('modelName')} version {entry.get('modelVersion')} at {url}",
                f"workers: {len(workers)} ({', '.join(workers) or 'none'}), "
                f"min {entry.get('minWorkers')}"
                f", max {entry.get('maxWorkers')}; batch size {entry.get('batchSize')}, max batch "
                f"delay {entry.get('maxBatchDelay')} ms",
                *_describe(metadata.document),
                "serving:",
                *(f"  {key}: {value}" for key, value in (document.get("serving") or {}).items()),
            ]
        )
    )
    return 0


def _artifact(path: Path) -> tuple[str, Metadata]:
    """``(heading, metadata)`` of an artifact folder or a ``.mar``.

    Raises:
        gp_artifact.ArtifactError: If it is neither, or its metadata is refused.
    """
    from gp_serve.handler import gp_artifact

    if path.is_dir():
        return f"artifact {path}", gp_artifact.load_metadata(path)
    if not path.is_file():
        raise gp_artifact.ArtifactError(
            f"{path}: expected an artifact folder or a model "
            "archive (.mar), got no such file or folder"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            text = (
                archive.read(gp_artifact.METADATA_FILE)
                if gp_artifact.METADATA_FILE in names
                else None
            )
            manifest = json.loads(archive.read(_MANIFEST)) if _MANIFEST in names else {}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise gp_artifact.ArtifactError(
            f"{path}: expected an artifact folder or a model archive (.mar, a zip file), got "
            f"{type(e).__name__}: {e}"
        ) from e
    if text is None:
        raise gp_artifact.ArtifactError(
            f"{path}: expected a gp-serve model archive with {gp_artifact.METADATA_FILE} at "
            f"its root, got {sorted(names)[:10]}"
        )
    metadata = gp_artifact.parse_metadata(text, f"{path}:{gp_artifact.METADATA_FILE}")
    model = manifest.get("model") or {}
    heading = f"archive {path}"
    if model:
        heading += f": model {model.get('modelName')} version {model.get('modelVersion')}"
    return heading, metadata


def _served(args: argparse.Namespace) -> tuple[str, list]:
    """``(url, answer)``: the management API's describe of ``args.name`` (default ``gp``).

    Raises:
        DescribeError: If the config or the key cannot be read (status 2 and 1), or the
            server does not answer 200 (status 1).
    """
    import requests

    from gp_serve.serving import auth
    from gp_serve.serving.archive import MODEL_NAME
    from gp_serve.serving.local_server import CONFIG_FILE, describe_model
    from gp_serve.serving.properties import DEFAULT_CONFIG, ConfigError, address, read_properties

    instance = args.workdir / CONFIG_FILE
    config = args.config or (instance if instance.is_file() else DEFAULT_CONFIG)
    try:
        properties = read_properties(config)
        base = args.url.rstrip("/") if args.url else address(properties, "management", {})
    except ConfigError as e:
        raise DescribeError(str(e), status=2) from e
    name = args.name or MODEL_NAME
    url = f"{base}/models/{name}"
    try:
        headers = auth.headers(args.workdir, "management") if auth.enabled(properties) else {}
        answer = describe_model(base, name, headers, timeout=30)
    except auth.AuthError as e:
        raise DescribeError(str(e)) from e
    except requests.HTTPError as e:
        response = e.response
        if response is None:  # (raise_for_status always attaches the response)
            raise DescribeError(f"GET {url}: {e}") from e
        raise DescribeError(f"GET {url}: HTTP {response.status_code}: {response.text[:300]}") from e
    except ValueError as e:  # (before RequestException: requests' JSON errors are both)
        raise DescribeError(f"GET {url}: {e}") from e
    except requests.RequestException as e:
        raise DescribeError(
            f"GET {url}: {type(e).__name__}: {e}; is TorchServe running there (gp-serve start)?"
        ) from e
    return url, answer


def _describe(document: dict[str, Any]) -> list[str]:
    """The lines describing a ``metadata.json`` document (validated)."""
    from gp_serve.handler import gp_artifact

    inputs, outputs = document["input_names"], document["output_names"]
    family = [document.get("model_class", "a GP (model class not recorded)")]
    if "correlated_outputs" in document:
        family.append(
            "correlated outputs" if document["correlated_outputs"] else "independent outputs"
        )
    samples = document.get("mixture_samples", 1)
    if samples > 1:
        family.append(f"a mixture over {samples} MCMC samples")
    width = max(map(len, inputs))
    lines = [
        f"model class: {', '.join(family)}; {document['num_train']} training points",
        f"inputs ({len(inputs)}), with their training bounds:",
        *(
            f"  {name:<{width}}  [{lower:.6g}, {upper:.6g}]"
            for name, (lower, upper) in zip(inputs, document["input_bounds"], strict=True)
        ),
        f"outputs ({len(outputs)}): {', '.join(outputs)}",
        f"covariance layout: {document['covariance_layout']} (entry t*q + i of the "
        "(q*m) x (q*m) covariance is output t at point i)",
        "formats:",
    ]
    formats = document.get("formats") or {gp_artifact.DEFAULT_FORMAT: {}}
    for fmt, entry in formats.items():
        entry = entry or {}
        sha = entry.get("sha256")
        error = entry.get("max_relative_error")
        lines.append(
            f"  {fmt:<11}  {entry.get('file', gp_artifact.FORMAT_FILES[fmt])}  "
            + (f"sha256 {sha}" if sha else "sha256 not recorded")
            + (f"  (gate: max relative error {error:.3g})" if error is not None else "")
        )
    tolerance = (document.get("gate") or {}).get("tolerance")
    if tolerance is not None:
        lines.append(f"gate tolerance: {tolerance:g} (relative error against eager BoTorch)")
    versions = document.get("versions") or {}
    lines.append(
        "versions: "
        + (", ".join(f"{name} {version}" for name, version in versions.items()) or "not recorded")
    )
    if "created_at" in document:
        lines.append(f"exported: {document['created_at']}")
    if "data_sha256" in document:
        lines.append(f"data sha256: {document['data_sha256']}")
    return lines
