#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (idempotent).
#
# - If `docker info` already works, do nothing.
# - Otherwise (as root): install Debian's docker.io if dockerd is missing, then start
#   dockerd in the background WITHOUT its default bridge (--bridge=none, no iptables, no
#   masquerading): nothing on a private range is ever created; containers use
#   `--network host` and all traffic stays on loopback.
#
# Env: DOCKERD_LOG (default /var/log/gp-serve-dockerd.log), DOCKER_WAIT_S (default 60).
set -euo pipefail

log() { printf '[docker/engine] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "no Docker engine answers and this is not root: start one yourself (dockerd) or run as root"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # policy-rc.d on these machines keeps the package from starting the service itself.
    apt-get install -y -q docker.io >&2
fi
if ! command -v docker >/dev/null 2>&1; then
    log "dockerd is installed but no docker client is on PATH"
    exit 1
fi

sock=/var/run/docker.sock
pidfile=/var/run/docker.pid
logfile=${DOCKERD_LOG:-/var/log/gp-serve-dockerd.log}

# A process that exists and is not a zombie (an engine killed with its parent gone can linger
# as one, and dockerd would then refuse to start over its pid file).
alive() {
    local pid state
    pid=$(cat "$1" 2>/dev/null) || return 1
    state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ -n $state && $state != Z* ]]
}

start_dockerd() {
    log "starting dockerd (no bridge, no iptables); log: $logfile"
    rm -f "$pidfile"
    alive /var/run/docker/containerd/containerd.pid || rm -f /var/run/docker/containerd/containerd.pid
    # setsid + nohup: the engine outlives this script and the shell that ran it.
    setsid nohup dockerd \
        --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        --host="unix://$sock" --pidfile="$pidfile" \
        >>"$logfile" 2>&1 </dev/null &
    started=$!
}

started=
if alive "$pidfile"; then
    log "dockerd (pid $(cat "$pidfile")) is running but not answering yet; waiting"
else
    start_dockerd
fi

deadline=$((SECONDS + ${DOCKER_WAIT_S:-60}))
until docker info >/dev/null 2>&1; do
    if [[ -z $started ]] && ! alive "$pidfile"; then
        start_dockerd  # the one we were waiting for went away
    elif [[ -n $started ]] && ! kill -0 "$started" 2>/dev/null && ! alive "$pidfile"; then
        log "dockerd exited; last lines of its log:"
        tail -n 30 "$logfile" >&2 || true
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "dockerd did not answer within ${DOCKER_WAIT_S:-60}s; last lines of its log:"
        tail -n 30 "$logfile" >&2 || true
        exit 1
    fi
    sleep 1
done
log "engine ready: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}')"
