//! Load harness: N simulated chairs in the daemon and M HL7 monitors over their own MLLP/TCP connections,
//! against a real `vigil` process on the embedded broker, with a real MQTT subscriber timing every vitals
//! message from the bed's receive time (`time`) to its arrival. Reports the daemon's CPU (share of one core)
//! and RSS, per chair, and the latency percentiles. Method and recorded figures: `docs/performance.md`.
//!
//! ```text
//! cargo build --release --bin vigil --example vigil-load
//! target/release/examples/vigil-load --chairs 1000 [--hl7 0] [--warmup 10] [--seconds 30] [--speed 1] [--alarming 0]
//! ```
//! `--speed 2` doubles every chair's rate; `--alarming N` runs N chairs on the desaturation scenario, whose alarm
//! events are timed like vitals.
//!
//! Overload (`--burst-hl7 M`): M more HL7 monitors send once a second, then `--burst-rate R` times a second for
//! `--burst-seconds S`, then once a second again; the first `--burst-alarming K` of them send SpO2 80 % during the
//! burst only, so alarms start under overload and end after it. The harness then reports three windows (steady,
//! overload, after), each with its vitals rate and latency, vitals shed, and alarm event latency.
//! The daemon binary is looked up next to the harness (`target/release/vigil`); `--bin PATH` overrides it.
//!
//! `--scrape-every S` (default 5) reads the store writer's queue from `/metrics` every S seconds of a window. A
//! scrape is not free: at 5,000 beds `/metrics` is megabytes, encoded from a copy of the ward's state, and
//! one scrape cost the daemon 0.06 core-seconds (twice a second: about 0.12 core); Prometheus scrapes every 15 s or more.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    chairs: usize,
    hl7: usize,
    warmup: u64,
    seconds: u64,
    bin: PathBuf,
    /// Simulated seconds per second for every chair (2 doubles the vitals rate).
    speed: f64,
    /// How many of the chairs run the `desaturation` scenario (alarms) instead of `calm-session`.
    alarming: usize,
    /// HL7 monitors that raise the load for the overload window.
    burst_hl7: usize,
    /// Messages per second each of them sends during the overload window.
    burst_rate: u64,
    /// How long the overload window lasts.
    burst_seconds: u64,
    /// How many burst monitors send a low SpO2 during the overload window.
    burst_alarming: usize,
    /// Seconds between two reads of `/metrics` during a window.
    scrape_every: u64,
}

/// The command line, or why it is wrong (the caller prints it and exits 2).
fn args() -> Result<Args, String> {
    let mut a = Args {
        chairs: 100,
        hl7: 0,
        warmup: 10,
        seconds: 30,
        bin: PathBuf::new(),
        speed: 1.0,
        alarming: 0,
        burst_hl7: 0,
        burst_rate: 10,
        burst_seconds: 30,
        burst_alarming: 0,
        scrape_every: 5,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    a.bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("vigil")).unwrap_or_default();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let number = |what: &str| v.parse::<u64>().map_err(|_| format!("{k} takes {what}, not '{v}'"));
        match k.as_str() {
            "--chairs" => a.chairs = number("a number of chairs")? as usize,
            "--hl7" => a.hl7 = number("a number of monitors")? as usize,
            "--warmup" => a.warmup = number("seconds")?,
            "--seconds" => a.seconds = number("seconds")?,
            "--bin" => a.bin = v.into(),
            "--alarming" => a.alarming = number("a number of chairs")? as usize,
            "--burst-hl7" => a.burst_hl7 = number("a number of monitors")? as usize,
            "--burst-rate" => a.burst_rate = number("messages per second")?.max(1),
            "--burst-seconds" => a.burst_seconds = number("seconds")?,
            "--burst-alarming" => a.burst_alarming = number("a number of monitors")? as usize,
            "--scrape-every" => a.scrape_every = number("seconds")?.max(1),
            "--speed" => {
                a.speed = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| *f > 0.0)
                    .ok_or_else(|| format!("--speed takes a factor, not '{v}'"))?
            }
            _ => {
                return Err(format!(
                    "unknown argument {k} (--chairs, --hl7, --warmup, --seconds, --bin, --speed, --alarming, \
                     --burst-hl7, --burst-rate, --burst-seconds, --burst-alarming, --scrape-every)"
                ))
            }
        }
    }
    Ok(a)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn device_id(j: usize) -> String {
    format!("00A03700{j:08X}")
}

