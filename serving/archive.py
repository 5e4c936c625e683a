"""The archive recipe: an exported artifact plus the handler, packaged as a TorchServe ``.mar``.

    gp-serve archive --model-dir build/model --store model_store [--name gp]

The one place that knows torch-model-archiver's arguments. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import gp_serve
from gp_serve import handler as handler_package
from gp_serve.handler import gp_artifact

HANDLER_DIR = Path(handler_package.__file__).resolve().parent
# The file TorchServe loads (one thin class); it imports the rest as gp_serve.handler.*.
HANDLER = HANDLER_DIR / "gp_handler.py"
MODEL_CONFIG = HANDLER_DIR / "model-config.yaml"
MODEL_NAME = "gp"


def write_model_config(path: str | Path, handler: dict | None = None, **settings: object) -> Path:
    """The repository's ``model-config.yaml`` with top-level ``settings`` (``minWorkers``,
    ``batchSize``, ...) and ``handler`` settings (``format``, ``torch_threads``, ...)
    replaced, written to ``path`` (for `build_archive`'s ``model_config``).

    Returns:
        ``path``.
    """
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    config.update(settings)
    config["handler"].update(handler or {})
    path = Path(path)
    path.write_text(yaml.safe_dump(config))
    return path


def build_archive(
    model_dir: str | Path,
    store: str | Path,
    name: str = MODEL_NAME,
    model_config: str | Path = MODEL_CONFIG,
    version: str = "1.0",
) -> Path:
    """Package an exported artifact with the handler into ``<store>/<name>.mar``.

    The artifact is checked against its contract first, so a truncated or foreign one,
    or one whose posterior files differ from the SHA-256 its metadata records (changed
    after export), is refused here rather than by a worker at load time.

    Every posterior file the artifact holds is packaged (``posterior.pt`` as the serialized
    file, ``posterior.pt2`` and ``posterior.onnx`` beside it); ``model_config``'s
    ``handler.format`` says which one the handler serves, and must be among them.

    Args:
        model_dir: Holds ``posterior.pt`` and ``metadata.json`` (``export_model``'s output),
            and the other formats it was exported in.
        store: The model store to write to (created if missing).
        name: The model name TorchServe serves it under.
        model_config: The ``model-config.yaml`` (workers, batching, handler limits).
        version: The model version TorchServe reports.

    Returns:
        The archive's path.

    Raises:
        gp_artifact.ArtifactError: If the artifact breaks the contract, a posterior file is
            not the one exported, or the artifact lacks the format ``model_config`` names.
        subprocess.CalledProcessError: If torch-model-archiver fails.
    """
    model_dir, store = Path(model_dir), Path(store)
    metadata = gp_artifact.load_metadata(model_dir)
    posterior = gp_artifact.verify_posterior(model_dir, gp_artifact.DEFAULT_FORMAT, metadata)
    served = served_format(model_config)
    if served not in metadata.formats:
        raise gp_artifact.ArtifactError(
            f"{model_config}: handler.format is {served!r}, but {model_dir} was exported in "
            f"{metadata.formats} only; export with --format {gp_artifact.DEFAULT_FORMAT},{served}"
        )
    others = [
        gp_artifact.verify_posterior(model_dir, fmt, metadata)
        for fmt in metadata.formats
        if fmt != gp_artifact.DEFAULT_FORMAT
    ]
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gp-serve-archive-") as staging:
        # torch-model-archiver copies a folder's contents to the archive's root.
        package = stage_serving_package(Path(staging))
        extra = [model_dir / gp_artifact.METADATA_FILE, *others, package]
        subprocess.run(
            [
                str(Path(sys.executable).with_name("torch-model-archiver")),
                "--model-name", name, "--version", version, "--force",
                "--serialized-file", posterior, "--handler", str(HANDLER),
                "--extra-files", ",".join(map(str, extra)),
                "--config-file", str(model_config), "--export-path", str(store),
            ],
            check=True,
            timeout=600,
        )  # fmt: skip
    return store / f"{name}.mar"


def stage_serving_package(staging: Path) -> Path:
    """Copy the serving side into ``<staging>/package/gp_serve/`` as the archive ships it.

    ``gp_serve/__init__.py`` (lazy: it imports nothing from the export stage) and the whole
    ``gp_serve/handler/`` folder, its subpackages (``codecs/``) included; no ``__pycache__``,
    no ``model-config.yaml`` (TorchServe reads that from ``--config-file``).

    Returns:
        ``<staging>/package``, the folder whose contents go to the archive's root.
    """
    root = staging / "package"
    (root / "gp_serve").mkdir(parents=True)
    shutil.copy2(Path(gp_serve.__file__), root / "gp_serve" / "__init__.py")
    shutil.copytree(
        HANDLER_DIR,
        root / "gp_serve" / "handler",
        ignore=shutil.ignore_patterns("__pycache__", MODEL_CONFIG.name),
    )
    return root


def served_format(model_config: str | Path) -> str:
    """The format ``model-config.yaml``'s ``handler.format`` names (default TorchScript).

    Raises:
        gp_artifact.ArtifactError: If it names no known format.
    """
    settings = (yaml.safe_load(Path(model_config).read_text()) or {}).get("handler") or {}
    served = settings.get("format", gp_artifact.DEFAULT_FORMAT)
    if served not in gp_artifact.FORMAT_FILES:
        raise gp_artifact.ArtifactError(
            f"{model_config}: handler.format: expected one of {sorted(gp_artifact.FORMAT_FILES)}, "
            f"got {served!r}"
        )
    return served


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The archive command's options (``gp-serve archive``)."""
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="the exported artifact (posterior.pt, metadata.json)",
    )
    parser.add_argument(
        "--store",
        required=True,
        type=Path,
        help="the model store to write <name>.mar to (created if missing)",
    )
    parser.add_argument(
        "--name",
        default=MODEL_NAME,
        help=f"the model name TorchServe serves it under (default: {MODEL_NAME})",
    )
    parser.add_argument(
        "--model-config",
        default=MODEL_CONFIG,
        type=Path,
        help="the model-config.yaml (workers, batching, handler limits)",
    )
    parser.add_argument("--version", default="1.0", help="the model version (default: 1.0)")


def run(args: argparse.Namespace) -> int:
    """Build the archive; 2 (``error: ...`` on stderr) if the artifact is refused."""
    try:
        path = build_archive(args.model_dir, args.store, args.name, args.model_config, args.version)
    except gp_artifact.ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gp-serve archive``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve archive", argv)


if __name__ == "__main__":
    sys.exit(main())
