# gp-serve: the default GP model (BraninCurrin) baked into a TorchServe image.
#
#   docker build -t gp-serve .                      # normal internet: PyPI + PyTorch's CPU index
#   make docker-image                               # offline: local base + docker/wheelhouse/
#   docker run --rm -p 127.0.0.1:8080:8080 gp-serve
#
# Works FROM the official python:3.11-slim-bookworm or any plain Debian bookworm base (e.g. one
# made with debootstrap): Debian's python3 (3.11) is installed when the base has none.
# Kept to the classic builder's feature set (no RUN --mount, no heredocs, no syntax directive,
# which would make BuildKit pull a frontend image).

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- python: an interpreter on the chosen base ---------------------------------------------
FROM ${BASE_IMAGE} AS python
# Debian bookworm's python3 3.11, used only when the base image has no python3.
ARG DEBIAN_PYTHON_VERSION=3.11.2-1+b1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "python3=${DEBIAN_PYTHON_VERSION}" "python3-venv=${DEBIAN_PYTHON_VERSION}" \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi \
    && python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'

# --- serve-venv: the runtime Python environment (torch CPU + TorchServe only) -----------------
FROM python AS serve-venv
# Used only when docker/wheelhouse/ is empty (plain `docker build .` with normal internet).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV TORCH_INDEX_URL=${TORCH_INDEX_URL}
COPY docker/pip-install.sh /usr/local/bin/pip-install
COPY docker/wheelhouse/ /wheelhouse/
COPY requirements-serve.txt requirements-uv.txt /src/
RUN pip-install /opt/venv /src/requirements-serve.txt
# gp-serve itself, without its dependencies: the serving side needs only the pins above (the
# export stage's BoTorch is imported lazily, never by serving); `pip check` is not rerun, as it
# would name the BoTorch the image leaves out on purpose.
COPY pyproject.toml README.md config.properties /src/pkg/
COPY gp_serve/ /src/pkg/gp_serve/
COPY export/ /src/pkg/export/
COPY handler/ /src/pkg/handler/
COPY serving/ /src/pkg/serving/
COPY client/ /src/pkg/client/
RUN /opt/venv/bin/python -m pip install --no-cache-dir --no-deps --no-build-isolation /src/pkg \
    && rm -rf /src/pkg/build \
    && /opt/venv/bin/gp-serve --help >/dev/null

