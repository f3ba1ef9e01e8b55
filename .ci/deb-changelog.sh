#!/usr/bin/env bash
# Keeps packaging/debian/changelog in step with the version in Cargo.toml: when its top entry is not
# `vitals-hub (<version>-1)`, a new entry for that version is added on top, dated with the last
# commit (so the same tree gives the same file) and signed by DEB_MAINTAINER (default: the
# `maintainer` of [package.metadata.deb]).
#   .ci/deb-changelog.sh           add the entry when missing
#   .ci/deb-changelog.sh --check   fail when the top entry is not the current version (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

file=packaging/debian/changelog
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
maintainer=${DEB_MAINTAINER:-$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -1)}
entry="vitals-hub ($version-1)"
top=$(head -1 "$file" 2>/dev/null || true)
if [ "${top%% unstable*}" = "$entry" ]; then
    echo "-- $file: top entry is $version-1"
    exit 0
fi
if [ "${1:-}" = --check ]; then
    echo "deb-changelog: the top entry of $file is '$top', not $entry: run .ci/deb-changelog.sh" >&2
    exit 1
fi
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
tmp=$(mktemp)
{
    echo "$entry unstable; urgency=medium"
    echo
    echo "  * Release $version (Cargo.toml); the changes are in the git history."
    echo
    echo " -- $maintainer  $date"
    if [ -s "$file" ]; then
        echo
        cat "$file"
    fi
} >"$tmp"
mv "$tmp" "$file"
chmod 0644 "$file"
echo "-- $file: added $version-1"
