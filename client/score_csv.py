"""Score a large CSV file against a running gp-serve, in chunks, with a progress bar.

    gp-serve score points.csv -o scores.csv [--name gp]

Memory stays bounded by the chunk size on both sides. See docs/serving.md (step 6).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import requests
from tqdm import tqdm

from gp_serve.serving import auth
from gp_serve.serving.archive import MODEL_NAME
from gp_serve.serving.properties import DEFAULT_CONFIG, ConfigError, address, read_properties

DEFAULT_CHUNK_ROWS = 10_000
TOKEN_VARIABLE = "GP_SERVE_TOKEN"


def default_url(name: str = MODEL_NAME) -> str:
    """Model ``name``'s prediction endpoint on the server this repository configures."""
    return f"{address(read_properties(DEFAULT_CONFIG), 'inference', {})}/predictions/{name}"


class ScoringError(RuntimeError):
    """The server refused a chunk; the message names its first line."""


def _has_header(line: bytes) -> bool:
    cells = line.decode("utf-8-sig").strip().split(",")
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return True
    return False


def _chunks(stream: BinaryIO, rows: int) -> Iterator[tuple[int, bytes | None, list[bytes]]]:
    """Yield ``(first line number, header line or None, data lines)`` per chunk."""
    first = stream.readline()
    header = first if first and _has_header(first) else None
    lines = [] if header is not None else [first]
    start = 2 if header is not None else 1
    for line in stream:
        lines.append(line)
        if len(lines) == rows:
            if any(line.strip() for line in lines):
                yield start, header, lines
            start, lines = start + rows, []
    if any(line.strip() for line in lines):
        yield start, header, lines


def score_csv(
    source: str | os.PathLike,
    target: str | os.PathLike,
    url: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = True,
    headers: dict[str, str] | None = None,
) -> int:
    """Score every row of ``source`` and write ``target`` (CSV with a header).

    Args:
        source: CSV of points, one per row, optional header of input names.
        target: Where to write the scores (overwritten).
        url: The model's prediction endpoint.
        chunk_rows: Rows per request.
        progress: Show a tqdm progress bar (bytes of ``source`` read).
        headers: Sent with every request (the ``Authorization`` header of the inference key).

    Returns:
        The number of rows scored.

    Raises:
        ScoringError: If the server answers a chunk with an error.
    """
    scored = 0
    session = requests.Session()
    size = Path(source).stat().st_size
    with (
        open(source, "rb") as stream,
        open(target, "wb") as out,
        tqdm(total=size, unit="B", unit_scale=True, disable=not progress, desc="scoring") as bar,
    ):
        for start, header, lines in _chunks(stream, chunk_rows):
            body = (header or b"") + b"".join(
                line if line.endswith(b"\n") else line + b"\n" for line in lines
            )
            response = session.post(
                url, data=body, headers={"Content-Type": "text/csv", **(headers or {})}, timeout=600
            )
            if response.status_code != 200:
                raise ScoringError(
                    f"rows from line {start} of {source}: HTTP {response.status_code}: "
                    f"{response.text[:500]} (line numbers in the message count from "
                    "the chunk's first line, header included)"
                )
            answer = response.content
            if scored:
                answer = answer.split(b"\n", 1)[1]
            out.write(answer)
            scored += answer.count(b"\n") - (0 if scored else 1)
            bar.update(stream.tell() - bar.n)
    return scored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The score command's options (``gp-serve score``)."""
    parser.add_argument("source", help="CSV of points (optional header of input names)")
    parser.add_argument("-o", "--output", required=True, help="where to write the scores")
    parser.add_argument(
        "--name", default=MODEL_NAME, help=f"the model to score with (default: {MODEL_NAME})"
    )
    parser.add_argument(
        "--url",
        help="the prediction endpoint (default: the --name model at "
        "inference_address in config.properties)",
    )
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_VARIABLE),
        help="the inference key (default: $GP_SERVE_TOKEN, else the key file "
        f"of a server started by `make start` in {auth.DEFAULT_WORKDIR}/)",
    )


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the options (for ``parser.error``), or None."""
    if args.chunk_rows < 1:
        return f"--chunk-rows: expected a positive integer, got {args.chunk_rows}"
    return None


def run(args: argparse.Namespace) -> int:
    """Score; 1 (``error: ...`` on stderr) if the server or a file fails."""
    try:
        url = args.url or default_url(args.name)
        token = args.token
        if token is None and auth.key_file(auth.DEFAULT_WORKDIR).exists():
            token = auth.read_key(auth.DEFAULT_WORKDIR, "inference")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        rows = score_csv(args.source, args.output, url, args.chunk_rows, not args.quiet, headers)
    except (ScoringError, ConfigError, auth.AuthError, requests.RequestException, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"scored {rows} rows into {args.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gp-serve score``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve score", argv)


if __name__ == "__main__":
    sys.exit(main())
