"""Container entrypoint: TorchServe in the foreground, the JVM receiving the signals.

``torchserve --foreground`` is a Python launcher that starts the Java frontend as a child and
waits; it installs no SIGTERM handler, so ``docker stop`` would either be ignored (as PID 1) or
kill only the launcher. Here the launcher's own code builds the exact Java command line (config,
vmargs, model store, models) and, instead of spawning it, this process ``exec``s it: the JVM
takes this PID, ``tini`` (PID 1) forwards SIGTERM straight to it, the JVM's shutdown hook stops
the workers, and the container exits cleanly.

Usage (the image's ENTRYPOINT): ``entrypoint.py [extra torchserve arguments...]``.
Environment:
  TS_CONFIG_FILE   TorchServe config (default /home/model-server/config.properties)
  MODEL_STORE      model store folder (default /home/model-server/model-store)
  TS_MODELS        models to load at start (default ``all``: every .mar in the store)
  TS_* settings    override config.properties keys (enable_envvars_config=true), e.g.
                   TS_INFERENCE_ADDRESS=http://127.0.0.1:9080
  TEMP, LOG_LOCATION, METRICS_LOCATION
                   TorchServe's tmp and log folders (the Dockerfile puts them in the working
                   directory); created here when missing, as in an empty tmpfs or emptyDir.

TorchServe writes its key file into the working directory, so that must be writable: with
``--read-only``, mount a tmpfs (or a volume) there and on /tmp (see the Dockerfile). TEMP must
also allow exec (below).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from ts import model_server

HOME = "/home/model-server"


def _exec_instead_of_spawn(cmd, *args, **kwargs):
    """Stand-in for ``subprocess.Popen`` in the launcher: become the Java frontend."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)


def main() -> None:
    """Start TorchServe with the container's defaults plus any extra arguments."""
    os.environ.setdefault("TS_CONFIG_FILE", f"{HOME}/config.properties")
    store = os.environ.get("MODEL_STORE", f"{HOME}/model-store")
    models = os.environ.get("TS_MODELS", "all").split()
    if not os.path.isdir(store):
        sys.exit(f"entrypoint: model store {store} is not a folder (mount one with -v)")
    if models == ["all"] and not any(f.endswith(".mar") for f in os.listdir(store)):
        sys.exit(f"entrypoint: no .mar file in the model store {store}")
    cwd = os.getcwd()
    mounts = f"--tmpfs {cwd}:exec,uid={os.getuid()},gid={os.getgid()} --tmpfs /tmp"
    if not os.access(cwd, os.W_OK):
        sys.exit(
            f"entrypoint: the working directory {cwd} is not writable (TorchServe's "
            f"key_file.json, logs and tmp go there): with --read-only, mount a tmpfs or a "
            f"volume on it and on /tmp ({mounts})"
        )
    for variable in ("TEMP", "LOG_LOCATION", "METRICS_LOCATION"):
        if os.environ.get(variable):
            os.makedirs(os.environ[variable], exist_ok=True)
    # The JVM's tmp dir must allow exec: netty loads its native epoll transport from a .so it
    # extracts there. On a noexec mount (Docker's --tmpfs default) it falls back silently, and
    # the workers then listen on TCP 127.0.0.1:9000+ (with --network host the host's loopback,
    # open to any local process, no key) instead of Unix sockets in that folder.
    java_tmp = os.environ.get("TEMP") or "/tmp"
    if os.statvfs(java_tmp).f_flag & os.ST_NOEXEC:
        sys.exit(
            f"entrypoint: {java_tmp} (TEMP, the JVM's tmp dir) is on a noexec mount: "
            f"mount it with exec ({mounts})"
        )
    # A pid file left by an earlier run of this container would only confuse the launcher.
    pid_file = os.path.join(tempfile.gettempdir(), ".model_server.pid")
    if os.path.exists(pid_file):
        os.remove(pid_file)
    sys.argv = [
        "torchserve", "--start", "--foreground", "--ncs",
        "--model-store", store, "--models", *models, *sys.argv[1:],
    ]  # fmt: skip
    subprocess.Popen = _exec_instead_of_spawn  # type: ignore[assignment,misc]
    model_server.start()
    # Only reached when the launcher refused to start (it printed why).
    sys.exit(1)


if __name__ == "__main__":
    main()
