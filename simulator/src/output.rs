//! Where the bytes go: stdout, a file, an existing serial device, pseudo-terminals (one per bed, so the daemon
//! opens them as serial ports), MLLP client connections (one per bed, reading the receiver's ACKs), or TCP
//! listening ports (one per bed, like a serial device server in "TCP server" mode).
//!
//! Outputs that can hear the host (pty, serial, tcp-listen) answer it as the device would: a Nonin answers the
//! format selection, an S/5 sends nothing until the host's physiological request arrives ([`HostLink`]).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::devices::{hl7, intellivue, nonin, s5};
use crate::{Device, Simulation, Speed};

/// Output errors.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The `--output` value is not understood.
    #[error("output '{0}' is not one of stdout, pty, serial:PATH, mllp:HOST:PORT, tcp-listen:[HOST:]PORT, udp:PORT, file:PATH")]
    BadSpec(String),
    /// An I/O step failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A terminal call failed.
    #[error("{what}: {source}")]
    Term {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OutputError {
    let what = what.into();
    move |source| OutputError::Io { what, source }
}

fn term(what: impl Into<String>) -> impl FnOnce(nix::Error) -> OutputError {
    let what = what.into();
    move |source| OutputError::Term { what, source }
}

/// A parsed `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// Standard output (one bed).
    Stdout,
    /// One pseudo-terminal per bed; the paths are printed.
    Pty,
    /// An existing serial device (one bed), set to 9600 8N1 raw.
    Serial(PathBuf),
    /// MLLP client connections to `host:port`, one per bed.
    Mllp(String),
    /// A file (one bed), truncated first.
    File(PathBuf),
    /// UDP ports of 127.0.0.1, bed K on `port + K - 1`: an IntelliVue's LAN interface (its port is 24105).
    Udp(u16),
    /// Listening TCP ports, bed K on `port + K - 1` (a device server's ports), on `host` (default 127.0.0.1).
    TcpListen {
        /// Address to listen on.
        host: String,
        /// First port.
        port: u16,
    },
}

impl FromStr for OutputSpec {
    type Err = OutputError;

