#!/usr/bin/env bash
# The CI's independent FHIR R4 server: @medplum/fhir-router with its in-memory repository on node
# (.ci/fhir-server/server.js), over plain HTTP on 127.0.0.1 — tests put the reference nginx mTLS
# config in front (tests/uplink_medplum.rs).
#
#   .ci/fhir-server.sh --port PORT [--patient ID]
#   .ci/fhir-server.sh --install-only      (fill the node_modules cache and exit; .ci/run does this
#                                           before the tests so no test waits for npm)
#
# node_modules is installed with `npm ci` from the pinned package-lock.json into a cache outside the
# clone, keyed by the lock file's hash: ${VITALS_HUB_FHIR_CACHE:-${XDG_CACHE_HOME:-~/.cache}/vitals-hub/fhir-server}/<hash>.
# Needs node (>= 18) and npm with access to the npm registry on the first run.
set -euo pipefail
here="$(cd "$(dirname "$0")/fhir-server" && pwd)"
command -v node >/dev/null || { echo "fhir-server.sh: node is not installed" >&2; exit 127; }
command -v npm >/dev/null || { echo "fhir-server.sh: npm is not installed" >&2; exit 127; }
hash="$(sha256sum "$here/package-lock.json" | cut -c1-16)"
root="${VITALS_HUB_FHIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vitals-hub/fhir-server}"
cache="$root/$hash"
mkdir -p "$root"
(
    flock 9
    if [ ! -f "$cache/.complete" ]; then
        rm -rf "$cache"
        mkdir -p "$cache"
        cp "$here/package.json" "$here/package-lock.json" "$cache/"
        echo "-- fhir-server: npm ci into $cache" >&2
        (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error) >&2
        touch "$cache/.complete"
    fi
) 9>"$root/.lock"
if [ "${1:-}" = --install-only ]; then
    echo "-- fhir-server: node_modules ready in $cache"
    exit 0
fi
export NODE_PATH="$cache/node_modules"
exec node "$here/server.js" "$@"
