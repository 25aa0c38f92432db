#!/usr/bin/env bash
# Packaging test, run by CI as root on Debian 12 (it installs and purges a package and
# creates a system user: do not run it on a machine you care about).
#
# Builds the .deb with cargo-deb and the .rpm with rpmbuild (packaging/build.sh --rpm), checks
# that the generated copyright file is current, runs lintian on the .deb and rpmlint on the
# .rpm (errors and warnings fail; the overrides and filters they honour are documented in
# packaging/), checks the .rpm's metadata, installs the .deb with dpkg, checks that every file
# lands where greenarrow_proxy(8) says, starts the installed daemon with the shipped
# configuration as the daemon's user and expects exit status 78 (placeholder secret, then
# missing certificate), makes the configuration usable (real secret, certificate and key made
# with openssl), runs `greenarrow_proxy --check-config` on it as the daemon's user, runs the
# installed daemon as that user with only CAP_NET_BIND_SERVICE on 127.0.0.1:807 (a message
# through it to `gaproxy testmx` on 127.0.0.1:2525, then SIGUSR1, the unit's reload path,
# SIGTERM), checks the man pages and the unit, then removes and purges the package and checks
# what is left. Loopback only. Prints PASS/FAIL lines and a "packaging: N passed, N failed"
# line; exits non-zero on any failure.
#
# systemd is not PID 1 where this runs (CI, containers): the reload path is emulated as
# systemd runs it: the unit's ExecReload= lines in order, as the unit's User=, stopping at the
# first that fails, with $MAINPID substituted; NOTIFY_SOCKET points at a small python3
# datagram listener standing in for systemd, which records STATUS= (NotifyAccess=all).
#
#   tests/packaging.sh              build, then test
#   tests/packaging.sh --deb FILE   test an existing .deb (no .rpm checks)
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
         runuser:util-linux lintian:lintian rpmbuild:rpm rpmlint:rpmlint python3:python3 \
         dpkg-shlibdeps:dpkg-dev; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
        die "installing ${missing[*]}"
    fi
fi

