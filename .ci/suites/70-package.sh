#!/usr/bin/env bash
# The Debian package as a new user gets it: `cargo deb` builds it (cargo-deb installed once, then reused); its file
# list and control data are checked with dpkg-deb; the unit passes `systemd-analyze verify`; `dpkg -i` installs it
# on this machine (the vigil user and /var/lib/vigil made, nothing started); the installed binary checks and runs
# the installed configuration as the vigil user with a NOTIFY_SOCKET, /metrics shows each bed, and, with an admin
# added to the installed configuration as an operator would, `vigil self-test` passes every hop. Then purged.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
export DEBIAN_FRONTEND=noninteractive
# systemd-analyze for verify, man-db for its man: checks, adduser for the package's Depends.
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
command -v adduser >/dev/null || need+=(adduser)
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
target=${CARGO_TARGET_DIR:-target}
rm -f "$target"/debian/vigil_*.deb
cargo deb --quiet
deb=$(ls "$target"/debian/vigil_*.deb)
echo "built $deb ($(du -h "$deb" | cut -f1))"

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in ./usr/bin/vigil ./usr/bin/vigil-sim ./lib/systemd/system/vigil.service ./etc/vigil/vigil.toml \
  ./usr/share/vigil/profiles/ketamine-chair.toml ./usr/share/vigil/profiles/ketamine-chair-strict.toml \
  ./usr/share/man/man1/vigil.1.gz ./usr/share/man/man1/vigil-run.1.gz ./usr/share/man/man1/vigil-sim.1.gz \
  ./usr/share/bash-completion/completions/vigil ./usr/share/zsh/vendor-completions/_vigil \
  ./usr/share/fish/vendor_completions.d/vigil.fish ./usr/share/doc/vigil/operations.md \
  ./usr/share/doc/vigil/configuration.md; do
  grep -qx "$path" <<<"$contents" || fail "$deb lacks $path"
done
grep -q "demo" <<<"$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/vigil/vigil.toml | grep -v '^#' | grep scenario || true)" \
  && fail "the packaged config runs simulated chairs"
info=$(dpkg-deb -I "$deb")
grep -q "^ Package: vigil" <<<"$info" || fail "control: no Package: vigil"
grep -q "^ Depends:.*adduser" <<<"$info" || fail "control: no Depends on adduser"
[ "$(dpkg-deb -I "$deb" conffiles)" = "/etc/vigil/vigil.toml" ] || fail "conffiles is not /etc/vigil/vigil.toml"
for script in postinst prerm postrm; do dpkg-deb -I "$deb" "$script" >/dev/null || fail "no $script"; done
echo "package contents and control data: ok"

dpkg --purge vigil >/dev/null 2>&1 || true
dpkg -i "$deb"
trap 'kill $run_pid 2>/dev/null || true; dpkg --purge vigil >/dev/null 2>&1 || true' EXIT
getent passwd vigil >/dev/null || fail "postinst did not create the vigil user"
id -nG vigil | grep -qw dialout || fail "vigil is not in dialout"
[ "$(stat -c %U:%a /var/lib/vigil)" = "vigil:750" ] || fail "/var/lib/vigil is $(stat -c %U:%a /var/lib/vigil)"
pgrep -u vigil -x vigil >/dev/null && fail "the package started an unconfigured daemon"
systemd-analyze verify /lib/systemd/system/vigil.service
echo "systemd-analyze verify: clean"
/usr/bin/vigil check-config /etc/vigil/vigil.toml
man -w vigil >/dev/null || fail "man does not find the vigil page"

# The installed daemon on the installed configuration, as systemd would run it (user, working directory, notify),
# with an admin for the shift-start self-test added the way docs/operations.md tells the operator to.
work=$(mktemp -d); chmod 755 "$work"
admin_hash=$(printf 'ci-admin-pass' | /usr/bin/vigil hash-password)
printf '\n[[users]]\nname = "ci-admin"\nrole = "admin"\npassword_hash = "%s"\n' "$admin_hash" >>/etc/vigil/vigil.toml
/usr/bin/vigil check-config /etc/vigil/vigil.toml >/dev/null || fail "the installed config with an admin added does not check"
python3 - "$work/notify.sock" >"$work/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); import os; os.chmod(sys.argv[1], 0o777)
s.settimeout(30)
print(s.recv(4096).decode(), flush=True)
PY
notify_pid=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
(cd /var/lib/vigil && NOTIFY_SOCKET="$work/notify.sock" \
  exec setpriv --reuid=vigil --regid=vigil --init-groups /usr/bin/vigil run --config /etc/vigil/vigil.toml) \
  >"$work/vigil.log" 2>&1 &
run_pid=$!
wait "$notify_pid" || fail "no READY=1 from the installed daemon: $(tail -5 "$work/vigil.log")"
grep -qx "READY=1" "$work/notify.log" || fail "notification was not READY=1: $(cat "$work/notify.log")"
metrics=$(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=5).read().decode())')
for bed in chair-1 chair-2; do
  grep -q "vigil_bed_vitals_updates_total{bed=\"$bed\"}" <<<"$metrics" || fail "/metrics does not show $bed"
done
grep -q 'vigil_source_connected{bed="chair-1",source="chair-1/0",kind="serial",device="masimo"} 0' <<<"$metrics" \
  || fail "the unplugged serial monitor is not shown disconnected"
[ -f /var/lib/vigil/vigil.db ] || fail "the store is not in /var/lib/vigil"
# The shift-start self-test as root (the config is 0640 root:vigil), for the installed daemon's first bed.
VIGIL_PASSWORD=ci-admin-pass timeout 90 /usr/bin/vigil self-test --config /etc/vigil/vigil.toml --user ci-admin \
  --json >"$work/selftest.json" || fail "vigil self-test against the installed daemon failed: $(cat "$work/selftest.json")"
python3 - "$work/selftest.json" <<'PY' || fail "the self-test report is not a pass of every hop"
import json, sys
r = json.load(open(sys.argv[1]))
hops = {h["hop"]: h["ok"] for h in r["hops"]}
assert r["passed"] and all(hops.values()), r
for hop in ("engine", "store", "mqtt", "dashboard", "mqtt-subscriber"):
    assert hops.get(hop), (hop, r)
print("self-test on the installed daemon: " + ", ".join(f"{h['hop']} {h['ms']} ms" for h in r["hops"]))
PY
kill -TERM "$run_pid"
wait "$run_pid" || fail "the installed daemon did not exit 0 on SIGTERM: $(tail -5 "$work/vigil.log")"
rm -rf "$work"
dpkg --purge vigil >/dev/null
getent passwd vigil >/dev/null && fail "purge left the vigil user"
[ -e /var/lib/vigil ] && fail "purge left /var/lib/vigil"
echo "installed, ran on the installed configuration, purged: ok"
echo "1 passed, 0 failed"
