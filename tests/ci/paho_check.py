#!/usr/bin/env python3
"""Independent check of Vigil's MQTT guarantees with Eclipse paho-mqtt (a client Vigil's own tests do not use).

How to call it (CI does exactly this, from the repository root):

    apt-get install -y mosquitto          # the script starts its own broker on a free port
    pip install paho-mqtt                 # 1.6 or 2.x; `pip install jsonschema` adds payload schema checks
    python3 tests/ci/paho_check.py        # honours CARGO_TARGET_DIR; needs cargo on PATH

It builds the driver `tests/mqtt_paho_driver.rs` (`cargo test --no-run`), runs that test binary (the Vigil
publisher: store + hub + outbox + commands, with a fake bed that answers acknowledgements) against a Mosquitto it
starts with persistence on, and checks as an integrator would:

 1. the retained status says online, with a sequence number;
 2. every alarm event arrives exactly once after de-duplication by (alarm_id, seq), with bed_seq contiguous per
    bed, although the broker is stopped and restarted mid-stream;
 3. an acknowledge command on the nurse's own command topic (no password) is answered ok and the acknowledgement
    event follows;
 4. a viewer's command, a malformed command and one with the old password field are refused with a reason;
 5. a late subscriber gets the retained alarms snapshot with the latest bed_seq;
 6. when the publisher is killed with SIGKILL, the last will says offline with the birth's sequence number;
 7. (with jsonschema installed) every payload validates against docs/schemas/.

Prints one line per check and a closing "N passed, M failed" line; exits 1 if any check failed, 2 if it could
not run (mosquitto, paho-mqtt or cargo missing).
"""

import json
import os
import pathlib
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE = "vigil/v1/test-site/ward-a"
EVENTS = 60

try:
    import paho.mqtt.client as mqtt
except ImportError:
    print("cannot run: paho-mqtt is not installed (pip install paho-mqtt)")
    sys.exit(2)

try:
    import jsonschema
