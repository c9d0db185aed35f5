#!/usr/bin/env bash
# Brings a fresh Debian machine (root) to where lllm runs: Debian packages, a running Docker engine, the
# virtualenv with the package, the sandbox image. Idempotent: each step checks first and is quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${need_pkgs[*]}; run this as root (or install them) and try again"; exit 1
  fi
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting the Docker engine"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating the virtualenv .venv"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=".venv/.lllm-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing lllm and its dependencies into .venv"
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.lllm-installed-*
  touch "$stamp"
fi

# The sandbox image: built (with a debootstrapped base where no registry answers) only when missing.
image=$(.venv/bin/lllm sandbox build)   # progress on stderr when it builds; the name on stdout
log "sandbox image: $image"
log "ready"