    fn from_str(s: &str) -> Result<Self, OutputError> {
        let bad = || OutputError::BadSpec(s.to_owned());
        match s.split_once(':') {
            None if s == "stdout" || s == "-" => Ok(OutputSpec::Stdout),
            None if s == "pty" => Ok(OutputSpec::Pty),
            Some(("serial", p)) if !p.is_empty() => Ok(OutputSpec::Serial(p.into())),
            Some(("file", p)) if !p.is_empty() => Ok(OutputSpec::File(p.into())),
            Some(("udp", port)) => Ok(OutputSpec::Udp(port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?)),
            Some(("tcp-listen", addr)) => {
                let (host, port) = addr.rsplit_once(':').unwrap_or(("127.0.0.1", addr));
                let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?;
                Ok(OutputSpec::TcpListen { host: if host.is_empty() { "127.0.0.1" } else { host }.to_owned(), port })
            }
            Some(("mllp", addr)) => {
                let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
                if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(bad());
                }
                Ok(OutputSpec::Mllp(addr.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

impl OutputSpec {
    /// Whether the output carries only one device's bytes.
    pub fn single_bed(&self) -> bool {
        matches!(self, OutputSpec::Stdout | OutputSpec::Serial(_) | OutputSpec::File(_))
    }
}

/// Waits until virtual second `offset_s` is due.
async fn pace(origin: Instant, offset_s: u32, speed: Speed) {
    if let Speed::Factor(f) = speed {
        tokio::time::sleep_until(origin + Duration::from_secs_f64(f64::from(offset_s) / f)).await;
    }
}

/// Runs one bed into any byte sink. Stops quietly when the reader goes away (a closed pipe).
pub async fn run_writer<W: AsyncWrite + Unpin>(sim: Simulation, speed: Speed, mut sink: W) -> Result<(), OutputError> {
    let origin = Instant::now();
    for tick in sim {
        pace(origin, tick.sample.offset_s, speed).await;
        if tick.bytes.is_empty() {
            continue;
        }
        let written = async {
            sink.write_all(&tick.bytes).await?;
            sink.flush().await
        };
        match written.await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(io("writing the device bytes")(e)),
        }
    }
    Ok(())
}

/// Opens an existing serial device: a handle to read the host and one to write; a tty is set raw like the real
/// monitors.
pub async fn open_serial(path: &std::path::Path) -> Result<(tokio::fs::File, tokio::fs::File), OutputError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    if nix::unistd::isatty(&file).unwrap_or(false) {
        set_raw_9600(&file).map_err(term(format!("configuring {}", path.display())))?;
    }
    let writer = file.try_clone().map_err(io(format!("opening {}", path.display())))?;
    Ok((tokio::fs::File::from_std(file), tokio::fs::File::from_std(writer)))
}

fn set_raw_9600(fd: impl std::os::fd::AsFd) -> nix::Result<()> {
    use nix::sys::termios::{self, BaudRate, SetArg};
    let mut t = termios::tcgetattr(&fd)?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, BaudRate::B9600)?;
    termios::tcsetattr(&fd, SetArg::TCSANOW, &t)
}

/// How long written bytes may wait unread in a pty before they count as lost on the line.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// A pseudo-terminal standing in for a monitor's serial port.
#[derive(Debug)]
pub struct Pty {
    master: std::fs::File,
    // Kept open so the port exists even while no reader has it open, like a real port.
    slave: OwnedFd,
    /// The path a reader opens (e.g. `/dev/pts/5`).
    pub path: PathBuf,
}

impl Pty {
    /// Creates a raw 9600-baud pty.
    pub fn open() -> Result<Pty, OutputError> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let pair = nix::pty::openpty(None, None).map_err(term("creating a pseudo-terminal"))?;
        set_raw_9600(&pair.slave).map_err(term("configuring the pseudo-terminal"))?;
        let path = nix::unistd::ttyname(&pair.slave).map_err(term("naming the pseudo-terminal"))?;
        fcntl(&pair.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(term("configuring the pseudo-terminal"))?;
        Ok(Pty { master: std::fs::File::from(pair.master), slave: pair.slave, path })
    }

    /// Bytes written to the port and not yet read by anyone.
    fn unread(&self) -> usize {
        use std::os::fd::AsRawFd;
        let mut n: nix::libc::c_int = 0;
        // SAFETY: TIOCINQ writes one c_int through the pointer, which points at `n`; the fd is ours and open.
        let rc = unsafe { nix::libc::ioctl(self.slave.as_raw_fd(), nix::libc::TIOCINQ, &mut n) };
        if rc == 0 {
            usize::try_from(n).unwrap_or(0)
        } else {
            0
        }
    }

    /// Reads what the host sent so far (non-blocking).
    fn read_host(&self, received: &mut Vec<u8>) -> Result<(), OutputError> {
        use std::io::Read;
        let mut buf = [0u8; 512];
        loop {
            match (&self.master).read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(format!("reading from {}", self.path.display()))(e)),
            }
        }
    }

    /// Reads what the host sent (non-blocking) and answers it like the device does.
    fn answer_host(&self, host: &mut HostLink, received: &mut Vec<u8>) -> Result<(), OutputError> {
        self.read_host(received)?;
        // A byte or two into a pty buffer that is drained every 2 s at worst: it does not block.
        let reply = host.hear(received);
        received.clear();
        let _ = (&self.master).write(&reply);
        Ok(())
    }

