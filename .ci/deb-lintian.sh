#!/usr/bin/env bash
# lintian on a built vitals-hub .deb (Debian's package, installed when missing):
#   .ci/deb-lintian.sh PATH/TO/vitals-hub_*.deb
# --pedantic; fails on any error or warning. Each tag the package keeps on purpose is overridden in
# packaging/debian/lintian-overrides (installed as /usr/share/lintian/overrides/vitals-hub), with
# the reason beside it; a second run lists what the overrides hid (`--show-overrides`).
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:?usage: .ci/deb-lintian.sh PATH/TO/vitals-hub_VERSION_ARCH.deb}
if ! command -v lintian >/dev/null; then
    echo "-- installing lintian (Debian package)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends lintian
fi
echo "-- $(lintian --version)"
# The verdict: no error, no warning (info tags printed, overridden tags hidden).
lintian --pedantic --display-info --fail-on error,warning "$deb"
# What the overrides hide, listed for the log. Lintian 2.116 exits 2 whenever --show-overrides
# prints an overridden tag, so this listing never decides the verdict.
lintian --pedantic --show-overrides "$deb" | grep '^O:' || true
echo "-- lintian: $deb has no error and no unexplained warning"
