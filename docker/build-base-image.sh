#!/usr/bin/env bash
# Make docker/Dockerfile's default base image exist where no registry can be reached.
#
# docker/Dockerfile says `ARG BASE_IMAGE=python:3.11-slim-bookworm` (the official image, for real users).
# If that tag is missing and cannot be pulled, this builds an equivalent from Debian bookworm with
# debootstrap (Debian's python3 is 3.11 too) and tags it under the same name, so `docker build` and
# `docker-compose build` work unchanged. Idempotent: returns at once when the tag exists.
#
#   bash docker/build-base-image.sh    # env: BASE_IMAGE, DEBIAN_MIRROR, NO_PULL=1, PULL_TIMEOUT=120, FORCE=1 rebuilds
set -euo pipefail

TAG=${BASE_IMAGE:-python:3.11-slim-bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv: docker/Dockerfile installs into /opt/venv (no PEP 668 trouble on either base).
# Everything else the wheels need (libgomp, openblas, opencv's libs) ships inside the wheels themselves.
PACKAGES=python3,python3-venv,python3-pip,ca-certificates,netbase,tzdata
LABEL=org.opencontainers.image.description=debootstrap-${SUITE}-python3-from-docker/build-base-image.sh
# Debian's CAs only, as in the official image. A host's extra CAs (a TLS-intercepting proxy) are for build steps
# only: docker/Dockerfile takes them as the BUILD_CA_CERTS build arg for its pip steps, never into a layer.
# Bases built by an earlier version of this script trusted them for good: such a tag is rebuilt.
CA_LABEL=classifier.base.cas=debian-only

log() { printf '[base-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

tag_exists() { docker image inspect "$TAG" >/dev/null 2>&1; }

# A tag this script built before CAs were kept out of the base (it has our description, not the CA label).
stale_local_build() {
    local labels
    labels=$(docker image inspect -f '{{json .Config.Labels}}' "$TAG" 2>/dev/null) || return 1
    [[ $labels == *debootstrap-* && $labels != *"${CA_LABEL#*=}"* ]]
}

try_pull() {
    [ "${NO_PULL:-0}" = 1 ] && return 1
    log "trying: docker pull $TAG"
    timeout "${PULL_TIMEOUT:-120}" docker pull "$TAG" >/dev/null 2>&1
}

need_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    [ "$(id -u)" = 0 ] || { log "debootstrap is missing: sudo apt-get install debootstrap"; exit 1; }
    log "installing debootstrap (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

configure_rootfs() {
    local root=$1
    cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
    # What slim images drop: package caches, docs, man pages.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
           "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/tmp/*
}

import_rootfs() {
    local root=$1
    tar --numeric-owner -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change "LABEL $LABEL" \
        --change "LABEL $CA_LABEL" \
        --change 'CMD ["python3"]' \
        - "$TAG" >/dev/null
}

build_with_debootstrap() {
    need_debootstrap
    WORK=$(mktemp -d /tmp/base-image.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
    local work=$WORK
    log "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
    nice debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
    configure_rootfs "$work/rootfs"
    log "importing as $TAG"
    import_rootfs "$work/rootfs"
}

main() {
    local start=$SECONDS
    if stale_local_build; then
        log "$TAG was built by an earlier version of this script (host CAs baked in): rebuilding"
        FORCE=1
    fi
    if [ "${FORCE:-0}" != 1 ] && tag_exists; then
        log "$TAG exists; nothing to do (FORCE=1 rebuilds)"
        return 0
    fi
    if [ "${FORCE:-0}" = 1 ] || ! try_pull; then
        build_with_debootstrap
    fi
    docker run --rm "$TAG" python3 -c 'import venv, ssl, sqlite3; print("python", __import__("sys").version.split()[0])' >&2
    log "$TAG ready in $((SECONDS - start))s ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
}

main "$@"