    /// Runs one bed into the pty. In real time, bytes nobody reads for 2 s are discarded, as on a serial line
    /// nobody listens to: a reader that opens the port later starts with current data instead of a backlog (4 KiB
    /// would be 17 minutes of Nonin frames). At `Speed::Max` the simulator waits for the reader. A Nonin
    /// personality answers the host's format-select command (ACK for #8, NAK otherwise) within 50 ms.
    pub async fn run(mut self, sim: Simulation, speed: Speed) -> Result<(), OutputError> {
        if sim.device() == Device::Intellivue {
            return self.run_intellivue(sim, speed).await;
        }
        let origin = Instant::now();
        let mut drained_at = Instant::now();
        let listens = HostLink::listens(sim.device());
        let mut host = HostLink::new(sim.device());
        let mut received = Vec::new();
        for tick in sim {
            if listens {
                // Poll for host commands while waiting for the next frame (at full speed: until the S/5 is asked).
                let due = pace(origin, tick.sample.offset_s, speed);
                tokio::pin!(due);
                loop {
                    self.answer_host(&mut host, &mut received)?;
                    tokio::select! {
                        _ = &mut due, if host.may_send() || speed != Speed::Max => break,
                        _ = tokio::time::sleep(HOST_POLL) => {}
                    }
                }
                if !host.may_send() {
                    continue;
                }
            } else {
                pace(origin, tick.sample.offset_s, speed).await;
            }
            if speed != Speed::Max {
                if self.unread() == 0 {
                    drained_at = Instant::now();
                } else if drained_at.elapsed() > STALE_AFTER {
                    let _ = nix::sys::termios::tcflush(&self.slave, nix::sys::termios::FlushArg::TCIFLUSH);
                    drained_at = Instant::now();
                }
            }
            let mut rest: &[u8] = &tick.bytes;
            while !rest.is_empty() {
                match self.master.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if speed != Speed::Max {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io(format!("writing to {}", self.path.display()))(e)),
                }
            }
        }
        Ok(())
    }
}

/// What the host has said to this device, and the device's answers: a Nonin acknowledges the format
/// selection; an S/5 transmits only while the host's physiological request stands.
#[derive(Debug, Clone)]
pub struct HostLink {
    device: Device,
    received: Vec<u8>,
    s5: s5::HostRequests,
    iv: intellivue::Monitor,
    /// An IntelliVue's current second (none while it restarts), which its answers report.
    iv_now: Option<(crate::Sample, Option<crate::NibpReading>)>,
}

impl HostLink {
    /// A fresh link (nothing heard yet).
    pub fn new(device: Device) -> HostLink {
        HostLink {
            device,
            received: Vec::new(),
            s5: s5::HostRequests::default(),
            iv: intellivue::Monitor::new(),
            iv_now: None,
        }
    }

    /// Whether this device listens to the host at all.
    pub fn listens(device: Device) -> bool {
        matches!(device, Device::Nonin | Device::S5 | Device::Intellivue)
    }

    /// The device's second `tick`: an IntelliVue answers polls with it, and a scripted disconnect is its
    /// restart (silent meanwhile, the association gone afterwards).
    pub fn see(&mut self, tick: &crate::Tick) {
        if self.device != Device::Intellivue {
            return;
        }
        if tick.sample.connected {
            self.iv_now = Some((tick.sample.clone(), tick.last_nibp));
        } else {
            if self.iv.associated() {
                eprintln!("vigil-sim: intellivue restarts (silent, association lost)");
            }
            self.iv.restart();
            self.iv_now = None;
        }
    }

    /// Takes bytes from the host; returns the device's immediate replies.
    pub fn hear(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self.device {
            Device::Nonin => {
                self.received.extend_from_slice(bytes);
                std::iter::from_fn(|| nonin::answer_host(&mut self.received)).collect()
            }
            Device::S5 => {
                self.s5.hear(bytes);
                Vec::new()
            }
            Device::Intellivue => {
                let Some((sample, nibp)) = &self.iv_now else {
                    self.received.clear();
                    return Vec::new();
                };
                self.received.extend_from_slice(bytes);
                let mut out = Vec::new();
                for request in intellivue::host_frames(&mut self.received) {
                    for reply in self.iv.answer(&request, sample, nibp.as_ref()) {
                        out.extend(intellivue::frame(&reply));
                    }
                }
                out
            }
            Device::Masimo | Device::Hl7 => Vec::new(),
        }
    }

