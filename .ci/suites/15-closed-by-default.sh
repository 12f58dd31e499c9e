#!/usr/bin/env bash
# Issue 12's "done when", tried as a new user would, with third-party clients: the shipped config
# (`vigil print-default-config`) plus two users, an MLLP listener with an allow-list, and the dashboard over TLS
# with a CA made here by openssl.
# - mosquitto_sub without credentials is refused; with the viewer's it sees vitals, and its subscription to the
#   replies is denied; the nurse acknowledges with mosquitto_pub, no password in the payload, and gets her reply;
# - an HL7 sender from 127.0.0.2 (not in mllp.allow) is refused and counted on /api/status;
# - curl --cacert reaches the dashboard over HTTPS and gets a Secure session cookie; plain HTTP to that port
#   gets no answer and the daemon keeps serving.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/lib.sh
for tool in mosquitto_sub mosquitto_pub openssl curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (CI installs mosquitto-clients, openssl, curl)"
done
VIGIL_PID=; work=$(mktemp -d); trap 'kill $VIGIL_PID 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
mqtt=$(free_port); mllp=$(free_port); dash=$(free_port)
base=vigil/v1/demo-clinic/ketamine-suite

# A test CA and a certificate for localhost.
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
    -subj "/CN=Vigil CI CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext \
    2>/dev/null
)

"$VIGIL" print-default-config \
  | sed -e "s/^port = 1883/port = $mqtt/" -e "s/127.0.0.1:8080/127.0.0.1:$dash/" \
        -e "s|^path = \"vigil.db\"|path = \"$work/vigil.db\"|" >"$work/vigil.toml"
cat >>"$work/vigil.toml" <<TOML

[dashboard.tls]
cert_file = "$work/server.pem"
key_file = "$work/server.key"

[mllp]
listen = "127.0.0.1:$mllp"
allow = ["127.0.0.1"]

[[users]]
name = "nina"
role = "nurse"
password_hash = "$(printf vigil-nurse | "$VIGIL" hash-password)"

[[users]]
name = "victor"
role = "viewer"
password_hash = "$(printf vigil-viewer | "$VIGIL" hash-password)"
TOML
"$VIGIL" check-config "$work/vigil.toml" >/dev/null || fail "the shipped config plus TLS, MLLP and users does not parse"
start_vigil "$work/vigil.toml" "$work/vigil.log"
wait_port "$mqtt"; wait_port "$dash"; wait_port "$mllp"

# 1. Anonymous MQTT is refused.
if mosquitto_sub -h 127.0.0.1 -p "$mqtt" -t "$base/#" -C 1 -W 5 >"$work/anon.out" 2>&1; then
  cat "$work/anon.out"; fail "an anonymous mosquitto_sub got a message"
fi
grep -qi "not authori" "$work/anon.out" || { cat "$work/anon.out"; fail "anonymous: no 'not authorised' refusal"; }
echo "anonymous mosquitto_sub refused: $(head -1 "$work/anon.out")"

# 2. The viewer sees vitals, but not the replies.
mosquitto_sub -u victor -P vigil-viewer -h 127.0.0.1 -p "$mqtt" -t "$base/bed/chair-1/vitals" -C 1 -W 20 \
  >"$work/vitals.json" || fail "the viewer saw no vitals"
grep -q '"values"' "$work/vitals.json" || fail "the viewer's vitals message has no values: $(cat "$work/vitals.json")"
echo "viewer sees vitals"
mosquitto_sub -u victor -P vigil-viewer -h 127.0.0.1 -p "$mqtt" -t "$base/reply/#" -C 1 -W 3 >"$work/denied.out" 2>&1 \
  || true
grep -qi "denied" "$work/denied.out" || { cat "$work/denied.out"; fail "the viewer's subscription to replies was not denied"; }
echo "viewer's subscription to replies: $(head -1 "$work/denied.out")"

# 3. Once a simulated chair alarms, the nurse acknowledges it from mosquitto_pub with no password in the payload,
#    and reads her reply.
mosquitto_sub -u victor -P vigil-viewer -h 127.0.0.1 -p "$mqtt" -t "$base/bed/+/alarm" -v -C 1 -W 90 >"$work/alarm.txt" \
  || fail "no simulated chair raised an alarm within 90 s"
bed=$(sed -E 's|^[^ ]*/bed/([^/]+)/alarm .*|\1|' "$work/alarm.txt")
echo "first alarm on $bed"
mosquitto_sub -u nina -P vigil-nurse -h 127.0.0.1 -p "$mqtt" -t "$base/reply/$bed" -C 1 -W 15 >"$work/reply.json" &
replies=$!
sleep 1
mosquitto_pub -u nina -P vigil-nurse -h 127.0.0.1 -p "$mqtt" -q 1 -t "$base/cmd/$bed/nina" \
  -m '{"command":"acknowledge","request_id":"ci-1"}'
wait "$replies" || fail "no reply to the nurse's command"
grep -q '"ok":true' "$work/reply.json" && grep -q '"user":"nina"' "$work/reply.json" \
  || fail "the nurse's acknowledge was not carried out as nina: $(cat "$work/reply.json")"
echo "nurse acknowledged from mosquitto_pub: $(cat "$work/reply.json")"

# 4. An HL7 sender from a non-allowed address is refused and counted.
python3 - "$mllp" <<'PY'
import socket, sys
s = socket.socket()
s.bind(("127.0.0.2", 0))
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"\x0bMSH|^~\\&|X^00A0370098007A80^EUI-64||||20240101000000||ORU^R01|1|P|2.6\r\x1c\r")
s.settimeout(5)
try:
    data = s.recv(4096)
except (ConnectionResetError, socket.timeout):
    data = b""
assert b"MSA" not in data, data
PY
status=$(curl -sS --cacert "$work/ca.pem" "https://localhost:$dash/api/status")
echo "$status" | grep -q '"refused_peers":1' || fail "the refused HL7 peer is not counted: $status"
echo "HL7 from 127.0.0.2 refused and counted: $(echo "$status" | grep -o '"mllp":{[^}]*}')"

# 5. HTTPS with curl: a Secure, HttpOnly, SameSite=Strict cookie; plain HTTP gets nothing and breaks nothing.
curl -sS --cacert "$work/ca.pem" -D "$work/headers" -o /dev/null -H 'Content-Type: application/json' \
  -d '{"name":"nina","password":"vigil-nurse"}' "https://localhost:$dash/api/session"
cookie=$(grep -i '^set-cookie:' "$work/headers" || true)
for attribute in Secure HttpOnly SameSite=Strict; do
  echo "$cookie" | grep -q "$attribute" || fail "the session cookie lacks $attribute: $cookie"
done
echo "HTTPS sign-in: $cookie"
if curl -sS -m 5 "http://127.0.0.1:$dash/api/me" >"$work/plain.out" 2>&1; then
  fail "plain HTTP to the TLS port was answered: $(cat "$work/plain.out")"
fi
curl -sS --cacert "$work/ca.pem" "https://localhost:$dash/api/me" | grep -q '"site"' || fail "HTTPS stopped after plain HTTP"
echo "plain HTTP to the TLS port refused; HTTPS still served"

stop_vigil
echo "closed-by-default suite: 5 passed, 0 failed"
