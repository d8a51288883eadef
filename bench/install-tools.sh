#!/bin/sh
# Install what `make bench` drives: nginx (baseline and upstream) and wrk (load generator).
# Debian/Ubuntu only; run as root or through sudo. The nginx service itself is not needed:
# the bench starts its own nginx processes with their own configuration.
set -eu

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools.sh: apt-get not found; install nginx and wrk with your package manager" >&2
    exit 1
fi

$SUDO apt-get update -qq
# policy-rc.d-free: keep the package from starting a system nginx on port 80 where it can.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx-light wrk
# The packaged service is not needed and would hold port 80; stop it if a service manager started it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    $SUDO systemctl stop nginx || true
    $SUDO systemctl disable nginx || true
fi
echo "nginx: $(command -v nginx || echo missing)  wrk: $(command -v wrk || echo missing)"
