#!/bin/sh
# Install what `make image-test` drives: buildah (builds and runs the image), podman (imports the local
# base images) and debootstrap (makes the Debian 12 base from Debian's packages). Debian/Ubuntu only;
# run as root or through sudo. Nothing is started: no daemon is needed.
set -eu

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-image-tools.sh: apt-get not found; install buildah, podman and debootstrap with your package manager" >&2
    exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends buildah podman debootstrap
