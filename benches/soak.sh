#!/usr/bin/env bash
# The soak under faults (docs/SOAK.md): the real daemon, mixed traffic, faults at seeded
# moments, then the checks. Prints one line
#   soak: N messages in T s, lost 0, lies 0, misattributed 0, ambiguous A, rss drift X %, fds drift F, threads drift H
# and exits non-zero when lost, lies or misattributed is not 0, when a drift passes its bound
# (RSS 25 % of the baseline, descriptors 0, threads 0: why in tests/soak/main.rs and
# docs/SOAK.md), or when the daemon logged an ERROR or a panic, missed a `gaproxy status`,
# or did not exit cleanly.
#
#   benches/soak.sh [--seconds N] [--seed S] [--mtas M] [--release]
#
# --seconds: length of the run's traffic and faults (default 120); its first sixth (at most
#         5 minutes) is the warm-up, after which the leak baseline is taken.
# --seed: repeats a run's choices (traffic and fault schedule; not the threads' interleaving);
#         default random, printed first. --mtas: MTA threads (default 8). --release: build
#         and run the release profile (default: the debug build `cargo test` already made).
# As root it runs in a network namespace of its own, where a source address comes and goes;
# otherwise that fault is skipped (said so).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=120
seed=""
mtas=8
profile=()
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
number() {
    case "$2" in
        '' | *[!0-9]*) echo "soak.sh: $1 needs a number, not '$2'" >&2; exit 2 ;;
    esac
}
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) number "$1" "${2:-}"; seconds=$2; shift 2 ;;
        --seed) number "$1" "${2:-}"; seed=$2; shift 2 ;;
        --mtas) number "$1" "${2:-}"; mtas=$2; shift 2 ;;
        --release) profile=(--release); shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "soak.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$seed" ]; then
    seed=$(( $(od -An -N4 -tu4 /dev/urandom) % 1000000000 ))
fi
echo "soak: seed $seed; repeat with: benches/soak.sh --seconds $seconds --seed $seed --mtas $mtas ${profile[*]:-}"
# Builds the daemon, gaproxy (crates/gaproxy: another package, so built first) and the
# driver (tests/soak, not run by `cargo test`).
cargo build "${profile[@]}" --quiet --bin gaproxy
exec cargo test "${profile[@]}" --quiet --test soak -- \
    --seconds "$seconds" --seed "$seed" --mtas "$mtas"
