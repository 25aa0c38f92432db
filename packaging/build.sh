#!/usr/bin/env bash
# Build the greenarrow_proxy packages: a .deb (cargo-deb) and, with --rpm, an .rpm
# (rpmbuild with packaging/rpm/greenarrow-proxy.spec). Installs cargo-deb if it is missing.
#
#   packaging/build.sh            release build + .deb (binaries stripped)
#   packaging/build.sh --dbgsym   ... and the debug symbols in a -dbgsym.ddeb beside it
#   packaging/build.sh --rpm      ... and an .rpm (needs rpmbuild: apt-get install rpm)
#
# Prints one "deb: PATH" (and "rpm: PATH") line at the end. Honours CARGO_TARGET_DIR,
# DEB_MAINTAINER ("Name <address>"), RPM_PACKAGER and PACKAGE_URL (the package metadata has
# example.org placeholders for these).
set -euo pipefail

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
}

want_rpm=0
debug_opt=--strip
for arg in "$@"; do
    case "$arg" in
        --rpm) want_rpm=1 ;;
        --dbgsym) debug_opt=--dbgsym ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
target_dir="${CARGO_TARGET_DIR:-target}"

need_subcommand() { # $1 = binary, $2 = crate, $3 = note
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "== installing $2 ($3)"
        cargo install --locked "$2"
    fi
}

need_subcommand cargo-deb cargo-deb "a minute or two"
if [ "$want_rpm" = 1 ] && ! command -v rpmbuild >/dev/null 2>&1; then
    echo "build.sh: --rpm needs rpmbuild (Debian: apt-get install rpm)" >&2
    exit 1
fi

echo "== building release binaries"
cargo build --release --locked --bins

echo "== building the .deb"
# cargo-deb gzips the man pages. profile.release has debug = 1, so stripping is asked for
# explicitly (or the symbols go to a separate -dbgsym package with --dbgsym).
maintainer_opt=()
if [ -n "${DEB_MAINTAINER:-}" ]; then
    maintainer_opt=(--maintainer "$DEB_MAINTAINER")
fi
deb_out=$(cargo deb --no-build "$debug_opt" "${maintainer_opt[@]}")
deb=$(printf '%s\n' "$deb_out" | grep '\.deb$' | tail -n 1)
ddeb=$(printf '%s\n' "$deb_out" | grep '\.ddeb$' | tail -n 1 || true)
if [ ! -f "$deb" ]; then
    echo "build.sh: cargo deb did not report a package file (got: $deb)" >&2
    exit 1
fi

rpm=""
if [ "$want_rpm" = 1 ]; then
    echo "== building the .rpm"
    # The spec strips the binaries and compresses the man pages in rpmbuild's build root;
    # target/release is left as it is.
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    license=$(python3 packaging/debian/copyright.py --spdx)
    topdir="$target_dir/rpmbuild"
    rm -rf "$topdir"
    mkdir -p "$topdir"
    rpm_defs=(
        --define "_topdir $(realpath "$topdir")"
        --define "srcdir $PWD"
        --define "bindir_built $(realpath "$target_dir/release")"
        --define "pkg_version $version"
        --define "license_expr $license"
    )
    if [ -n "${RPM_PACKAGER:-}" ]; then rpm_defs+=(--define "pkg_packager $RPM_PACKAGER"); fi
    if [ -n "${PACKAGE_URL:-}" ]; then rpm_defs+=(--define "pkg_url $PACKAGE_URL"); fi
    rpmbuild -bb --quiet "${rpm_defs[@]}" packaging/rpm/greenarrow-proxy.spec
    rpm=$(find "$topdir/RPMS" -name 'greenarrow-proxy-*.rpm' 2>/dev/null | head -n 1)
    if [ -z "$rpm" ] || [ ! -f "$rpm" ]; then
        echo "build.sh: rpmbuild did not produce a package in $topdir/RPMS" >&2
        exit 1
    fi
fi

echo "== packages"
echo "deb: $(realpath "$deb")"
if [ -n "$ddeb" ]; then
    echo "dbgsym: $(realpath "$ddeb")"
fi
if [ -n "$rpm" ]; then
    echo "rpm: $(realpath "$rpm")"
fi