    /// Whether the device sends its data now (an IntelliVue only answers, see [`HostLink::hear`]).
    pub fn may_send(&self) -> bool {
        match self.device {
            Device::S5 => self.s5.transmitting,
            Device::Intellivue => false,
            _ => true,
        }
    }
}

/// Runs one bed over a two-way line (a serial port, read and written through separate handles so a pending read
/// never holds up a write): answers the host and holds S/5 data until asked.
pub async fn run_duplex<R: tokio::io::AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    sim: Simulation,
    speed: Speed,
    mut reader: R,
    mut writer: W,
) -> Result<(), OutputError> {
    let origin = Instant::now();
    let mut host = HostLink::new(sim.device());
    let mut buf = [0u8; 256];
    for tick in sim {
        host.see(&tick);
        let due = pace(origin, tick.sample.offset_s, speed);
        tokio::pin!(due);
        loop {
            tokio::select! {
                _ = &mut due, if host.may_send() || speed != Speed::Max => break,
                r = reader.read(&mut buf) => match r {
                    Ok(0) | Err(_) => std::future::pending::<()>().await,
                    Ok(n) => {
                        let reply = host.hear(&buf[..n]);
                        writer.write_all(&reply).await.map_err(io("answering the host"))?;
                    }
                },
            }
        }
        if !host.may_send() || tick.bytes.is_empty() {
            continue;
        }
        writer.write_all(&tick.bytes).await.map_err(io("writing the device bytes"))?;
        writer.flush().await.map_err(io("writing the device bytes"))?;
    }
    Ok(())
}

/// Runs one IntelliVue's LAN interface on `127.0.0.1:port`: each datagram of a host is answered to its sender
/// like the monitor does, with the current second's data; a scripted disconnect is a restart, as on a pty.
pub async fn run_udp(sim: Simulation, speed: Speed, port: u16) -> Result<(), OutputError> {
    let addr = format!("127.0.0.1:{port}");
    let socket = tokio::net::UdpSocket::bind(&addr).await.map_err(io(format!("binding udp {addr}")))?;
    let origin = Instant::now();
    let mut monitor = intellivue::Monitor::new();
    let mut current: Option<crate::Tick> = None;
    let mut buf = vec![0u8; 64 * 1024];
    for tick in sim {
        let due = pace(origin, tick.sample.offset_s, speed);
        tokio::pin!(due);
        loop {
            tokio::select! {
                _ = &mut due => break,
                r = socket.recv_from(&mut buf) => {
                    // A host that went away can make the next receive report its ICMP error: not the monitor's.
                    let Ok((n, peer)) = r else { continue };
                    if let Some(now) = current.as_ref().filter(|t| t.sample.connected) {
                        for reply in monitor.answer(&buf[..n], &now.sample, now.last_nibp.as_ref()) {
                            let _ = socket.send_to(&reply, peer).await;
                        }
                    }
                }
            }
        }
        if !tick.sample.connected && monitor.associated() {
            eprintln!("vigil-sim: intellivue on udp {addr} restarts (silent, association lost)");
            monitor.restart();
        }
        current = Some(tick);
    }
    Ok(())
}

