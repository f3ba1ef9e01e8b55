#!/usr/bin/env bash
# Prerequisites of the uplink's CI checks, then the independent FHIR validation:
#  - Debian's nginx, for tests/uplink_nginx.rs (installed only if missing);
#  - a virtual environment .venv-fhir with fhir.resources (created only if missing);
#  - .ci/validate_fhir.py over every bundle shape the hub produces.
# Call it from .ci/run before `cargo test`, so the nginx test finds nginx.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "-- installing nginx (Debian package)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx
fi
echo "-- nginx: $( (nginx -v || /usr/sbin/nginx -v) 2>&1)"

if [ ! -x .venv-fhir/bin/python ] || ! .venv-fhir/bin/python -c 'import fhir.resources' 2>/dev/null; then
    echo "-- creating .venv-fhir with fhir.resources"
    python3 -m venv .venv-fhir
    .venv-fhir/bin/pip install -q --disable-pip-version-check fhir.resources
fi

echo "-- FHIR validation (fhir.resources R4B)"
.venv-fhir/bin/python .ci/validate_fhir.py