/// The subscriber's account: the embedded broker is closed by default, so the harness signs in as a viewer.
const USER: &str = "load";
const PASSWORD: &str = "load-harness-password";

fn config(a: &Args, dir: &std::path::Path, mqtt: u16, mllp: u16, http: u16) -> String {
    let hash = vigil::auth::hash_password(PASSWORD).expect("hash the harness password");
    let mut s = format!(
        "[site]\nname = \"load\"\nward = \"w\"\n[mqtt]\nmode = \"embedded\"\nhost = \"127.0.0.1\"\nport = {mqtt}\n\
         client_id = \"vigil-load\"\n[dashboard]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{}\"\n\
         [[users]]\nname = \"{USER}\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n",
        dir.join("vigil.db").display()
    );
    if a.hl7 + a.burst_hl7 > 0 {
        s.push_str(&format!("[mllp]\nlisten = \"127.0.0.1:{mllp}\"\n"));
    }
    for i in 0..a.chairs {
        s.push_str(&format!(
            "[[beds]]\nid = \"chair-{i}\"\n[[beds.sources]]\nkind = \"simulated\"\ndevice = \"masimo\"\n\
             scenario = \"{}\"\nseed = {}\nspeed = {}\n",
            if i < a.alarming { "desaturation" } else { "calm-session" },
            i + 1,
            a.speed
        ));
    }
    for j in 0..a.hl7 {
        s.push_str(&format!(
            "[[beds]]\nid = \"hl7-{j}\"\n[[beds.sources]]\nkind = \"mllp\"\ndevice = \"hl7\"\ndevice_id = \"{}\"\n",
            device_id(j)
        ));
    }
    for j in 0..a.burst_hl7 {
        s.push_str(&format!(
            "[[beds]]\nid = \"burst-{j}\"\n[[beds.sources]]\nkind = \"mllp\"\ndevice = \"hl7\"\ndevice_id = \"{}\"\n",
            device_id(BURST_IDS + j)
        ));
    }
    s
}

/// Device ids of burst monitors start here, clear of the steady monitors'.
const BURST_IDS: usize = 1 << 24;

/// A PCD-01 ORU^R01 with SpO2 and pulse, from the Mindray sample, for device `j`.
fn hl7_message(j: usize, control: u64, spo2: u32) -> Vec<u8> {
    let text = format!(
        "MSH|^~\\&|MINDRAY_VS900^{id}^EUI-64||||20191206113452||ORU^R01^ORU_R01|{control}|P|2.6|||AL|NE\r\
         PID|||^^^Hospital^PI||^^^^^^L\r\
         OBR|1|{control}^MINDRAY_VS900^{id}^EUI-64|{control}^MINDRAY_VS900^{id}^EUI-64|182777000^monitoring of patient^SCT|||20191206113452\r\
         OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|{spo2}|262688^MDC_DIM_PERCENT^MDC|||||R|||20191206113452\r\
         OBX|2|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.3.1.149530|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||20191206113452\r",
        id = device_id(j)
    );
    let mut out = vec![0x0b];
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&[0x1c, 0x0d]);
    out
}

/// How a monitor paces itself: the steady ones send once a second; burst ones follow the harness's burst switch.
#[derive(Clone)]
enum Pace {
    Steady,
    Burst { on: Arc<AtomicBool>, rate: u64, alarming: bool },
}

