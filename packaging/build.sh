#!/usr/bin/env bash
# Build the greenarrow_proxy packages: a .deb (cargo-deb) and, with --rpm, an .rpm
# (cargo-generate-rpm). Installs the cargo subcommands if they are missing.
#
#   packaging/build.sh            release build + .deb (binaries stripped)
#   packaging/build.sh --dbgsym   ... and the debug symbols in a -dbgsym.ddeb beside it
#   packaging/build.sh --rpm      ... and an .rpm (installs cargo-generate-rpm: ~11 min)
#
# Prints one "deb: PATH" (and "rpm: PATH") line at the end. Honours CARGO_TARGET_DIR.
set -euo pipefail

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "$0"
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
if [ "$want_rpm" = 1 ]; then
    need_subcommand cargo-generate-rpm cargo-generate-rpm "about 11 minutes"
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
    # cargo-generate-rpm packages the binaries as they are: strip the debug information
    # (profile.release has debug = 1) in place; cargo does not rebuild because of it.
    for b in greenarrow_proxy gaproxy; do
        strip --strip-debug "$target_dir/release/$b"
    done
    rm -f "$target_dir"/generate-rpm/*.rpm
    cargo generate-rpm
    rpm=$(find "$target_dir/generate-rpm" -maxdepth 1 -name '*.rpm' 2>/dev/null | head -n 1)
    if [ -z "$rpm" ] || [ ! -f "$rpm" ]; then
        echo "build.sh: cargo generate-rpm did not produce a package in $target_dir/generate-rpm" >&2
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
