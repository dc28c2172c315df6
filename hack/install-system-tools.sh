#!/usr/bin/env bash
# Install the system tools some tests and README blocks use, from Debian's packages:
# jq (the README's "Try it" block) and prometheus with promtool (the monitoring tests
# start a real Prometheus and check the alert rules with promtool).
#
# Only where that can be done without asking: as root, with apt-get. Elsewhere it says
# what to install and exits 0; the tests that need a missing tool skip and say so.
set -euo pipefail

missing=()
command -v jq >/dev/null 2>&1 || missing+=(jq)
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    missing+=(prometheus)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-tools: not installing ${missing[*]} (needs root and apt-get here);" \
        "install them with your package manager, e.g. sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi

echo "install-system-tools: apt-get install ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
