#!/usr/bin/env bash
# Packaging test, run by CI as root on Debian 12 (it installs and purges a package and
# creates a system user: do not run it on a machine you care about).
#
# Builds the .deb with cargo-deb (packaging/build.sh), installs it with dpkg, checks that
# every file lands where greenarrow_proxy(8) says, makes the installed configuration usable
# (real secret, certificate and key made with openssl), runs `greenarrow_proxy --check-config`
# on it as the daemon's user, runs the installed daemon as that user with only
# CAP_NET_BIND_SERVICE on 127.0.0.1:807 (a message through it to `gaproxy testmx` on
# 127.0.0.1:2525, then SIGUSR1, SIGHUP, SIGTERM), checks the man pages and the unit, then
# removes and purges the package and checks what is left. Loopback only. Prints PASS/FAIL
# lines and a "packaging: N passed, N failed" line; exits non-zero on any failure.
#
#   tests/packaging.sh              build, then test
#   tests/packaging.sh --deb FILE   test an existing .deb
# shellcheck disable=SC2016 # the bash -c snippets take their values as "$1"... on purpose
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

PKG=greenarrow-proxy
USER_NAME=greenarrow_proxy
CONFDIR=/etc/greenarrow_proxy
CONF=$CONFDIR/greenarrow_proxy.yaml
# cargo-deb installs units under /usr/lib; /lib is the same directory on Debian 12.
UNIT=/lib/systemd/system/greenarrow_proxy.service
DOC=/usr/share/doc/$PKG

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: PASS if the command succeeds.
check() {
    local what=$1
    shift
    if "$@" >/dev/null; then pass "$what"; else fail "$what"; fi
}
finish() {
    echo
    echo "packaging: $passed passed, $failed failed"
    if [ "$failed" -gt 0 ] || [ "$passed" -eq 0 ]; then exit 1; fi
    exit 0
}
# A fatal step: record the failure and stop (cleaning up what was installed).
die() {
    fail "$*"
    cleanup
    finish
}
cleanup() {
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'install\|config-files'; then
        dpkg --purge "$PKG" >/dev/null 2>&1 || true
    fi
}

if [ "$(id -u)" != 0 ]; then
    echo "tests/packaging.sh: must run as root (it installs a package)" >&2
    exit 1
fi

deb=""
case "${1:-}" in
    --deb) deb=${2:?--deb needs a file} ;;
    "") ;;
    *) echo "usage: $0 [--deb FILE]" >&2; exit 2 ;;
esac

echo "== tools"
missing=()
for t in man:man-db groff:groff systemd-analyze:systemd openssl:openssl adduser:adduser \
         runuser:util-linux; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        die "installing ${missing[*]}"
    fi
fi

if [ -z "$deb" ]; then
    echo "== building the .deb (packaging/build.sh)"
    out=$(bash packaging/build.sh 2>&1)
    rc=$?
    printf '%s\n' "$out" | tail -n 20
    [ $rc = 0 ] || die "packaging/build.sh (exit $rc)"
    deb=$(printf '%s\n' "$out" | sed -n 's/^deb: //p' | tail -n 1)
fi
check "a .deb was built: $deb" test -f "$deb"
[ -f "$deb" ] || finish

echo "== package contents"
contents=$(dpkg-deb --contents "$deb")
check "package contains the unit" grep -Eq ' \./(usr/)?lib/systemd/system/greenarrow_proxy\.service$' <<<"$contents"
for p in ./usr/sbin/greenarrow_proxy ./usr/bin/gaproxy \
         ./usr/share/man/man8/greenarrow_proxy.8.gz ./usr/share/man/man5/greenarrow_proxy.yaml.5.gz \
         ./usr/share/man/man1/gaproxy.1.gz ./etc/greenarrow_proxy/greenarrow_proxy.yaml \
         ./usr/share/doc/$PKG/README.md ./usr/share/doc/$PKG/CONFIG.md ./usr/share/doc/$PKG/PROTOCOL.md; do
    check "package contains $p" grep -q " $p\$" <<<"$contents"
done
check "config is a conffile" bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx '$CONF'"

echo "== install"
cleanup
userdel "$USER_NAME" >/dev/null 2>&1 || true
groupdel "$USER_NAME" >/dev/null 2>&1 || true
# --path-include: keep our man pages and docs even where dpkg is configured to drop them.
install_out=$(dpkg -i --path-include='/usr/share/man/*' --path-include="$DOC/*" "$deb" 2>&1)
rc=$?
printf '%s\n' "$install_out"
[ $rc = 0 ] || die "dpkg -i (exit $rc)"
pass "dpkg -i"
check "postinst printed the note about the secret" grep -q "enabled but NOT started" <<<"$install_out"