async fn monitor(j: usize, port: u16, acks: Arc<Mutex<u64>>, pace: Pace) {
    let mut stream = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut buf = vec![0u8; 4096];
    let mut next = tokio::time::Instant::now();
    for control in 1.. {
        let (gap, spo2) = match &pace {
            Pace::Burst { on, rate, alarming } if on.load(Ordering::Relaxed) => {
                (Duration::from_secs(1) / *rate as u32, if *alarming { 80 } else { 97 })
            }
            _ => (Duration::from_secs(1), 97),
        };
        next += gap;
        tokio::time::sleep_until(next).await;
        if stream.write_all(&hl7_message(j, control, spo2)).await.is_err() {
            return;
        }
        let mut got = Vec::new();
        while !got.ends_with(&[0x1c, 0x0d]) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        *acks.lock().unwrap() += 1;
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vigil-load: {e}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, mllp, http) = (free_port(), free_port(), free_port());
    let cfg = dir.path().join("load.toml");
    std::fs::write(&cfg, config(&a, dir.path(), mqtt, mllp, http)).unwrap();
    let child = Command::new(&a.bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", std::env::var("VIGIL_LOAD_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", a.bin.display()));
    let pid = child.id();
    let _guard = Stop(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", mqtt)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(120), "daemon did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("daemon up after {:?}", started.elapsed());

    let acks = Arc::new(Mutex::new(0u64));
    for j in 0..a.hl7 {
        tokio::spawn(monitor(j, mllp, acks.clone(), Pace::Steady));
    }
    let burst = Arc::new(AtomicBool::new(false));
    for j in 0..a.burst_hl7 {
        let pace = Pace::Burst { on: burst.clone(), rate: a.burst_rate, alarming: j < a.burst_alarming };
        tokio::spawn(monitor(BURST_IDS + j, mllp, acks.clone(), pace));
    }

    let mut o = MqttOptions::new("vigil-load-sub", "127.0.0.1", mqtt);
    o.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20).set_credentials(USER, PASSWORD);
    let (client, mut el) = AsyncClient::new(o, 1000);
    client.subscribe("vigil/v1/load/w/bed/+/vitals", QoS::AtMostOnce).await.unwrap();
    client.subscribe("vigil/v1/load/w/bed/+/alarm", QoS::AtLeastOnce).await.unwrap();
    let measuring = Arc::new(Mutex::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let alarms = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (m2, s2, a2) = (measuring.clone(), samples.clone(), alarms.clone());
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !*m2.lock().unwrap() {
                        continue;
                    }
                    let now = chrono::Utc::now();
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let Some(t) = v["time"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
                        continue;
                    };
                    let ms = (now - t.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    if p.topic.ends_with("/alarm") {
                        a2.lock().unwrap().push(ms);
                        continue;
                    }
                    let mut s = s2.lock().unwrap();
                    s.0.push(ms);
                    s.1.insert(p.topic.clone());
                    s.2 += 1;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => eprintln!("subscribed: {:?}", ack.return_codes),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let scrape_every = Duration::from_secs(a.scrape_every);
    let probe = Probe { pid, http, measuring, samples, alarms, acks, scrape_every };
    let n = a.chairs + a.hl7 + a.burst_hl7;
    println!("| window | chairs | HL7 monitors | burst monitors | CPU (share of one core) | CPU per bed | RSS | RSS per bed | beds seen on MQTT | vitals msgs/s | p50 / p99 / max ms | HL7 ACKs/s | vitals shed/s | alarm events | alarm p50 / p99 / max ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |name: &str, w: Window| {
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.5} | {:.0} MB (peak {:.0}) | {:.1} KB | {} of {n} | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} | {:.0} | {} | {:.1} / {:.1} / {:.1} |",
            a.chairs,
            a.hl7,
            a.burst_hl7,
            w.cpu,
            w.cpu / n.max(1) as f64,
            w.rss_kb as f64 / 1024.0,
            w.hwm_kb as f64 / 1024.0,
            w.rss_kb as f64 / n.max(1) as f64,
            w.beds,
            w.msgs_per_s,
            percentile(&w.latency, 0.5),
            percentile(&w.latency, 0.99),
            w.latency.last().copied().unwrap_or(f64::NAN),
            w.acks_per_s,
            w.moved("vitals_shed") as f64 / w.seconds,
            w.alarm_latency.len(),
            percentile(&w.alarm_latency, 0.5),
            percentile(&w.alarm_latency, 0.99),
            w.alarm_latency.last().copied().unwrap_or(f64::NAN),
        );
        println!(
            "  {name}: store writer queue at most {:.0} jobs, {:.0} at the end",
            w.store_queue_max, w.store_queue_end
        );
        for key in ["hub_events_missed", "quarantined"] {
            if w.moved(key) > 0 {
                println!("  {name}: publisher {key} during the window: {}", w.moved(key));
            }
        }
    };
    let steady = probe.window(a.seconds).await;
    row("steady", steady);
    if a.burst_hl7 > 0 {
        burst.store(true, Ordering::Relaxed);
        let overload = probe.window(a.burst_seconds).await;
        burst.store(false, Ordering::Relaxed);
        row(&format!("overload ({} monitors at {}/s)", a.burst_hl7, a.burst_rate), overload);
        let after = probe.window(a.seconds).await;
        row("after", after);
    }
    println!(
        "speed {}, {} alarming chairs, {} alarming burst monitors",
        a.speed,
        a.alarming.min(a.chairs),
        a.burst_alarming.min(a.burst_hl7)
    );
}