/// How long a write to a tcp-listen client may take before the client counts as gone.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one bed as a serial device server port: listens on `addr`, serves one client at a time (a new client
/// replaces the old one, as after a reconnect), answers the host like the device, and sends the device's bytes
/// to the client. Each connection starts fresh: an S/5 waits for the request again. With no client the bytes of
/// that second are lost, as on a device server with nobody connected; at `Speed::Max` the simulation waits for a
/// client (and its request) instead.
pub async fn run_tcp_listen(sim: Simulation, speed: Speed, addr: String, label: String) -> Result<(), OutputError> {
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(io(format!("listening on {addr}")))?;
    eprintln!("vigil-sim: {label} listens on {}", listener.local_addr().map_or(addr.clone(), |a| a.to_string()));
    let origin = Instant::now();
    let device = sim.device();
    let mut host = HostLink::new(device);
    let mut client: Option<(tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf)> = None;
    let mut buf = [0u8; 256];
    for tick in sim {
        host.see(&tick);
        let due = pace(origin, tick.sample.offset_s, speed);
        tokio::pin!(due);
        loop {
            let ready = client.is_some() && host.may_send();
            tokio::select! {
                _ = &mut due, if ready || speed != Speed::Max => break,
                accepted = listener.accept() => {
                    if let Ok((stream, peer)) = accepted {
                        eprintln!("vigil-sim: {label}: host {peer} connected");
                        let _ = stream.set_nodelay(true);
                        client = Some(stream.into_split());
                        host = HostLink::new(device);
                        host.see(&tick);
                    }
                }
                r = read_client(&mut client, &mut buf), if client.is_some() => {
                    match r {
                        Ok(0) | Err(_) => {
                            eprintln!("vigil-sim: {label}: host disconnected");
                            client = None;
                        }
                        Ok(n) => {
                            let reply = host.hear(&buf[..n]);
                            if let Some((_, w)) = client.as_mut() {
                                let _ = w.write_all(&reply).await;
                            }
                        }
                    }
                }
            }
        }
        let Some((_, w)) = client.as_mut() else { continue };
        if !host.may_send() || tick.bytes.is_empty() {
            continue;
        }
        match tokio::time::timeout(CLIENT_WRITE_TIMEOUT, w.write_all(&tick.bytes)).await {
            Ok(Ok(())) => {}
            _ => {
                eprintln!("vigil-sim: {label}: host gone (write failed)");
                client = None;
            }
        }
    }
    Ok(())
}