except ImportError:
    jsonschema = None

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok or not detail else ": " + detail), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, within=10.0):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    def __init__(self, workdir):
        self.binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
        if not self.binary:
            print("cannot run: mosquitto is not installed (apt-get install mosquitto)")
            sys.exit(2)
        self.port = free_port()
        self.dir = workdir
        os.chmod(workdir, 0o777)  # mosquitto started as root drops to its own user
        self.conf = os.path.join(workdir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {workdir}/\nautosave_interval 1\nmax_queued_messages 10000\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_port(self.port):
            raise RuntimeError("mosquitto did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def client(client_id, clean):
    try:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    except AttributeError:  # paho-mqtt 1.x
        c = mqtt.Client(client_id=client_id, clean_session=clean)
    c.reconnect_delay_set(min_delay=0.2, max_delay=1)
    return c


class Subscriber:
    """Collects every message on `topic`, reconnecting by itself (paho's loop thread)."""

    def __init__(self, port, client_id, topic, clean):
        self.q = queue.Queue()
        self.seen = []
        self.c = client(client_id, clean)
        self.c.on_connect = lambda c, u, f, rc, *p: c.subscribe(topic, qos=1)
        self.c.on_message = lambda c, u, m: self.q.put((m.topic, m.retain, m.payload))
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()

    def wait(self, pred, within):
        """The first message (already seen or new) for which pred(topic, json, retain) holds."""
        for m in self.seen:
            if pred(*m):
                return m
        deadline = time.time() + within
        while time.time() < deadline:
            try:
                topic, retain, payload = self.q.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
            m = (topic, body, retain)
            self.seen.append(m)
            if pred(*m):
                return m
        return None

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def publish(port, topic, payload):
    c = client(f"paho-pub-{time.time_ns()}", True)
    c.connect("127.0.0.1", port, keepalive=5)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def driver_binary():
    out = subprocess.run(["cargo", "test", "--test", "mqtt_paho_driver", "--no-run", "--message-format=json"],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg.get("target", {}).get("name") == "mqtt_paho_driver":
            return msg["executable"]
    raise RuntimeError("cargo did not report the mqtt_paho_driver test binary")


def unique_alarms(sub):
    seen = {}
    for topic, body, _ in sub.seen:
        if topic.endswith("/alarm") and isinstance(body, dict):
            seen.setdefault((body["alarm_id"], body["seq"]), body)
    return seen


def main():
    if not shutil.which("cargo"):
        print("cannot run: cargo is not on PATH")
        return 2
    exe = driver_binary()
    work = tempfile.mkdtemp(prefix="vigil-paho-")
    broker = Mosquitto(work)
    driver = None
    try:
        sub = Subscriber(broker.port, "paho-check", BASE + "/#", clean=False)
        time.sleep(0.5)
        env = dict(os.environ, VIGIL_PAHO_DIR=work, VIGIL_PAHO_PORT=str(broker.port),
                   VIGIL_PAHO_EVENTS=str(EVENTS), VIGIL_PAHO_INTERVAL_MS="100")
        driver = subprocess.Popen([exe, "--ignored", "--exact", "paho_driver", "--nocapture"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        online = sub.wait(lambda t, b, r: t.endswith("/status") and b and b.get("state") == "online", 30)
        check("status is online with a sequence number", bool(online and isinstance(online[1].get("seq"), int)))
        birth_seq = online[1]["seq"] if online else None

        sub.wait(lambda t, b, r: len(unique_alarms(sub)) >= 15, 30)
        broker.stop()
        time.sleep(1.5)
        broker.start()
        deadline = time.time() + 60
        while len(unique_alarms(sub)) < EVENTS and time.time() < deadline:
            sub.wait(lambda t, b, r: False, 0.5)
        events = unique_alarms(sub)
        per_bed = {}
        for body in events.values():
            per_bed.setdefault(body["bed"], []).append(body["bed_seq"])
        contiguous = all(sorted(v) == list(range(1, len(v) + 1)) for v in per_bed.values())
        total = sum(1 for t, b, _ in sub.seen if t.endswith("/alarm"))
        check(f"{EVENTS} alarm events exactly once after de-duplication across a broker restart "
              f"({total} received, {total - len(events)} duplicates)", len(events) == EVENTS,
              f"got {len(events)} unique")
        check("bed_seq is contiguous per bed", contiguous and len(per_bed) == 2, str({k: sorted(v) for k, v in per_bed.items()}))

        # The topic names the sender (a broker ACL pins cmd/+/%u to the signed-in account); no password in payloads.
        publish(broker.port, BASE + "/cmd/chair-1/nina", json.dumps({
            "command": "acknowledge", "alarm_id": "chair-1-a0",
            "request_id": "paho-1", "reply_to": BASE + "/reply/paho"}))
        reply = sub.wait(lambda t, b, r: t.endswith("/reply/paho") and b and b.get("request_id") == "paho-1", 20)
        check("acknowledge by a nurse is answered ok", bool(reply and reply[1].get("ok") is True), str(reply))
        acked = sub.wait(lambda t, b, r: t.endswith("/bed/chair-1/alarm") and b and b.get("state") == "acknowledged"
                         and b.get("by") == "nina", 20)
        check("the acknowledgement event is published", acked is not None)

        publish(broker.port, BASE + "/cmd/chair-1/victor", json.dumps({
            "command": "acknowledge", "request_id": "paho-2"}))
        publish(broker.port, BASE + "/cmd/chair-1/nina",
                '{"command": "acknowledge", "alarmid": 1, "request_id": "paho-3"}')
        publish(broker.port, BASE + "/cmd/chair-1/nina", json.dumps({
            "command": "acknowledge", "password": "anin", "request_id": "paho-4"}))
        viewer = sub.wait(lambda t, b, r: t.endswith("/reply/chair-1") and b and b.get("request_id") == "paho-2", 20)
        malformed = sub.wait(lambda t, b, r: t.endswith("/reply/chair-1") and b and b.get("request_id") == "paho-3", 20)
        check("a viewer's command is refused with a reason",
              bool(viewer and viewer[1]["ok"] is False and "needs role" in viewer[1].get("reason", "")), str(viewer))
        check("a malformed command is refused with a reason",
              bool(malformed and malformed[1]["ok"] is False and "malformed" in malformed[1].get("reason", "")),
              str(malformed))
        old = sub.wait(lambda t, b, r: t.endswith("/reply/chair-1") and b and b.get("request_id") == "paho-4", 20)
        check("a command with the old password field is refused with a reason",
              bool(old and old[1]["ok"] is False and "no password" in old[1].get("reason", "")), str(old))

        late = Subscriber(broker.port, "paho-late", BASE + "/bed/chair-2/alarms", clean=True)
        want = max(per_bed.get("chair-2", [0]))
        snap = late.wait(lambda t, b, r: r and b and b.get("bed_seq") == want, 10)
        check("a late subscriber gets the retained alarms snapshot with the latest bed_seq", snap is not None)
        late.close()

        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        driver = None
        will = sub.wait(lambda t, b, r: t.endswith("/status") and b and b.get("state") == "offline", 20)
        check("SIGKILL: the last will says offline, reason connection-lost, with the birth's seq",
              bool(will and will[1].get("reason") == "connection-lost" and will[1].get("seq") == birth_seq),
              str(will))

        if jsonschema is None:
            print("SKIP payload schemas: pip install jsonschema to check them")
        else:
            schemas = ROOT / "docs" / "schemas"
            kinds = [("/status", "vigil-status"), ("/vitals", "vigil-vitals"), ("/alarm", "vigil-alarm-event"),
                     ("/alarms", "vigil-alarms-snapshot"), ("/session", "vigil-session"), ("/device", "vigil-device"),
                     ("/reply/", "vigil-command-reply")]
            bad = []
            for topic, body, _ in sub.seen:
                for suffix, name in kinds:
                    if topic.endswith(suffix) or (suffix == "/reply/" and "/reply/" in topic):
                        schema = json.loads((schemas / f"{name}.schema.json").read_text())
                        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(body))
                        if errors:
                            bad.append(f"{topic}: {errors[0].message}")
                        break
            check("every payload validates against docs/schemas", not bad, "; ".join(bad[:3]))
        sub.close()
    finally:
        if driver:
            driver.kill()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
