//! Where the bytes go: stdout, a file, an existing serial device, pseudo-terminals (one per bed, so the daemon
//! opens them as serial ports), or MLLP client connections (one per bed, reading the receiver's ACKs).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::devices::{hl7, intellivue, nonin};
use crate::{Device, Simulation, Speed};

/// Output errors.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The `--output` value is not understood.
    #[error("output '{0}' is not one of stdout, pty, serial:PATH, mllp:HOST:PORT, file:PATH")]
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

/// Opens an existing serial device for writing; a tty is set to 9600 8N1 raw like the real monitors.
pub async fn open_serial(path: &std::path::Path) -> Result<tokio::fs::File, OutputError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    if nix::unistd::isatty(&file).unwrap_or(false) {
        set_raw_9600(&file).map_err(term(format!("configuring {}", path.display())))?;
    }
    Ok(tokio::fs::File::from_std(file))
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

    /// Reads what the host sent (non-blocking) and answers a Nonin format-select command like the device does.
    fn answer_host(&self, received: &mut Vec<u8>) -> Result<(), OutputError> {
        self.read_host(received)?;
        while let Some(reply) = nonin::answer_host(received) {
            // One byte into a pty buffer that is drained every 2 s at worst: it does not block.
            let _ = (&self.master).write(&[reply]);
        }
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
        let nonin = sim.device() == Device::Nonin;
        let mut received = Vec::new();
        for tick in sim {
            if nonin {
                // Poll for host commands while waiting for the next frame.
                let due = pace(origin, tick.sample.offset_s, speed);
                tokio::pin!(due);
                loop {
                    self.answer_host(&mut received)?;
                    tokio::select! {
                        _ = &mut due => break,
                        _ = tokio::time::sleep(HOST_POLL) => {}
                    }
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

/// How often a Nonin pty looks for host commands.
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
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
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
        (OutputSpec::Mllp(_), Device::Masimo | Device::Nonin | Device::Intellivue) => Err(
            "mllp output carries HL7 only: use --device hl7 (serial devices go to pty, serial:PATH, stdout, file:PATH)"
                .into(),
        ),
        _ => Ok(()),
    }
}
