# shellcheck shell=bash
# The Debian root the installed-package tests run in, shared by .ci/deb-root-test.sh and
# .ci/apt-update-test.sh (sourced, not run). The caller sets, before sourcing:
#   packages    debootstrap's --include list (comma-separated)
#   log_name    the debootstrap log's file name in the cache
#   skip        a function: `skip REASON` (exits 0, or 1 under CI=true)
# and may set DEB_TEST_SUITE, DEB_TEST_MIRROR and DEB_ROOT_CACHE (defaults: bookworm,
# deb.debian.org, /var/cache/vitals-hub-ci). Sourcing needs root (it skips otherwise), installs
# debootstrap (and any programs in `host_tools`, as Debian packages) when missing, and leaves
# `tarball` naming the root's cached tarball, bootstrapped (debootstrap minbase plus `packages`)
# when not cached yet. The key is a hash of the suite, architecture, package list and mirror, so
# each caller's root has its own tarball and existing caches stay valid.
# `debian_root_unpack DIR` unpacks a fresh copy into DIR, mounts /proc there and makes it a root
# services are not started in (policy-rc.d); the caller unmounts DIR/proc when done.

suite=${DEB_TEST_SUITE:-bookworm}
mirror=${DEB_TEST_MIRROR:-http://deb.debian.org/debian}
cache=${DEB_ROOT_CACHE:-/var/cache/vitals-hub-ci}
: "${packages:?set packages before sourcing .ci/debian-root.sh}"
: "${log_name:?set log_name before sourcing .ci/debian-root.sh}"

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot)"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
for tool in ${host_tools:-}; do # PROGRAM=PACKAGE
    command -v "${tool%%=*}" >/dev/null || missing+=("${tool#*=}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "-- installing ${missing[*]} (Debian packages)"
    apt-get update -qq || skip "apt cannot reach its mirror to install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        skip "${missing[*]} cannot be installed"
fi
arch=$(dpkg --print-architecture)
key=$(printf '%s %s %s %s\n' "$suite" "$arch" "$packages" "$mirror" | sha256sum | cut -c1-16)
tarball="$cache/$suite-$arch-$key.tar"
mkdir -p "$cache"
if [ ! -f "$tarball" ]; then
    echo "-- debootstrap --variant=minbase --include=$packages $suite (cached as $tarball)"
    t0=$SECONDS
    build=$(mktemp -d "$cache/build.XXXXXX")
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$build" "$mirror" \
        >"$cache/$log_name" 2>&1; then
        rm -rf "$build"
        tail -3 "$cache/$log_name" >&2
        skip "debootstrap could not reach the Debian mirror $mirror (log: $cache/$log_name)"
    fi
    tar -C "$build" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$build"
    echo "   bootstrapped and cached in $((SECONDS - t0)) s"
fi

debian_root_unpack() { # DIR
    local root=$1
    tar -C "$root" -xf "$tarball"
    chmod 0755 "$root" # mktemp's 0700 (also in the tarball's `.`): the root's / must let the service user in
    mount -t proc proc "$root/proc"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
}