echo "== installed files"
check "/usr/sbin/greenarrow_proxy is executable" test -x /usr/sbin/greenarrow_proxy
check "/usr/bin/gaproxy is executable" test -x /usr/bin/gaproxy
check "unit at $UNIT" test -f "$UNIT"
for m in man8/greenarrow_proxy.8.gz man5/greenarrow_proxy.yaml.5.gz man1/gaproxy.1.gz; do
    check "man page /usr/share/man/$m" test -f "/usr/share/man/$m"
done
for d in README.md CONFIG.md PROTOCOL.md; do
    check "doc $DOC/$d" test -f "$DOC/$d"
done
check "user $USER_NAME exists" getent passwd "$USER_NAME"
check "group $USER_NAME exists" getent group "$USER_NAME"
check "user $USER_NAME has home /nonexistent" test "$(getent passwd "$USER_NAME" | cut -d: -f6)" = /nonexistent
check "user $USER_NAME is a system user" test "$(id -u "$USER_NAME")" -lt 1000
check "user $USER_NAME has no login shell" \
    grep -Eq '(nologin|false)$' <<<"$(getent passwd "$USER_NAME" | cut -d: -f7)"
check "config mode 640 root:$USER_NAME" test "$(stat -c '%a %U %G' "$CONF")" = "640 root $USER_NAME"
check "config dir mode 750 root:$USER_NAME" test "$(stat -c '%a %U %G' "$CONFDIR")" = "750 root $USER_NAME"
check "unit enabled (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/greenarrow_proxy.service
if [ -d /run/systemd/system ]; then
    check "unit not started on install" bash -c '! systemctl is-active --quiet greenarrow_proxy.service'
fi
check "greenarrow_proxy --version" bash -c '/usr/sbin/greenarrow_proxy --version | grep -q "^greenarrow_proxy "'
check "gaproxy --help lists send, testmx, demo" \
    bash -c 'h=$(/usr/bin/gaproxy --help) && grep -q send <<<"$h" && grep -q testmx <<<"$h" && grep -q demo <<<"$h"'

echo "== make the installed configuration usable"
secret=$(openssl rand -hex 32)
sed -i "s/^auth_shared_secret: .*/auth_shared_secret: \"$secret\"/" "$CONF"
check "secret set in the installed config" grep -q "$secret" "$CONF"
install -d -m 750 -o root -g "$USER_NAME" "$CONFDIR/tls"
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=proxy.test -addext subjectAltName=DNS:proxy.test,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
        -keyout "$CONFDIR/tls/key.pem" -out "$CONFDIR/tls/cert.pem" >/dev/null 2>&1; then
    pass "openssl made a certificate and key"
else
    fail "openssl made a certificate and key"
fi
chgrp "$USER_NAME" "$CONFDIR/tls/key.pem" "$CONFDIR/tls/cert.pem"
chmod 640 "$CONFDIR/tls/key.pem"

echo "== greenarrow_proxy --check-config"
# As the daemon's user: proves it can read the configuration and the key.
cc_out=$(runuser -u "$USER_NAME" -- /usr/sbin/greenarrow_proxy --check-config 2>/tmp/packaging-check.err)
rc=$?
cat /tmp/packaging-check.err
check "--check-config on the installed config as $USER_NAME (exit $rc)" test $rc = 0
check "--check-config says the configuration is valid" grep -q "configuration is valid" /tmp/packaging-check.err
check "--check-config prints the effective config with the secret redacted" \
    bash -c 'grep -q "<redacted>" <<<"$1" && ! grep -q "$2" <<<"$1"' _ "$cc_out" "$secret"
bad=$(mktemp /tmp/packaging-bad.XXXXXX.yaml)
{ cat "$CONF"; echo "no_such_key: 1"; } >"$bad"
/usr/sbin/greenarrow_proxy --check-config -c "$bad" >/dev/null 2>/tmp/packaging-check.err
rc=$?
check "--check-config refuses an unknown key (exit $rc)" test $rc = 1
check "--check-config names the unknown key" grep -q "no_such_key" /tmp/packaging-check.err
rm -f "$bad" /tmp/packaging-check.err
check "other users (nobody) cannot read the config" \
    bash -c "! runuser -u nobody -- cat '$CONF' >/dev/null 2>&1"

echo "== run the installed daemon as $USER_NAME, with only CAP_NET_BIND_SERVICE (as the unit does)"
# Loopback only: listen on 127.0.0.1:807, source 127.0.0.1, a test MX on 127.0.0.1:2525.
sed -i -e '/^  - "\[::1\]:807"$/d' -e 's/^  - 192\.0\.2\.10$/  - 127.0.0.1/' -e '/^  - 2001:db8::10$/d' \
    -e 's/^destination_allow: \[\]$/destination_allow: [127.0.0.0\/8]/' "$CONF"