/// Vitals latencies (ms), the topics seen and the message count, collected by the subscriber.
type Samples = (Vec<f64>, HashSet<String>, u64);

/// What the harness samples in the daemon and the subscriber during a measurement window.
struct Probe {
    pid: u32,
    http: u16,
    measuring: Arc<Mutex<bool>>,
    samples: Arc<Mutex<Samples>>,
    alarms: Arc<Mutex<Vec<f64>>>,
    acks: Arc<Mutex<u64>>,
    scrape_every: Duration,
}

/// One window's figures.
struct Window {
    seconds: f64,
    cpu: f64,
    rss_kb: u64,
    hwm_kb: u64,
    beds: usize,
    msgs_per_s: f64,
    latency: Vec<f64>,
    acks_per_s: f64,
    alarm_latency: Vec<f64>,
    delivery: (serde_json::Value, serde_json::Value),
    /// The store writer's queue (`vigil_store_queue_depth`), at most and at the end, sampled every
    /// `--scrape-every` seconds.
    store_queue_max: f64,
    store_queue_end: f64,
}

impl Window {
    /// How far a publisher delivery counter moved during the window.
    fn moved(&self, key: &str) -> u64 {
        self.delivery.1[key].as_u64().unwrap_or(0).saturating_sub(self.delivery.0[key].as_u64().unwrap_or(0))
    }
}

impl Probe {
    async fn window(&self, seconds: u64) -> Window {
        let delivery0 = delivery(self.http).await;
        let acks0 = *self.acks.lock().unwrap();
        let ticks0 = cpu_ticks(self.pid);
        let t0 = Instant::now();
        *self.measuring.lock().unwrap() = true;
        let end = Instant::now() + Duration::from_secs(seconds);
        let (mut store_queue_max, mut store_queue_end) = (0f64, f64::NAN);
        while Instant::now() < end {
            if let Some(q) = metric(self.http, "vigil_store_queue_depth").await {
                store_queue_max = store_queue_max.max(q);
                store_queue_end = q;
            }
            tokio::time::sleep(self.scrape_every.min(end.saturating_duration_since(Instant::now()))).await;
        }
        *self.measuring.lock().unwrap() = false;
        let elapsed = t0.elapsed().as_secs_f64();
        let ticks = cpu_ticks(self.pid) - ticks0;
        let acks = *self.acks.lock().unwrap() - acks0;
        let delivery1 = delivery(self.http).await;
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (mut latency, beds, msgs) = std::mem::take(&mut *self.samples.lock().unwrap());
        latency.sort_by(f64::total_cmp);
        let mut alarm_latency = std::mem::take(&mut *self.alarms.lock().unwrap());
        alarm_latency.sort_by(f64::total_cmp);
        Window {
            seconds: elapsed,
            cpu: ticks as f64 / hz / elapsed,
            rss_kb: rss_kb(self.pid, "VmRSS:"),
            hwm_kb: rss_kb(self.pid, "VmHWM:"),
            beds: beds.len(),
            msgs_per_s: msgs as f64 / elapsed,
            latency,
            acks_per_s: acks as f64 / elapsed,
            alarm_latency,
            delivery: (delivery0, delivery1),
            store_queue_max,
            store_queue_end,
        }
    }
}

/// The body of a GET on the daemon's dashboard port, `None` if unreadable within 10 s.
async fn get(port: u16, path: &str) -> Option<String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body);
        Some(text.split_once("\r\n\r\n")?.1.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), get).await.ok().flatten()
}

/// The publisher's delivery counters from the daemon's `/api/status` (`mqtt.delivery`), `null` if unreadable.
async fn delivery(port: u16) -> serde_json::Value {
    let json = get(port, "/api/status").await.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
    json.map(|j| j["mqtt"]["delivery"].clone()).unwrap_or_default()
}

/// One unlabelled sample from the daemon's `/metrics`.
async fn metric(port: u16, name: &str) -> Option<f64> {
    let body = get(port, "/metrics").await?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
