#!/usr/bin/env bash
# Builds the .deb the way CI ships it and prints its path on the last line:
#   .ci/deb-build.sh [cargo deb arguments, e.g. --target aarch64-unknown-linux-gnu]
# 1. packaging/debian/changelog has an entry for the version in Cargo.toml (.ci/deb-changelog.sh);
# 2. `cargo deb --locked --maintainer "$DEB_MAINTAINER"` (default: Cargo.toml's maintainer);
# 3. md5sums: cargo-deb writes none, so the package is unpacked, DEBIAN/md5sums written for every
#    file but the conffiles (Debian policy; `dpkg --verify` and debsums use it), and packed again
#    with dpkg-deb (root:root owners, xz, as cargo-deb does).
set -euo pipefail
cd "$(dirname "$0")/.."

maintainer=${DEB_MAINTAINER:-$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -1)}
DEB_MAINTAINER=$maintainer .ci/deb-changelog.sh >&2
deb=$(cargo deb --locked --maintainer "$maintainer" "$@" | tail -1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/root"
(
    cd "$work/root"
    find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
        while read -r f; do
            if [ -f DEBIAN/conffiles ] && grep -qx "/$f" DEBIAN/conffiles; then continue; fi
            md5sum "$f"
        done >DEBIAN/md5sums
)
chmod 0644 "$work/root/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$work/root" "$deb" >&2
echo "$deb"