check "config edited for loopback" grep -qx '  - 127.0.0.1' "$CONF"
# The test MX is on loopback, which destination_deny refuses by default.
check "loopback allowed as a destination" grep -qx 'destination_allow: \[127.0.0.0/8\]' "$CONF"
work=$(mktemp -d /tmp/packaging-run.XXXXXX)
chmod 755 "$work"
mkfifo "$work/daemon.log" "$work/mx.log"
printf '%s\n' "$secret" >"$work/secret"
# Read lines from fd $1 (echoing them) until one contains $2; give up after 30 s of silence.
wait_for() {
    local fd=$1 pattern=$2 line
    while IFS= read -r -t 30 line <&"$fd"; do
        echo "  | $line"
        case "$line" in *"$pattern"*) return 0 ;; esac
    done
    return 1
}
setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups \
    --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
    /usr/sbin/greenarrow_proxy 2>"$work/daemon.log" &
daemon=$!
exec 3<"$work/daemon.log"
if wait_for 3 "ready on 127.0.0.1:807"; then
    pass "daemon started on port 807 as $USER_NAME"
    # Runs until killed: with --messages it may exit before its last reply is sent.
    /usr/bin/gaproxy testmx --listen 127.0.0.1:2525 >"$work/mx.log" &
    mx=$!
    exec 4<"$work/mx.log"
    check "test MX started" wait_for 4 "listening on 127.0.0.1:2525"
    timeout 120 /usr/bin/gaproxy send --proxy 127.0.0.1:807 --proxy-name proxy.test \
        --ca-file "$CONFDIR/tls/cert.pem" --secret-file "$work/secret" \
        --source 127.0.0.1 --mx 127.0.0.1 --port 2525 --timeout 30s >"$work/send.out" 2>&1
    rc=$?
    sed 's/^/  > /' "$work/send.out"
    check "gaproxy send through the installed daemon (exit $rc)" test $rc = 0
    check "the test MX received the message" wait_for 4 "message from 127.0.0.1"
    kill "$mx" 2>/dev/null
    wait "$mx" 2>/dev/null
    exec 4<&-
    kill -USR1 "$daemon"
    check "SIGUSR1 logs the report summary" wait_for 3 "report summary"
    kill -HUP "$daemon"
    check "SIGHUP reloads the configuration" wait_for 3 "configuration reloaded"
    kill -TERM "$daemon"
    if wait_for 3 "exiting"; then
        pass "SIGTERM drains and exits"
    else
        fail "SIGTERM drains and exits"
        kill -KILL "$daemon" 2>/dev/null
    fi
    wait "$daemon"
    rc=$?
    check "daemon exit status 0 after SIGTERM (got $rc)" test $rc = 0
else
    fail "daemon started on port 807 as $USER_NAME"
    kill -TERM "$daemon" 2>/dev/null
    wait "$daemon" 2>/dev/null
fi
exec 3<&-
rm -rf "$work"

echo "== man pages"
for p in greenarrow_proxy.8 greenarrow_proxy.yaml.5 gaproxy.1; do
    sec=${p##*.}
    f=/usr/share/man/man$sec/$p.gz
    warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null)
    check "man --warnings -l $f prints nothing" test -z "$warn"
    [ -z "$warn" ] || printf '%s\n' "$warn"
    check "man -w finds ${p%.*}($sec)" test "$(man -w "$sec" "${p%.*}" 2>/dev/null)" = "$f"
    check "man -l $f renders" bash -c "man -l '$f' 2>/dev/null | grep -q 'SEE ALSO'"
done

echo "== systemd unit"
verify=$(systemd-analyze verify "$UNIT" 2>&1)
rc=$?
[ -z "$verify" ] || printf '%s\n' "$verify"
check "systemd-analyze verify $UNIT is clean (exit $rc)" test $rc = 0 -a -z "$verify"
check "unit runs the installed binary with the installed config" \
    grep -qx "ExecStart=/usr/sbin/greenarrow_proxy --config-filename $CONF" "$UNIT"

echo "== remove"
dpkg -r "$PKG" >/dev/null 2>&1
rc=$?
check "dpkg -r (exit $rc)" test $rc = 0
check "binaries removed" test ! -e /usr/sbin/greenarrow_proxy -a ! -e /usr/bin/gaproxy
check "unit removed" test ! -e "$UNIT"
check "config kept after remove" test -f "$CONF"
check "user kept after remove" getent passwd "$USER_NAME"

echo "== purge"
dpkg --purge "$PKG" >/dev/null 2>&1
rc=$?
check "dpkg --purge (exit $rc)" test $rc = 0
check "config removed by purge" test ! -e "$CONF"
check "user removed by purge" bash -c "! getent passwd $USER_NAME"
check "group removed by purge" bash -c "! getent group $USER_NAME"
check "no statoverride left" bash -c "! dpkg-statoverride --list '$CONFDIR*' | grep -q ."
check "unit no longer enabled" test ! -L /etc/systemd/system/multi-user.target.wants/greenarrow_proxy.service
# The operator's certificate directory is left in place by purge; remove our test one.
rm -rf "$CONFDIR"

finish
