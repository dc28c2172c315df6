#!/usr/bin/env bash
# Install Prometheus and promtool (Debian's `prometheus` package) for the tests that run
# canary analysis against a real Prometheus and check the alert rules. Where apt-get
# cannot be used (not Debian/Ubuntu, no root), say so and leave it: those tests skip,
# naming what is missing.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-prometheus: no apt-get; install prometheus and promtool on PATH to run the analysis and alert-rule tests" >&2
    exit 0
fi
if [[ "$(id -u)" == 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install-prometheus: not root; run \`sudo apt-get install prometheus\` to run the analysis and alert-rule tests" >&2
    exit 0
fi
"${sudo[@]}" apt-get install -y --no-install-recommends prometheus