/// Reads from the client; without one, never completes (the select branch is disabled then anyway).
async fn read_client(
    client: &mut Option<(tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf)>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match client {
        Some((r, _)) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

impl Pty {
    /// An IntelliVue on the pty: silent until the host associates, then answers each poll with the current
    /// second's numerics or alarms (within [`IV_HOST_POLL`]). A scripted disconnect is a monitor restart: silent
    /// for its duration, and the association is gone afterwards, so the host must associate again. Use a real-time
    /// speed (`--speed 1` or a factor): the monitor only speaks when asked.
    async fn run_intellivue(self, sim: Simulation, speed: Speed) -> Result<(), OutputError> {
        let origin = Instant::now();
        let mut monitor = intellivue::Monitor::new();
        let mut received = Vec::new();
        let mut current: Option<crate::Tick> = None;
        for tick in sim {
            let due = pace(origin, tick.sample.offset_s, speed);
            tokio::pin!(due);
            loop {
                self.read_host(&mut received)?;
                match current.as_ref() {
                    // Before the first second the request waits; while "restarting" the monitor hears nothing.
                    None => {}
                    Some(now) if !now.sample.connected => received.clear(),
                    Some(now) => {
                        for request in intellivue::host_frames(&mut received) {
                            for reply in monitor.answer(&request, &now.sample, now.last_nibp.as_ref()) {
                                self.write_dropping(&intellivue::frame(&reply))?;
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = &mut due => break,
                    _ = tokio::time::sleep(IV_HOST_POLL) => {}
                }
            }
            if !tick.sample.connected && monitor.associated() {
                eprintln!("vigil-sim: intellivue on {} restarts (silent, association lost)", self.path.display());
                monitor.restart();
            }
            current = Some(tick);
        }
        Ok(())
    }

    /// Writes what the port takes now; the rest is lost, as on a line whose reader stalls.
    fn write_dropping(&self, bytes: &[u8]) -> Result<(), OutputError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match (&self.master).write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(format!("writing to {}", self.path.display()))(e)),
            }
        }
        Ok(())
    }
}

/// How often an IntelliVue pty looks for host requests.
const IV_HOST_POLL: Duration = Duration::from_millis(10);

/// How often a pty that listens to its host (Nonin, S/5) looks for host commands.
const HOST_POLL: Duration = Duration::from_millis(50);

/// How long to wait for the receiver's ACK before warning.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Minimum time between connection attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Runs one bed as an MLLP client: connects to `addr`, sends each ORU^R01, reads the ACK. A scripted disconnect
/// closes the connection; it reconnects afterwards (and after the receiver restarts). Problems go to stderr with
/// the bed's `label`; messages that cannot be sent are lost, as with a real monitor.
pub async fn run_mllp(sim: Simulation, speed: Speed, addr: String, label: String) -> Result<(), OutputError> {
    let origin = Instant::now();
    let mut conn: Option<TcpStream> = None;
    let mut last_attempt: Option<Instant> = None;
    // Say once per outage that the receiver is unreachable, not every 2 s for every bed.
    let mut reported_outage = false;
    // Likewise one missing-ACK warning per connection: a receiver that never ACKs would otherwise flood stderr.
    let mut reported_missing_ack = false;
    let mut buf = Vec::new();
    for tick in sim {
        pace(origin, tick.sample.offset_s, speed).await;
        if !tick.sample.connected {
            if conn.take().is_some() {
                eprintln!("{label}: cable unplugged (scripted): connection closed");
            }
            continue;
        }
        if conn.is_none() {
            if last_attempt.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                continue;
            }
            last_attempt = Some(Instant::now());
            let failure = match tokio::time::timeout(RECONNECT_EVERY, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    eprintln!("{label}: connected to {addr}");
                    buf.clear();
                    conn = Some(s);
                    reported_outage = false;
                    reported_missing_ack = false;
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".to_owned()),
            };
            if let Some(why) = failure {
                if !std::mem::replace(&mut reported_outage, true) {
                    eprintln!(
                        "{label}: cannot connect to {addr}: {why} (retrying every {} s)",
                        RECONNECT_EVERY.as_secs()
                    );
                }
                continue;
            }
        }
        let Some(stream) = conn.as_mut() else { continue };
        if let Err(e) = stream.write_all(&tick.bytes).await {
            eprintln!("{label}: send failed: {e} (reconnecting)");
            conn = None;
            continue;
        }
        for _ in 0..tick.messages {
            match tokio::time::timeout(ACK_TIMEOUT, read_frame(stream, &mut buf)).await {
                Ok(Ok(frame)) => match hl7::parse_ack(&frame) {
                    Some((code, _)) if code == "AA" || code == "CA" => {}
                    Some((code, id)) => eprintln!("{label}: receiver answered {code} for message {id}"),
                    None => eprintln!("{label}: receiver sent a frame that is not an ACK"),
                },
                Ok(Err(e)) => {
                    eprintln!("{label}: connection lost: {e} (reconnecting)");
                    conn = None;
                    break;
                }
                Err(_) => {
                    if !std::mem::replace(&mut reported_missing_ack, true) {
                        eprintln!(
                            "{label}: no ACK within {} s (sending on; reported once per connection)",
                            ACK_TIMEOUT.as_secs()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Reads one MLLP frame (payload between 0x0B and 0x1C 0x0D), keeping leftover bytes in `buf`.
pub(crate) async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == [hl7::MLLP_END, hl7::MLLP_CR]) {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let start = frame.iter().position(|b| *b == hl7::MLLP_START).map_or(0, |p| p + 1);
            return Ok(frame[start..end].to_vec());
        }
        if buf.len() > 1 << 20 {
            buf.clear();
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether a device can use an output: MLLP carries HL7 only.
pub fn check_device(spec: &OutputSpec, device: Device) -> Result<(), String> {
    match (spec, device) {
        (OutputSpec::Mllp(_), Device::Masimo | Device::Nonin | Device::S5 | Device::Intellivue) => Err(
            "mllp output carries HL7 only: use --device hl7 (serial devices go to pty, serial:PATH, stdout, file:PATH)"
                .into(),
        ),
        (OutputSpec::Udp(_), d) if d != Device::Intellivue => {
            Err("udp output is the IntelliVue LAN interface: use --device intellivue".into())
        }
        _ => Ok(()),
    }
}
