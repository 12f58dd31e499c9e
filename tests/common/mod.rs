//! Helpers shared by the integration tests: free ports, a real Mosquitto, MQTT and HTTP clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{Event, EventLoop, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port that was free a moment ago (the embedded broker cannot bind port 0 and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls an MQTT event loop until a publish matches, or the time is up. Returns its payload.
pub async fn wait_for_publish(
    eventloop: &mut EventLoop,
    within: Duration,
    mut matches: impl FnMut(&str, &[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return None,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                if matches(&p.topic, &p.payload) {
                    return Some(p.payload.to_vec());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A one-bed daemon configuration for tests: MQTT in `mqtt` mode on `port`, the dashboard on a free loopback port,
/// the store in `dir`, the viewer `victor` (password `rotciv`), and bed `chair-1` with `source` (the TOML keys of
/// its one `[[beds.sources]]` entry).
pub fn one_bed_config(mqtt: &str, port: u16, dir: &std::path::Path, source: &str) -> vigil::config::Config {
    let text = format!(
        r#"
[site]
name = "test-site"
ward = "test-ward"
[mqtt]
mode = "{mqtt}"
host = "127.0.0.1"
port = {port}
client_id = "vigil-test-{port}"
[dashboard]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[[users]]
name = "victor"
role = "viewer"
password_hash = "{hash}"
[[beds]]
id = "chair-1"
[[beds.sources]]
{source}
"#,
        db = dir.join("vigil.db").display(),
        hash = vigil::auth::hash_password("rotciv").unwrap()
    );
    vigil::config::Config::parse(&text, "test.toml", dir).unwrap()
}

/// A plain HTTP/1.1 GET; returns the whole response as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Reports a test that cannot run because a dependency is missing. Under `CI=true` that is a failure (CI installs
/// every dependency); locally the line goes straight to the process's stderr, past libtest's capture, so
/// `cargo test` shows it next to the test's `ok`.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true and a test dependency is missing: {reason}");
    }
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {reason}");
}

pub mod mosquitto {
    //! A real Mosquitto on a free port, stopped when dropped.

    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A running broker.
    pub struct Mosquitto {
        /// Its port.
        pub port: u16,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Drop for Mosquitto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The mosquitto binary, if installed.
    pub fn binary() -> Option<&'static str> {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
    }

    /// Starts Mosquitto on a free port with anonymous access and persistence, or `None` when not installed.
    pub fn start() -> Option<Mosquitto> {
        let bin = binary()?;
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Mosquitto { port, child, _dir: dir })
    }
}

/// Sample [1] of `tests/fixtures/hl7/pcd01_samples.txt`: the real Mindray VS-900 ORU^R01 (device id
/// 00A0370098007A80), segments joined with CR as on the wire.
pub fn mindray() -> String {
    include_str!("../fixtures/hl7/pcd01_samples.txt")
        .lines()
        .skip_while(|l| !l.starts_with("MSH|^~\\&|MINDRAY_VS900^00A0370098007A80"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\r")
}

/// A daemon started with `vigil::start`, stopped (and waited for) by [`Daemon::stop`].
pub struct Daemon {
    /// Its addresses and hub.
    pub running: vigil::Running,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Daemon {
    /// Starts the daemon with `config`; panics when it cannot start.
    pub async fn start(config: vigil::config::Config) -> Daemon {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let running = vigil::start(config, shutdown.clone()).await.unwrap();
        Daemon { running, shutdown }
    }

    /// Stops it, failing the test unless it stops within 10 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.wait()).await.unwrap();
    }
}

/// A simulated Alert Manager (`vigil-sim alert-manager`, in process) on `listener`; its JSON lines arrive on the
/// receiver.
pub fn alert_manager(
    listener: tokio::net::TcpListener,
    options: vigil_sim::alert_manager::AlertManagerOptions,
) -> (tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let sink = std::sync::Arc::new(move |line| drop(tx.send(line)));
        let _ = vigil_sim::alert_manager::run(listener, options, sink).await;
    });
    (rx, task)
}

/// The Alert Manager's next line of type `kind`, within `within`.
pub async fn next_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    kind: &str,
    within: Duration,
) -> serde_json::Value {
    tokio::time::timeout(within, async {
        loop {
            let line = rx.recv().await.expect("the alert manager stopped");
            if line["type"] == kind {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no '{kind}' line from the alert manager within {within:?}"))
}
