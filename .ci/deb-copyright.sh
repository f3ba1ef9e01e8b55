#!/usr/bin/env bash
# Writes packaging/debian/copyright: a machine-readable (DEP-5) copyright file naming the licence of
# everything linked into /usr/bin/vitals-hub — the hub itself (Apache-2.0, LICENSE), each Rust
# crate compiled into it (proc-macros and build scripts are not linked and not listed), and the C
# code those crates vendor: libdbus (libdbus-sys, `vendored`), SQLite (libsqlite3-sys, `bundled`)
# and ring's BoringSSL-derived C and assembly. Licence texts come from the crates' own licence
# files in Cargo's registry (or /usr/share/common-licenses where Debian ships them).
#   .ci/deb-copyright.sh           (re)write the file
#   .ci/deb-copyright.sh --check   fail when the committed file is out of date (CI)
# DEB_VARIANT=clinic does the same for the clinic's package (/usr/bin/vitals-clinic, built with the
# `clinic` feature): packaging/clinic/debian/copyright.
# Run it after changing dependencies (Cargo.lock); CI runs --check.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=${DEB_VARIANT:-hub}
case "$variant" in
hub) out=packaging/debian/copyright features=(--no-default-features) program=vitals-hub ;;
clinic) out=packaging/clinic/debian/copyright features=(--no-default-features --features clinic) program=vitals-clinic ;;
*) echo "deb-copyright: DEB_VARIANT must be hub or clinic, not $variant" >&2; exit 2 ;;
esac
export DEB_PROGRAM=$program
target=${DEB_COPYRIGHT_TARGET:-aarch64-unknown-linux-gnu}
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.tree" "$tmp.meta"' EXIT

cargo tree --locked "${features[@]}" -e normal,no-proc-macro --prefix none -f '{p}' --target "$target" -p vitals-hub |
    sed 's/ (.*)$//' | sort -u >"$tmp.tree"
cargo metadata --locked --format-version 1 >"$tmp.meta"

python3 - "$tmp.tree" "$tmp.meta" >"$tmp" <<'PY'
import json, os, re, sys

tree_path, meta_path = sys.argv[1], sys.argv[2]
linked = set()
for line in open(tree_path):
    parts = line.split()
    if len(parts) >= 2:
        linked.add((parts[0], parts[1].lstrip("v")))
meta = json.load(open(meta_path))
pkgs = {(p["name"], p["version"]): p for p in meta["packages"]}

def dep5(expr):
    """An SPDX expression in DEP-5 syntax: `or`/`and`, `/` as `or`, names as Debian spells them."""
    expr = expr.replace("/", " OR ")
    expr = re.sub(r"\s+", " ", expr).strip()
    expr = expr.replace(" OR ", " or ").replace(" AND ", " and ")
    expr = expr.replace("Apache-2.0 WITH LLVM-exception", "Apache-2.0-with-LLVM-exception")
    return expr

def crate_dir(p):
    return os.path.dirname(p["manifest_path"])

def first_file(crate, names):
    p = next((pkgs[k] for k in pkgs if k[0] == crate and k in linked), None)
    if p is None:
        p = next((pkgs[k] for k in pkgs if k[0] == crate), None)
    if p is None:
        return None
    for n in names:
        f = os.path.join(crate_dir(p), n)
        if os.path.isfile(f):
            return open(f, encoding="utf-8", errors="replace").read()
    return None

def indent(text):
    lines = []
    for l in text.strip("\n").splitlines():
        l = l.rstrip()
        lines.append(" ." if not l.strip() else " " + l)
    return "\n".join(lines)

def afl():
    t = first_file("libdbus-sys", ["vendor/dbus/COPYING"]) or ""
    start = t.find("The Academic Free License")
    end = t.find("START OF GNU GENERAL PUBLIC LICENSE")
    return t[start:end].strip() if start >= 0 and end > start else None

def llvm_exception():
    """The exception's text alone: the Apache-2.0 text it amends is in common-licenses."""
    t = first_file("linux-raw-sys", ["LICENSE-Apache-2.0_WITH_LLVM-exception"]) or ""
    start = t.find("--- LLVM Exceptions to the Apache 2.0 License ----")
    if start < 0:
        return None
    return (f"On Debian systems, the full text of the Apache License, Version 2.0, is in\n"
            f"{common}/Apache-2.0. The exception:\n\n" + t[start:].strip())

