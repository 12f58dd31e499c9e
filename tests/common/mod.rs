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

/// The device id of the Mindray sample ([`mindray`]).
pub const DEVICE: &str = "00A0370098007A80";

/// A one-bed daemon fed over MLLP (bed `chair-1`, device [`DEVICE`]), no MQTT, demo actions on a loopback
/// dashboard at port `dashboard`, the store in `dir`, with `notify` appended after `[notify]`'s `public_url`.
pub fn notify_config(dir: &std::path::Path, dashboard: u16, notify: &str) -> String {
    format!(
        r#"
[site]
name = "test-site"
ward = "test-ward"
[mqtt]
mode = "disabled"
[dashboard]
listen = "127.0.0.1:{dashboard}"
demo_actions_without_sign_in = true
[store]
path = "{db}"
[mllp]
listen = "127.0.0.1:0"
[[beds]]
id = "chair-1"
label = "Chair 1"
[[beds.sources]]
kind = "mllp"
device = "hl7"
device_id = "{DEVICE}"
[notify]
public_url = "http://127.0.0.1:{dashboard}"
{notify}
"#,
        db = dir.join("vigil.db").display(),
    )
}

/// Sends the real Mindray ORU^R01 sample with SpO2 set to `spo2` over MLLP and waits for the ACK.
pub async fn send_spo2(mllp: SocketAddr, spo2: u32) {
    let msg = mindray().replace("|99|262688^MDC_DIM_PERCENT", &format!("|{spo2}|262688^MDC_DIM_PERCENT"));
    assert!(msg.contains(&format!("|{spo2}|262688")), "the sample's SpO2 field moved");
    let mut s = tokio::net::TcpStream::connect(mllp).await.unwrap();
    let mut framed = vec![0x0b];
    framed.extend_from_slice(msg.as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    s.write_all(&framed).await.unwrap();
    let mut ack = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut ack)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&ack[..n]).contains("MSA|AA"), "the message was not accepted");
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

pub mod pki {
    //! A test CA made at test time with the `openssl` command (CI installs it; without it the TLS tests fail under
    //! CI=true), and rustls clients and servers that use it.

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A test CA, a server certificate for `localhost` and 127.0.0.1, a client certificate (a monitor), and an unrelated
    /// key that belongs to neither. `None` (after a visible skip) when `openssl` is missing.
    pub struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        pub fn make(dir: &Path) -> Option<Pki> {
            if Command::new("openssl").arg("version").output().is_err() {
                super::skip("the openssl command is not installed (apt-get install openssl)");
                return None;
            }
            let run = |args: &[&str]| {
                let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
            let ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"];
            run(&[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &ca_ext,
                &["-subj", "/CN=Vigil test CA"],
            ]
            .concat());
            for (name, ext) in [
                ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                ("client", "subjectAltName=DNS:monitor-1.ward.test\nextendedKeyUsage=clientAuth\n"),
            ] {
                std::fs::write(dir.join(format!("{name}.ext")), format!("basicConstraints=CA:FALSE\n{ext}")).unwrap();
                let (key, csr, pem, extf) =
                    (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
                run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
                run(&[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                ]);
            }
            run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key"]);
            Some(Pki { dir: dir.to_path_buf() })
        }

        pub fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }

        /// A rustls client trusting the test CA, optionally presenting the client certificate.
        pub fn connector(&self, client_cert: bool) -> tokio_rustls::TlsConnector {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let builder =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots);
            let config = if client_cert {
                let chain =
                    CertificateDer::pem_file_iter(self.path("client.pem")).unwrap().map(Result::unwrap).collect();
                let key = PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            } else {
                builder.with_no_client_auth()
            };
            tokio_rustls::TlsConnector::from(Arc::new(config))
        }

        /// A rustls server with the `localhost`/127.0.0.1 certificate, asking for no client certificate.
        pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            let chain = CertificateDer::pem_file_iter(self.path("server.pem")).unwrap().map(Result::unwrap).collect();
            let key = PrivateKeyDer::from_pem_file(self.path("server.key")).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        }
    }
}