# --- serve-venv-slim: the same, less what serving never loads (about 190 MB) ---------------------
# torch's C++ headers, its C++ test binaries and protoc: only for building extensions or torch
# itself. TorchScript loading and inference need none of them (the image's tests prove it).
FROM serve-venv AS serve-venv-slim
RUN torch=/opt/venv/lib/python3.11/site-packages/torch \
    && rm -rf "$torch"/include "$torch"/test "$torch"/bin/test_* "$torch"/bin/*Test "$torch"/bin/protoc* \
    && /opt/venv/bin/python -c 'import torch; torch.jit.script(torch.nn.Linear(2, 1))(torch.ones(1, 2))'

# --- build: export the default model and archive it (full requirements, make) ---------------
FROM serve-venv AS build
ARG MAKE_VERSION=4.3-4.1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "make=${MAKE_VERSION}" \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
WORKDIR /src
COPY requirements.txt requirements-serve.txt requirements-dev.txt ./
RUN pip-install /opt/venv requirements.txt
COPY Makefile pyproject.toml ./
COPY export/ export/
COPY handler/ handler/
COPY serving/ serving/
# `make archive` exactly as outside Docker, with /opt/venv standing in for .venv (marked as
# installed, so make does not reinstall; gp-serve is installed there): exports build/model,
# writes model_store/gp.mar.
RUN mkdir -p model_store \
    && touch /opt/venv/.installed \
    && make archive VENV=/opt/venv \
    && test -s model_store/gp.mar
COPY config.properties docker/container-config.sh ./
RUN bash container-config.sh config.properties /src/container-config.properties

# --- runtime ---------------------------------------------------------------------------------
FROM python AS runtime
ARG OPENJDK_VERSION=17.0.21.1+2-1~deb12u1
ARG TINI_VERSION=0.19.0-1+b3
# The man1 folder: openjdk's postinst registers java.1.gz there (missing in slim images).
# Debian replaces openjdk's version with each quarterly security update and drops the old one:
# the build then stops here, naming the version to put in OPENJDK_VERSION (an empty value takes
# whatever bookworm has, unpinned).
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "openjdk-17-jre-headless${OPENJDK_VERSION:+=${OPENJDK_VERSION}}" \
            "tini${TINI_VERSION:+=${TINI_VERSION}}"; then \
        apt-cache policy openjdk-17-jre-headless tini; \
        echo "pinned OPENJDK_VERSION=${OPENJDK_VERSION} / TINI_VERSION=${TINI_VERSION} not in the" \
             "archive: set the build args to the candidates above" >&2; \
        exit 1; \
    fi \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
    && java -version
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/model-server \
        --shell /usr/sbin/nologin model-server
COPY --from=serve-venv-slim /opt/venv /opt/venv
# The entrypoint (the healthcheck is gp-serve's, installed in /opt/venv).
COPY docker/entrypoint.py /opt/gp-serve/
COPY --from=build /src/container-config.properties /home/model-server/config.properties
COPY --from=build --chown=1000:1000 /src/model_store/gp.mar /home/model-server/model-store/gp.mar
# Everything TorchServe writes goes to two folders, so the image runs with a read-only root
# filesystem (`docker run --read-only --tmpfs /tmp`
# `--tmpfs /home/model-server/work:exec,uid=1000,gid=1000`, docs/docker.md; the
# ServingRuntime's emptyDirs), measured with `docker diff` on a writable run:
# - /home/model-server/work, the JVM's working directory (WORKDIR): key_file.json (token
#   authorization), logs/ (LOG_LOCATION, METRICS_LOCATION), tmp/ (TEMP: java.io.tmpdir and
#   Python's tempfile: the extracted .mar files, the workers' Unix sockets, netty's native
#   transport, which needs exec there); the entrypoint creates logs/ and tmp/ in an empty
#   mount and refuses a read-only or noexec one;
# - /tmp: the JVM's hsperfdata_<user> and onnxruntime's .ses, both hard-coded there, and
#   onnxruntime's device id (XDG_CACHE_HOME, else ~/.cache in the read-only home).
ENV PATH=/opt/venv/bin:${PATH} \
    TS_CONFIG_FILE=/home/model-server/config.properties \
    MODEL_STORE=/home/model-server/model-store \
    TS_MODELS=all \
    TEMP=/home/model-server/work/tmp \
    LOG_LOCATION=/home/model-server/work/logs \
    METRICS_LOCATION=/home/model-server/work/logs \
    XDG_CACHE_HOME=/tmp/.cache
RUN mkdir -p /home/model-server/work/tmp /home/model-server/work/logs \
    && chown -R 1000:1000 /home/model-server \
    && python -c 'import torch, ts, yaml; print("torch", torch.__version__)'
USER 1000:1000
# The HEALTHCHECK runs here too (Docker runs it in the container's working directory), where it
# finds key_file.json.
WORKDIR /home/model-server/work
# The ports of config.properties (a test checks that they agree).
EXPOSE 8080 8081 8082
# Healthy only when every loaded model answers a real prediction (not just /ping).
HEALTHCHECK --interval=10s --timeout=8s --start-period=120s --retries=3 \
    CMD ["/opt/venv/bin/python", "-m", "gp_serve.serving.healthcheck"]
# tini (PID 1) forwards SIGTERM to TorchServe's JVM, which the entrypoint execs (see there).
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/venv/bin/python", "/opt/gp-serve/entrypoint.py"]
CMD []
STOPSIGNAL SIGTERM