common = "/usr/share/common-licenses"
texts = {
    "Apache-2.0": f"On Debian systems, the full text of the Apache License, Version 2.0, is in\n{common}/Apache-2.0 (and in LICENSE in the source).",
    "MPL-2.0": f"On Debian systems, the full text of the Mozilla Public License 2.0 is in\n{common}/MPL-2.0.",
    "GPL-2+": f"On Debian systems, the full text of the GNU General Public License version 2 is in\n{common}/GPL-2.",
    "MIT": first_file("serde", ["LICENSE-MIT"]),
    "ISC": first_file("ring", ["LICENSE-other-bits"]),
    "BSD-3-Clause": first_file("subtle", ["LICENSE"]),
    "Zlib": first_file("foldhash", ["LICENSE"]),
    "Unicode-3.0": first_file("unicode-ident", ["LICENSE-UNICODE"]),
    "BSL-1.0": first_file("ryu", ["LICENSE-BOOST"]),
    "Unlicense": first_file("memchr", ["UNLICENSE"]),
    "0BSD": first_file("adler2", ["LICENSE-0BSD"]),
    "Apache-2.0-with-LLVM-exception": llvm_exception(),
    "AFL-2.1": afl(),
    "public-domain": "The SQLite source code is in the public domain: \"The author disclaims copyright\nto this source code. In place of a legal notice, here is a blessing: May you do\ngood and not evil. May you find forgiveness for yourself and forgive others. May\nyou share freely, never taking more than you give.\"",
}

print("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
print("Upstream-Name: vitals-hub")
print("Comment: Generated by .ci/deb-copyright.sh from Cargo.lock; do not edit by hand.")
print(f" The program /usr/bin/{os.environ['DEB_PROGRAM']} is one statically linked binary (besides libc and")
print(" libgcc_s). The paragraphs after the first name what is compiled into it: each")
print(" Rust crate as published on crates.io (`crates/NAME-VERSION/*`), and the C code")
print(" three of them vendor: libdbus, SQLite and ring's BoringSSL-derived code.")
print()
print("Files: *")
print("Copyright: the vitals-hub authors")
print("License: Apache-2.0")
print()
print("Files: crates/libdbus-sys-*/vendor/dbus/*")
print("Copyright: Red Hat, Inc., Havoc Pennington, Collabora Ltd. and the other D-Bus authors")
print("License: AFL-2.1 or GPL-2+")
print()
print("Files: crates/libsqlite3-sys-*/sqlite3/*")
print("Copyright: none: the SQLite authors dedicated the code to the public domain")
print("License: public-domain")
print()
print("Files: crates/ring-*/crypto/* crates/ring-*/include/* crates/ring-*/pregenerated/* crates/ring-*/third_party/*")
print("Copyright: Brian Smith, Google Inc., the BoringSSL and OpenSSL authors")
print("License: Apache-2.0 and ISC")
print("Comment: ring's LICENSE, LICENSE-BoringSSL and LICENSE-other-bits: code taken from")
print(" BoringSSL under Apache-2.0 or ISC (each file says which), new code under ISC.")
print()
used = {"Apache-2.0", "AFL-2.1", "GPL-2+", "public-domain", "ISC"}
for (name, version) in sorted(linked):
    p = pkgs.get((name, version))
    if p is None or name == "vitals-hub":
        continue
    lic = dep5(p.get("license") or "")
    if not lic:
        lic = "see-crate"
    for part in re.split(r"\s+(?:or|and)\s+|[()]", lic):
        part = part.strip()
        if part:
            used.add(part)
    authors = ", ".join(a.split(" <")[0] for a in p.get("authors") or []) or f"the {name} authors"
    print(f"Files: crates/{name}-{version}/*")
    print(f"Copyright: {authors}")
    print(f"License: {lic}")
    print()
missing = []
for lic in sorted(used):
    t = texts.get(lic)
    if t is None:
        missing.append(lic)
        continue
    print(f"License: {lic}")
    print(indent(t))
    print()
if missing:
    sys.exit(f"deb-copyright: no licence text for {missing}: add it to .ci/deb-copyright.sh")
PY

if [ "${1:-}" = --check ]; then
    if ! cmp -s "$tmp" "$out"; then
        diff -u "$out" "$tmp" | head -40 >&2 || true
        echo "deb-copyright: $out is out of date: run .ci/deb-copyright.sh and commit it" >&2
        exit 1
    fi
    echo "-- $out is up to date ($(grep -c '^Files: crates/' "$out") crates)"
else
    mv "$tmp" "$out"
    chmod 0644 "$out"
    echo "-- wrote $out ($(grep -c '^Files: crates/' "$out") crates)"
fi