rpm=""
if [ -z "$deb" ]; then
    echo "== building the .deb and the .rpm (packaging/build.sh --rpm)"
    out=$(bash packaging/build.sh --rpm 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -v 'brp-compress: .*Illegal option' | tail -n 20
    [ $rc = 0 ] || die "packaging/build.sh --rpm (exit $rc)"
    deb=$(printf '%s\n' "$out" | sed -n 's/^deb: //p' | tail -n 1)
    rpm=$(printf '%s\n' "$out" | sed -n 's/^rpm: //p' | tail -n 1)
    check "an .rpm was built: $rpm" test -f "$rpm"
fi
check "a .deb was built: $deb" test -f "$deb"
[ -f "$deb" ] || finish

echo "== copyright"
check "packaging/debian/copyright is current (packaging/debian/copyright.py --check)" \
    python3 packaging/debian/copyright.py --check packaging/debian/copyright
check "copyright is machine-readable (DEP-5)" \
    grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' packaging/debian/copyright
check "copyright covers every linked crate (rustls, ring, hickory-resolver, tokio)" \
    bash -c 'for c in rustls ring hickory-resolver tokio; do grep -q "^Files: vendor/$c-[0-9]" packaging/debian/copyright || exit 1; done'

echo "== lintian"
# The overrides shipped in the package (packaging/debian/lintian-overrides) are honoured;
# anything else at error or warning level fails.
lint=$(lintian --fail-on none "$deb" 2>&1 | grep -v '^running with root privileges')
[ -z "$lint" ] || printf '  | %s\n' "$lint"
check "lintian: no errors" bash -c '! grep -q "^E: " <<<"$1"' _ "$lint"
check "lintian: no warnings" bash -c '! grep -q "^W: " <<<"$1"' _ "$lint"

echo "== package metadata"
control=$(dpkg-deb -f "$deb")
printf '%s\n' "$control" | sed -n 's/^\(Maintainer\|Depends\|Description\): /  | &/p'
check "Maintainer is not on localhost" bash -c '! grep -q "^Maintainer: .*@localhost" <<<"$1"' _ "$control"
# The whole Cargo.toml description on one line (cargo-deb wraps a longer one), under 80.
summary=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
check "one-line synopsis under 80 characters: $summary" \
    bash -c '[ ${#2} -lt 80 ] && grep -qxF "Description: $2" <<<"$1"' _ "$control" "$summary"
# Depends covers every package dpkg-shlibdeps finds for the binaries (libc6, libgcc-s1).
shl_dir=$(mktemp -d /tmp/packaging-shlibdeps.XXXXXX)
mkdir -p "$shl_dir/debian" "$shl_dir/x"
touch "$shl_dir/debian/control"
dpkg-deb -x "$deb" "$shl_dir/x"
shlibs=$(cd "$shl_dir" && dpkg-shlibdeps -O x/usr/sbin/greenarrow_proxy x/usr/bin/gaproxy 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p' | tr ',' '\n' | sed 's/^ *//; s/ .*//')
rm -rf "$shl_dir"
check "dpkg-shlibdeps found libgcc-s1 and libc6" bash -c 'grep -qx libgcc-s1 <<<"$1" && grep -qx libc6 <<<"$1"' _ "$shlibs"
for d in $shlibs; do
    check "Depends names $d (dpkg-shlibdeps)" bash -c 'grep -Eq "^Depends: (.*, )?$2( |,|$)" <<<"$1"' _ "$control" "$d"
done

if [ -n "$rpm" ]; then
    echo "== rpmlint and the .rpm"
    rlint=$(rpmlint -c packaging/rpm/rpmlint.toml "$rpm" 2>&1)
    printf '%s\n' "$rlint" | grep -E ': [EW]: |packages and' | sed 's/^/  | /'
    check "rpmlint: no errors or warnings (packaging/rpm/rpmlint.toml)" \
        grep -q ' 0 errors, 0 warnings' <<<"$rlint"
    qf=$(rpm -qp --qf '%{URL}|%{PACKAGER}|%{SUMMARY}\n' "$rpm" 2>/dev/null)
    check "rpm has URL, Packager and Summary ($qf)" bash -c 'IFS="|" read -r u p s <<<"$1"; [ -n "$u" ] && [ "$u" != "(none)" ] && [ "$p" != "(none)" ] && [ ${#s} -lt 80 ]' _ "$qf"
    check "rpm has a changelog" bash -c '[ -n "$(rpm -qp --changelog "$1" 2>/dev/null)" ]' _ "$rpm"
    check "rpm Requires(pre): shadow-utils" \
        bash -c 'rpm -qp --qf "[%{REQUIREFLAGS:deptype} %{REQUIRENAME}\n]" "$1" 2>/dev/null | grep -qx "pre shadow-utils"' _ "$rpm"
    rfiles=$(rpm -qlvp "$rpm" 2>/dev/null)
    check "rpm owns /etc/greenarrow_proxy 0750 root:greenarrow_proxy" \
        grep -Eq '^drwxr-x--- +[0-9]+ root +greenarr[a-z_]* .* /etc/greenarrow_proxy$' <<<"$rfiles"
    check "rpm config 0640 root:greenarrow_proxy" \
        grep -Eq '^-rw-r----- +[0-9]+ root +greenarr[a-z_]* .* /etc/greenarrow_proxy/greenarrow_proxy.yaml$' <<<"$rfiles"
    check "rpm man pages are compressed" \
        bash -c '[ "$(grep -c "/usr/share/man/man[158]/.*\.gz$" <<<"$1")" = 3 ]' _ "$rfiles"
    rx=$(mktemp -d /tmp/packaging-rpm.XXXXXX)
    (cd "$rx" && rpm2cpio "$rpm" | cpio -id --quiet 2>/dev/null)
    for b in usr/sbin/greenarrow_proxy usr/bin/gaproxy; do
        # (.debug_gdb_scripts is a loaded section Rust keeps: not debug information.)
        check "rpm $b is stripped" \
            bash -c '[ -f "$1" ] && ! readelf -S -W "$1" | grep -Eq "\.symtab|\.debug_(info|line|str|abbrev)"' _ "$rx/$b"
    done
    rm -rf "$rx"
    scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
    check "rpm %post uses systemctl preset, never enable" \
        bash -c 'grep -q "systemctl --no-reload preset greenarrow_proxy.service" <<<"$1" && ! grep -q "systemctl .*enable greenarrow" <<<"$1"' _ "$scripts"
fi

echo "== package contents"
contents=$(dpkg-deb --contents "$deb")
check "package contains the unit" grep -Eq ' \./(usr/)?lib/systemd/system/greenarrow_proxy\.service$' <<<"$contents"
for p in ./usr/sbin/greenarrow_proxy ./usr/bin/gaproxy \
         ./usr/share/man/man8/greenarrow_proxy.8.gz ./usr/share/man/man5/greenarrow_proxy.yaml.5.gz \
         ./usr/share/man/man1/gaproxy.1.gz ./etc/greenarrow_proxy/greenarrow_proxy.yaml \
         ./usr/share/doc/$PKG/README.md ./usr/share/doc/$PKG/CONFIG.md ./usr/share/doc/$PKG/PROTOCOL.md \
         ./usr/share/doc/$PKG/monitoring/greenarrow_proxy-alerts.yml \
         ./usr/share/doc/$PKG/monitoring/greenarrow_proxy-dashboard.json; do
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
check "postinst says the daemon refuses to start until then" grep -q "refuses to start (exit status 78" <<<"$install_out"
check "postinst's note runs the check as the daemon's user" \
    grep -q "runuser -u greenarrow_proxy -- greenarrow_proxy --check-config" <<<"$install_out"
check "postinst's note names listen and allow_from" grep -q "listen (loopback by default) and allow_from" <<<"$install_out"

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

# Run the installed daemon as its user (as the unit does) in the foreground; its exit status.
run_daemon_as_user() {
    setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups \
        --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
        timeout 30 /usr/sbin/greenarrow_proxy "$@"
}

echo "== the unconfigured install does not start"
out=$(run_daemon_as_user 2>&1)
rc=$?
printf '  | %s\n' "$out"
check "shipped configuration: exit status 78, EX_CONFIG (got $rc)" test $rc = 78
check "shipped configuration: the message names auth_shared_secret, the file and what to do" \
    bash -c 'grep -q "auth_shared_secret: still the public placeholder" <<<"$1" && grep -q "edit $2" <<<"$1" && grep -q "openssl rand -hex 32" <<<"$1"' _ "$out" "$CONF"
check "nothing listens on 127.0.0.1:807 after the refusal" bash -c '! (exec 3<>/dev/tcp/127.0.0.1/807) 2>/dev/null'
runuser -u "$USER_NAME" -- /usr/sbin/greenarrow_proxy --check-config -q >/dev/null 2>&1
rc=$?
check "--check-config -q on the shipped configuration: exit 78 (got $rc)" test $rc = 78

echo "== make the installed configuration usable"
secret=$(openssl rand -hex 32)
sed -i "s/^auth_shared_secret: .*/auth_shared_secret: \"$secret\"/" "$CONF"
check "secret set in the installed config" grep -q "$secret" "$CONF"
# A real secret, but no certificate yet: still EX_CONFIG, naming the certificate.
out=$(run_daemon_as_user 2>&1)
rc=$?
printf '  | %s\n' "$out"
check "no certificate: exit status 78 (got $rc)" test $rc = 78
check "no certificate: the message names $CONFDIR/tls/cert.pem" grep -q "$CONFDIR/tls/cert.pem" <<<"$out"
install -d -m 750 -o root -g "$USER_NAME" "$CONFDIR/tls"
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=proxy.test -addext subjectAltName=DNS:proxy.test,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
        -keyout "$CONFDIR/tls/key.pem" -out "$CONFDIR/tls/cert.pem" >/dev/null 2>&1; then
    pass "openssl made a certificate and key"
else
    fail "openssl made a certificate and key"
fi
# A key only root can read: --check-config passes as root, fails as the daemon's user (which
# is how the unit's ExecReload= runs it).
chmod 600 "$CONFDIR/tls/key.pem"
check "--check-config -q as root passes with a key only root can read" \
    /usr/sbin/greenarrow_proxy --check-config -q
runuser -u "$USER_NAME" -- /usr/sbin/greenarrow_proxy --check-config -q 2>/tmp/packaging-check.err
rc=$?
check "--check-config -q as $USER_NAME fails on it: exit 78 (got $rc)" test $rc = 78
check "... and names the key file" grep -q "$CONFDIR/tls/key.pem" /tmp/packaging-check.err
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
check "--check-config refuses an unknown key (exit $rc)" test $rc = 78
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
mkfifo "$work/daemon.log" "$work/mx.log" "$work/notify.log"
printf '%s\n' "$secret" >"$work/secret"
# Stands in for systemd's notification socket: one line per datagram (newlines as " | ").
python3 -c '
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
with open(log, "w", buffering=1) as out:
    while True:
        msg = s.recv(4096).decode("utf-8", "replace")
        out.write(msg.rstrip("\n").replace("\n", " | ") + "\n")
' "$work/notify.sock" "$work/notify.log" &
notifier=$!
exec 5<"$work/notify.log"
# As systemd runs ExecReload=: each line of the installed unit in order, as its User=, with
# $MAINPID, stopping at the first that fails. Returns that command's status.
exec_reload() {
    local pid=$1 cmd
    while IFS= read -r cmd; do
        cmd=${cmd//\$MAINPID/$pid}
        runuser -u "$USER_NAME" -- env NOTIFY_SOCKET="$work/notify.sock" sh -c "$cmd" || return $?
    done < <(sed -n 's/^ExecReload=//p' "$UNIT")
}
# Read lines from fd $1 (echoing them) until one contains $2; give up after 30 s of silence.
wait_for() {
    local fd=$1 pattern=$2 line
    while IFS= read -r -t 30 line <&"$fd"; do
        echo "  | $line"
        case "$line" in *"$pattern"*) return 0 ;; esac
    done
    return 1
}
# Read notifications from fd $1 (echoing them), skipping RELOADING=1; the next one must be
# exactly $2.
wait_exact() {
    local fd=$1 want=$2 line
    while IFS= read -r -t 30 line <&"$fd"; do
        echo "  | $line"
        case "$line" in RELOADING=1*) continue ;; esac
        [ "$line" = "$want" ]
        return
    done
    return 1
}
NOTIFY_SOCKET="$work/notify.sock" setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups \
    --inh-caps=+net_bind_service --ambient-caps=+net_bind_service \
    /usr/sbin/greenarrow_proxy 2>"$work/daemon.log" &
daemon=$!
exec 3<"$work/daemon.log"
if wait_for 3 "ready on 127.0.0.1:807"; then
    pass "daemon started on port 807 as $USER_NAME"
    check "READY=1 on the notification socket" wait_for 5 "READY=1"
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
    kill -USR1 "$daemon"
    check "SIGUSR1 logs the report summary" wait_for 3 "report summary"
    kill -HUP "$daemon"
    check "SIGHUP reloads the configuration" wait_for 3 "configuration reloaded"
    check "... and READY=1 with the status text cleared" wait_exact 5 "READY=1 | STATUS="

    echo "== the unit's reload path (ExecReload= emulated: systemd is not PID 1 here)"
    cp -p "$CONF" "$work/good.yaml"
    # A broken file: the check (as $USER_NAME) fails, the daemon is not signalled.
    printf 'no_such_key: 1\n' >>"$CONF"
    exec_reload "$daemon" 2>"$work/reload.err"
    rc=$?
    sed 's/^/  > /' "$work/reload.err"
    check "ExecReload with a broken file fails (exit $rc = 78)" test $rc = 78
    check "... the check names the key" grep -q "no_such_key" "$work/reload.err"
    check "... STATUS= says the running configuration stays" \
        wait_for 5 "STATUS=configuration check failed, not reloaded; still running the previous configuration: "
    # The old configuration still serves; the daemon logged no reload meanwhile (the send's
    # own log lines come first).
    timeout 120 /usr/bin/gaproxy send --proxy 127.0.0.1:807 --proxy-name proxy.test \
        --ca-file "$CONFDIR/tls/cert.pem" --secret-file "$work/secret" \
        --source 127.0.0.1 --mx 127.0.0.1 --port 2525 --timeout 30s >"$work/send.out" 2>&1
    rc=$?
    check "... the running configuration still serves (gaproxy send, exit $rc)" test $rc = 0
    check "... the test MX received the message" wait_for 4 "message from 127.0.0.1"
    kill -USR1 "$daemon"
    if wait_for 3 "report summary" >"$work/between.log"; then
        cat "$work/between.log"
        check "... the daemon was not signalled (no reload logged)" bash -c '! grep -Eq "configuration reloaded|reload failed" "$1"' _ "$work/between.log"
    else
        fail "... the daemon answers SIGUSR1 after the refused reload"
    fi
    # A file the check passes but the daemon cannot put in force: a listen address in use
    # (the test MX's).
    cp -p "$work/good.yaml" "$CONF"
    sed -i 's/^  - "127.0.0.1:807"$/  - "127.0.0.1:807"\n  - "127.0.0.1:2525"/' "$CONF"
    check "config now also listens on 127.0.0.1:2525" grep -qx '  - "127.0.0.1:2525"' "$CONF"
    exec_reload "$daemon"
    rc=$?
    check "ExecReload: the check passes, the daemon is signalled (exit $rc)" test $rc = 0
    check "... the daemon logs the failed reload" wait_for 3 "reload failed, keeping the running configuration"
    check "... STATUS= says the reload failed and the old configuration stays" \
        wait_for 5 "STATUS=reload failed, still running the previous configuration: cannot listen on 127.0.0.1:2525"
    # Fixed: a good reload puts it in force and clears the status text.
    cp -p "$work/good.yaml" "$CONF"
    exec_reload "$daemon"
    rc=$?
    check "ExecReload with the fixed file (exit $rc)" test $rc = 0
    check "... configuration reloaded" wait_for 3 "configuration reloaded"
    check "... READY=1 and the status text cleared" wait_exact 5 "READY=1 | STATUS="
    kill "$mx" 2>/dev/null
    wait "$mx" 2>/dev/null
    exec 4<&-
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
exec 5<&-
kill "$notifier" 2>/dev/null
wait "$notifier" 2>/dev/null
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
check "unit: RestartPreventExitStatus=78" grep -qx "RestartPreventExitStatus=78" "$UNIT"
check "unit: ConditionFileNotEmpty= on the configuration" grep -qx "ConditionFileNotEmpty=$CONF" "$UNIT"
check "unit: ExecReload= checks quietly before it signals" \
    bash -c 'diff <(sed -n "s/^ExecReload=//p" "$1") - >/dev/null <<EOF
/usr/sbin/greenarrow_proxy --check-config --quiet --config-filename $2
/bin/kill -HUP \$MAINPID
EOF' _ "$UNIT" "$CONF"
check "unit: NotifyAccess=all (the reload check reports STATUS=)" grep -qx "NotifyAccess=all" "$UNIT"

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
# Debian's practice: files left behind (the operator's keys) keep their owner, and no later
# user or group can inherit them.
check "user kept by purge" getent passwd "$USER_NAME"
check "group kept by purge" getent group "$USER_NAME"
check "no statoverride left" bash -c "! dpkg-statoverride --list '$CONFDIR*' | grep -q ."
check "unit no longer enabled" test ! -L /etc/systemd/system/multi-user.target.wants/greenarrow_proxy.service
check "no package files left" bash -c '! dpkg -L "$1" >/dev/null 2>&1' _ "$PKG"
left=$(find "$CONFDIR" 2>/dev/null | sort | tr '\n' ' ')
check "only the operator's certificates are left in $CONFDIR (${left:-nothing})" \
    test "$left" = "$CONFDIR $CONFDIR/tls $CONFDIR/tls/cert.pem $CONFDIR/tls/key.pem "
# Clean up what this test made: the certificate directory and the kept user.
rm -rf "$CONFDIR"
userdel "$USER_NAME" >/dev/null 2>&1 || true
groupdel "$USER_NAME" >/dev/null 2>&1 || true

finish
