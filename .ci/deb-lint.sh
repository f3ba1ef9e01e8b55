#!/usr/bin/env bash
# The maintainer scripts in packaging/debian/ (the hub) and packaging/clinic/debian/ (the clinic), and the CI scripts: `sh -n`, then shellcheck
# (Debian's package, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null; then
    echo "-- installing shellcheck (Debian package)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends shellcheck
fi

scripts=()
for pkg in packaging/debian packaging/clinic/debian; do
    scripts+=("$pkg/postinst" "$pkg/prerm" "$pkg/postrm")
done
scripts+=(packaging/debian/preinst) # the hub's: stamps an upgrade's start for the health gate
for f in "${scripts[@]}"; do
    sh -n "$f"
    grep -q '^#DEBHELPER#$' "$f" || { echo "$f lacks the #DEBHELPER# token" >&2; exit 1; }
done
shellcheck -s sh "${scripts[@]}"
shellcheck .ci/run .ci/*.sh packaging/apt/publish.sh
echo "-- maintainer scripts and CI scripts: sh -n and shellcheck clean ($(shellcheck --version | sed -n 's/^version: //p'))"
