"""Independent checks of Vigil's operations interface with the reference tools: the real binary runs with a
NOTIFY_SOCKET this script serves (a unix datagram socket, as systemd does) and WATCHDOG_USEC set; its /metrics is
parsed with the Prometheus Python client's own parser (prometheus_client.parser), and the values must move when
a bed alarms. Usage: ops_check.py VIGIL_BINARY WORKDIR
"""
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

vigil, work = sys.argv[1], sys.argv[2]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


dash, mqtt = free_port(), free_port()
config = os.path.join(work, "vigil.toml")
with open(config, "w") as f:
    f.write(f"""
[site]
name = "ci"
ward = "ops"
[mqtt]
mode = "embedded"
port = {mqtt}
client_id = "vigil-ci-ops"
[dashboard]
listen = "127.0.0.1:{dash}"
[store]
path = "{work}/vigil.db"
[[beds]]
id = "chair-1"
[[beds.sources]]
kind = "serial"
device = "masimo"
path = "/nonexistent/ci-tty"
[[beds]]
id = "chair-2"
[[beds.sources]]
kind = "simulated"
device = "masimo"
scenario = "desaturation"
seed = 5
speed = 10
""")

notify_path = os.path.join(work, "notify.sock")
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(notify_path)
# Read like systemd does, all the time, into a queue the checks take from. (A reader that stops reading fills
# the socket: Vigil then drops notifications rather than block, tested in src/service.rs.)
messages = queue.Queue()


def read_notifications():
    while True:
        messages.put(notify.recv(4096).decode())


threading.Thread(target=read_notifications, daemon=True).start()


def next_notification():
    return messages.get(timeout=20)


env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
log = open(os.path.join(work, "vigil.log"), "w")
proc = subprocess.Popen([vigil, "run", "--config", config], env=env, stderr=log)
try:
    first = next_notification()
    if "READY=1" not in first.splitlines():
        fail(f"the first notification is not READY=1: {first!r}")
    print("systemd notify: READY=1")
    # READY means every listener is bound: the dashboard answers now.
    with urllib.request.urlopen(f"http://127.0.0.1:{dash}/healthz", timeout=5) as r:
        health = json.load(r)
    if health.get("status") != "ok":
        fail(f"/healthz: {health}")
    watchdogs = 0
    while watchdogs < 2:
        if "WATCHDOG=1" in next_notification().splitlines():
            watchdogs += 1
    print("systemd notify: WATCHDOG=1 x2")

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{dash}/metrics", timeout=5) as r:
            text = r.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return text, samples

    def value(samples, name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    _, before = scrape()
    for bed in ("chair-1", "chair-2"):
        if value(before, "vigil_bed_vitals_updates_total", bed=bed) is None:
            fail(f"no vigil_bed_vitals_updates_total for {bed}")
    starts_before = value(before, "vigil_alarm_events_total", bed="chair-2", phase="start")
    spo2 = dict(bed="chair-2", priority="high", kind="threshold", condition="spo2_low")
    deadline = time.time() + 40
    while True:
        text, now = scrape()
        if value(now, "vigil_alarms_active", **spo2) == 1.0:
            break
        if time.time() > deadline:
            fail("vigil_alarms_active for chair-2's spo2_low never appeared")
        time.sleep(0.5)
    starts_after = value(now, "vigil_alarm_events_total", bed="chair-2", phase="start")
    if not starts_after > starts_before:
        fail(f"vigil_alarm_events_total{{phase=start}} did not move: {starts_before} -> {starts_after}")
    if value(now, "vigil_source_connected", bed="chair-1", source="chair-1/0", kind="serial", device="masimo") != 0.0:
        fail("chair-1's missing serial port is not shown disconnected")
    if value(now, "vigil_mqtt_connected") != 1.0:
        fail("vigil_mqtt_connected is not 1")
    if value(now, "vigil_store_commit_duration_seconds_count") is None:
        fail("no store commit histogram")
    if value(now, "process_resident_memory_bytes") is None:
        fail("no process metrics")
    print(f"/metrics parsed by prometheus_client: {len(now)} samples; chair-2 alarm starts {starts_before} -> {starts_after}")

    req = urllib.request.Request(f"http://127.0.0.1:{dash}/metrics", headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(req, timeout=5) as r:
        om = list(openmetrics_families(r.read().decode()))
    print(f"OpenMetrics parsed: {len(om)} families")

    with urllib.request.urlopen(f"http://127.0.0.1:{dash}/readyz", timeout=5) as r:
        ready = json.load(r)
    if not ready["ready"] or not ready["checks"]["bed chair-2"]["ok"]:
        fail(f"/readyz: {ready}")
    print("/readyz: ready")

    proc.send_signal(signal.SIGTERM)
    while True:
        if "STOPPING=1" in next_notification().splitlines():
            break
    code = proc.wait(timeout=10)
    if code != 0:
        fail(f"vigil exited {code} after SIGTERM")
    print("systemd notify: STOPPING=1; exit 0")
except queue.Empty:
    fail("no notification within 20 s; log: " + open(os.path.join(work, "vigil.log")).read()[-2000:])
finally:
    if proc.poll() is None:
        proc.kill()
print("1 passed, 0 failed")
