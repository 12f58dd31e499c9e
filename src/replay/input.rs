//! Reading a recording: the long CSV streamed row by row (bounded memory, reordered within [`REORDER_WINDOW_S`]),
//! or a raw device capture decoded whole through the daemon's own decoders.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};

use super::records::Records;
use super::ReplayError;
use crate::alarm::DeviceSignal;
use crate::config::DeviceKind;
use crate::event::Command;
use crate::ingest::protocol::{hl7, intellivue, masimo, mllp, s5, Frame};
use crate::ingest::AnyDecoder;
use crate::vitals::{BedId, Parameter, Timestamp, ValueStatus};

/// How far back in time (seconds) a CSV row may be from the latest row read before it. Rows within the window are
/// put back in time order (same-time rows keep their file order); a row further back is an error naming its line.
pub const REORDER_WINDOW_S: i64 = 5;

/// What one row of a recording says. The common variant, a CSV reading, is held inline and the rare ones boxed, so
/// the reorder window moves small rows.
#[derive(Debug, Clone, PartialEq)]
pub enum RowKind {
    /// A value (or a missing value) from the CSV, with the status of the fifth column if it has one. Without a
    /// status (4-column file, or the column empty) a present value is valid and 0 means "no value".
    Reading(Parameter, Option<f64>, Option<ValueStatus>),
    /// A value decoded from a device capture.
    Device(Box<DeviceValue>),
    /// What a capture says about its sensor or demo mode.
    Signal(Box<DeviceSignal>),
    /// A session command.
    Command(Box<Command>),
    /// A nurse's action from the CSV; `line` is where it was written, for the refusal report.
    Action {
        /// What the nurse did.
        action: Box<Action>,
        /// 1-based line number in the CSV.
        line: usize,
    },
}

/// A value decoded from a device capture, with the status the decoder gave it, when it was measured (by
/// [`crate::vitals::measured_at`], as in the daemon) and whether it is a spot reading of a continuous parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceValue {
    /// What was measured.
    pub parameter: Parameter,
    /// The value.
    pub value: Option<f64>,
    /// Its status.
    pub status: ValueStatus,
    /// When it was measured, if earlier than the frame.
    pub measured: Option<Timestamp>,
    /// A spot reading (the cuff's pulse).
    pub spot: bool,
}

/// A nurse's action in a recording (`event` rows); the actor is `replay`.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `acknowledge`: every annunciating alarm of the bed, as the dashboard's bed acknowledge
    /// (`Command::Acknowledge { alarm_id: None }`).
    AcknowledgeAll,
    /// `acknowledge:<condition>`: the live alarm(s) of that condition.
    Acknowledge(String),
    /// `pause_audio` or `pause_audio:<seconds>`; `None` is the profile's longest pause.
    PauseAudio(Option<u32>),
    /// `baseline:<sys>/<dia>` (`Command::SetBaseline`).
    Baseline(f64, f64),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::AcknowledgeAll => write!(f, "acknowledge"),
            Action::Acknowledge(c) => write!(f, "acknowledge:{c}"),
            Action::PauseAudio(None) => write!(f, "pause_audio"),
            Action::PauseAudio(Some(s)) => write!(f, "pause_audio:{s}"),
            Action::Baseline(s, d) => write!(f, "baseline:{s}/{d}"),
        }
    }
}

/// One timestamped row of a recording, whatever the input format.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// When.
    pub time: Timestamp,
    /// Which bed: an index into the recording's bed names ([`Input::bed`]), numbered in order of first appearance.
    pub bed: u32,
    /// What.
    pub kind: RowKind,
}

/// A recording being read: rows in time order.
pub enum Input {
    /// The CSV, streamed.
    Csv(Box<SortedCsv>),
    /// A decoded capture (already in time order) of one bed, bed index 0.
    Rows(std::vec::IntoIter<Row>, [BedId; 1]),
}

impl Input {
    /// The next row in time order, `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Row>, ReplayError> {
        match self {
            Input::Csv(c) => c.next_row(),
            Input::Rows(r, _) => Ok(r.next()),
        }
    }

    /// The name of the bed a row's index stands for (every index a row carries is in range).
    pub fn bed(&self, index: u32) -> &BedId {
        match self {
            Input::Csv(c) => &c.csv.names[index as usize],
            Input::Rows(_, bed) => &bed[0],
        }
    }

    /// Rows with a missing value read so far (CSV parameter rows with an empty value).
    pub fn missing_values(&self) -> usize {
        match self {
            Input::Csv(c) => c.csv.missing,
            Input::Rows(..) => 0,
        }
    }
}

/// Opens a recording: the CSV as a stream, or a raw device capture through the same decoders the daemon uses
/// (`ingest::protocol`). Capture time comes from the device's own stamps where it gives them (Masimo line time,
/// HL7 MSH-7 and OBX-14), otherwise one frame per second from `--start`.
pub fn open(path: &Path, start: Timestamp, format: &str, bed: &str) -> Result<Input, ReplayError> {
    let file = path.display().to_string();
    let read_err = |source| ReplayError::Read { file: file.clone(), source };
    let unsupported = |reason: String| ReplayError::Unsupported { file: file.clone(), reason };
    let format = match format {
        "auto" => {
            let mut head = Vec::with_capacity(16);
            File::open(path).and_then(|f| f.take(13).read_to_end(&mut head)).map_err(read_err)?;
            let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&head);
            if head.starts_with(b"timestamp,") {
                "csv"
            } else {
                "capture"
            }
        }
        f @ ("csv" | "masimo" | "nonin" | "hl7" | "s5" | "intellivue") => f,
        other => {
            return Err(unsupported(format!(
                "unknown --format '{other}' (auto, csv, masimo, nonin, hl7, s5, intellivue)"
            )))
        }
    };
    if format == "csv" {
        let f = File::open(path).map_err(read_err)?;
        return Ok(Input::Csv(Box::new(SortedCsv::new(CsvRows::new(f, file, start)?))));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let format = if format == "capture" {
        let t = std::str::from_utf8(&bytes).unwrap_or("");
        if bytes.first() == Some(&s5::FLAG) {
            "s5"
        } else if bytes.contains(&0x0b) || t.contains("MSH|") {
            "hl7"
        } else if t.contains("SPO2=") || t.contains("SpO2=") {
            "masimo"
        } else {
            return Err(unsupported(
                "cannot tell the format (not the replay CSV, HL7 or Masimo ASCII); use --format nonin for Nonin \
                 binary captures"
                    .into(),
            ));
        }
    } else {
        format
    };
    let rows = decode_capture(&bytes, format, start, bed).map_err(unsupported)?;
    Ok(Input::Rows(rows.into_iter(), [bed.into()]))
}

/// Decodes a whole capture into time-ordered rows (a stable sort keeps same-time rows in frame order).
fn decode_capture(bytes: &[u8], format: &str, start: Timestamp, bed: &str) -> Result<Vec<Row>, String> {
    let source = format!("{bed}/replay");
    let mut frames: Vec<(Option<Timestamp>, Frame)> = Vec::new();
    match format {
        "masimo" => {
            for line in bytes.split(|b| *b == b'\n' || *b == b'\r') {
                if line.iter().all(u8::is_ascii_whitespace) || line.starts_with(b"#") {
                    continue;
                }
                // Lines that do not decode (comments, headers) are skipped, as the serial reader skips them.
                if let Ok(f) = masimo::parse_line(line) {
                    frames.push((f.device_time, f));
                }
            }
        }
        "intellivue" => {
            // Serial stream, datagram payloads or pcap (`intellivue::capture`); a pcap packet's time is the time
            // the result was received, as the daemon would have stamped it.
            let (messages, _) = intellivue::capture::messages(bytes).map_err(|e| e.to_string())?;
            let mut decoder = intellivue::IntelliVueDecoder::new();
            for m in messages {
                let Ok(payload) = m.message else { continue };
                if let Some(Ok(f)) = decoder.decode_payload(&payload) {
                    if !(f.measurements.is_empty() && f.device_alarms.is_some()) {
                        frames.push((m.time.or(f.device_time), f));
                    }
                }
            }
        }
        "nonin" | "s5" => {
            // The daemon's streaming decoders, listening only: they resynchronise and skip bad frames as on the
            // line. Nonin frames carry no time (one a second); S/5 records may.
            use tokio_util::codec::Decoder as _;
            let device = match format {
                "nonin" => DeviceKind::Nonin,
                _ => DeviceKind::S5,
            };
            let mut decoder = AnyDecoder::for_device(device);
            let mut buf = bytes::BytesMut::from(bytes);
            while let Ok(Some(item)) = decoder.decode(&mut buf) {
                // A frame with only the monitor's own alarms (an S/5 alarm record, an IntelliVue alert list) has
                // nothing for the engine, which replay feeds with numerics alone.
                if let Ok(f) = item {
                    if !(f.measurements.is_empty() && f.device_alarms.is_some()) {
                        frames.push((f.device_time, f));
                    }
                }
            }
        }
        _ => {
            for msg in hl7_messages(bytes) {
                if let Ok(f) = hl7::decode_message(&msg) {
                    frames.push((f.device_time, f));
                }
            }
        }
    }
    if frames.is_empty() {
        return Err(format!("no {format} frame could be decoded"));
    }
    let mut rows = Vec::new();
    let mut clock = start;
    for (k, (time, f)) in frames.into_iter().enumerate() {
        clock = match time {
            Some(t) => t,
            None if k == 0 => start,
            None => clock + TimeDelta::seconds(1),
        };
        let signal = |s| Row { time: clock, bed: 0, kind: RowKind::Signal(Box::new(s)) };
        rows.push(signal(DeviceSignal::Sensor { source: source.clone(), flags: f.sensor }));
        rows.push(signal(DeviceSignal::Demo { source: source.clone(), on: f.demo }));
        // The daemon's timing rule: a value arrives with its frame (HL7: at MSH-7) and its measurement time
        // is read against the frame's own clock, so an NIBP sent again is the same reading, as old as it is.
        for m in f.measurements {
            let measured = crate::vitals::measured_at(m.observed, f.device_time, clock);
            let (parameter, value, status, spot) = (m.parameter, m.value, m.status, m.spot);
            let kind = RowKind::Device(Box::new(DeviceValue { parameter, value, status, measured, spot }));
            rows.push(Row { time: clock, bed: 0, kind });
        }
    }
    rows.sort_by_key(|r| r.time);
    Ok(rows)
}

/// HL7 messages from a capture: MLLP-framed, or plain text with one `MSH|` per message and segments on lines.
fn hl7_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    use tokio_util::codec::Decoder as _;
    if bytes.contains(&0x0b) {
        let mut codec = mllp::MllpCodec::default();
        let mut buf = bytes::BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            if let Ok(msg) = item {
                out.push(msg.to_vec());
            }
        }
        return out;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in text.lines().map(str::trim_end) {
        if line.starts_with("MSH|") {
            out.push(Vec::new());
        } else if line.is_empty()
            || line.starts_with('#')
            || out.is_empty()
            || line.as_bytes().get(3).is_none_or(|b| *b != b'|')
        {
            continue;
        }
        // `out` has a message here: lines before the first MSH were skipped above.
        if let Some(msg) = out.last_mut() {
            msg.extend_from_slice(line.as_bytes());
            msg.push(b'\r');
        }
    }
    out
}

/// The CSV rows in file order, parsed one record at a time from a reused buffer.
pub struct CsvRows<R: Read = File> {
    record: Records<R>,
    file: String,
    start: Timestamp,
    status_column: bool,
    /// Bed name to index into `names`.
    beds: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// Bed names in order of first appearance.
    names: Vec<BedId>,
    last_bed: Option<u32>,
    last_stamp: Vec<u8>,
    last_time: Timestamp,
    missing: usize,
}

const PARAMETERS: &str = "hr, pr, spo2, nibp_sys, nibp_dia, nibp_mean, rr, pi, event";
const EVENTS: &str = "session_start, infusion_start, infusion_stop, session_end, acknowledge, \
                      acknowledge:<condition>, pause_audio, pause_audio:<seconds>, baseline:<sys>/<dia>";

impl<R: Read> CsvRows<R> {
    /// Reads and checks the header: `timestamp,bed,parameter,value` with an optional fifth column `status`.
    pub fn new(input: R, file: String, start: Timestamp) -> Result<CsvRows<R>, ReplayError> {
        let mut rows = CsvRows {
            record: Records::new(input),
            file,
            start,
            status_column: false,
            beds: HashMap::default(),
            names: Vec::new(),
            last_bed: None,
            last_stamp: Vec::new(),
            last_time: start,
            missing: 0,
        };
        let ok = rows.read_record()?;
        let header: Vec<&[u8]> = if ok {
            (0..rows.record.len()).filter_map(|i| rows.record.get(i)).map(<[u8]>::trim_ascii).collect()
        } else {
            Vec::new()
        };
        let header: Vec<&[u8]> = header
            .iter()
            .enumerate()
            .map(|(i, h)| if i == 0 { h.strip_prefix("\u{feff}".as_bytes()).unwrap_or(h) } else { h })
            .collect();
        match header.as_slice() {
            [b"timestamp", b"bed", b"parameter", b"value"] => {}
            [b"timestamp", b"bed", b"parameter", b"value", b"status"] => rows.status_column = true,
            _ => {
                let found = String::from_utf8_lossy(&header.join(&b","[..])).into_owned();
                return Err(rows.err(
                    1,
                    format!("header must be 'timestamp,bed,parameter,value' or with ',status', found '{found}'"),
                ));
            }
        }
        Ok(rows)
    }

    fn err(&self, line: usize, reason: String) -> ReplayError {
        ReplayError::Csv { file: self.file.clone(), line, reason }
    }

    fn read_record(&mut self) -> Result<bool, ReplayError> {
        self.record.read().map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            match e.into_kind() {
                csv::ErrorKind::Io(source) => ReplayError::Read { file: self.file.clone(), source },
                other => ReplayError::Csv { file: self.file.clone(), line, reason: format!("{other:?}") },
            }
        })
    }

    /// The next row in file order with its 1-based line number, `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<(Row, usize)>, ReplayError> {
        loop {
            if !self.read_record()? {
                return Ok(None);
            }
            let line = self.record.line() as usize;
            let n = self.record.len();
            if n == 1 && self.f(0).trim_ascii().is_empty() {
                continue;
            }
            let fields_ok = if self.status_column { n == 4 || n == 5 } else { n == 4 };
            if !fields_ok {
                let expected = if self.status_column { "4 or 5" } else { "4" };
                return Err(self.err(line, format!("expected {expected} fields, found {n}")));
            }
            return self.parse(line).map(|r| Some((r, line)));
        }
    }

    /// Field `i` of the current record, empty when the record has fewer fields.
    #[inline]
    fn f(&self, i: usize) -> &[u8] {
        self.record.get(i).unwrap_or_default()
    }

    fn field(&self, i: usize, line: usize) -> Result<&str, ReplayError> {
        let f = self.f(i).trim_ascii();
        std::str::from_utf8(f).map_err(|_| self.err(line, format!("field {} is not UTF-8", i + 1)))
    }

    fn parse(&mut self, line: usize) -> Result<Row, ReplayError> {
        let stamp = self.record.get(0).unwrap_or_default().trim_ascii();
        let time = if stamp == self.last_stamp.as_slice() {
            self.last_time
        } else {
            let s = self.field(0, line)?;
            let time = match s.parse::<f64>() {
                Ok(v) if v.is_finite() => self.start + TimeDelta::milliseconds((v * 1000.0).round() as i64),
                _ => DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| self.err(line, format!("timestamp '{s}' is neither seconds nor RFC 3339")))?,
            };
            self.last_stamp.clear();
            self.last_stamp.extend_from_slice(stamp);
            self.last_time = time;
            time
        };
        let bed = self.bed(line)?;
        // The common row, a parameter name and a whole number without a status, is read from the bytes without
        // UTF-8 checks or the float parser (a whole number of up to 15 digits is exact in an f64, so the value
        // is the one `str::parse` gives).
        if !self.status_column || self.f(4).trim_ascii().is_empty() {
            let raw = self.f(2).trim_ascii();
            let p = match raw {
                b"spo2" => Some(Parameter::Spo2),
                b"pr" => Some(Parameter::Pr),
                b"hr" => Some(Parameter::Hr),
                b"rr" => Some(Parameter::Rr),
                b"nibp_sys" => Some(Parameter::NibpSys),
                b"nibp_dia" => Some(Parameter::NibpDia),
                b"nibp_mean" => Some(Parameter::NibpMean),
                _ => None,
            };
            if let Some(p) = p {
                if let Some(v) = whole_number(self.f(3).trim_ascii()) {
                    return Ok(Row { time, bed, kind: RowKind::Reading(p, Some(v), None) });
                }
            }
        }
        let parameter = self.field(2, line)?;
        let value = self.field(3, line)?;
        let status = if self.status_column { self.field(4, line)? } else { "" };
        let mut missing = false;
        let kind = if parameter == "event" {
            if !status.is_empty() {
                return Err(self.err(line, format!("status '{status}' is for readings, not event rows")));
            }
            parse_event(value).map_err(|reason| self.err(line, reason))?
        } else {
            let p = Parameter::from_name(parameter)
                .ok_or_else(|| self.err(line, format!("parameter '{parameter}' is not one of {PARAMETERS}")))?;
            let v = if value.is_empty() {
                missing = true;
                None
            } else {
                Some(value.parse::<f64>().map_err(|_| self.err(line, format!("value '{value}' is not a number")))?)
            };
            let status = match status {
                "" => None,
                "valid" => Some(ValueStatus::Valid),
                "questionable" => Some(ValueStatus::Questionable),
                "unavailable" => Some(ValueStatus::Unavailable),
                "demo" => Some(ValueStatus::Demo),
                other => {
                    return Err(self.err(
                        line,
                        format!("status '{other}' is not one of valid, questionable, unavailable, demo (or empty)"),
                    ))
                }
            };
            RowKind::Reading(p, v, status)
        };
        let kind = match kind {
            RowKind::Action { action, .. } => RowKind::Action { action, line },
            k => k,
        };
        if missing {
            self.missing += 1;
        }
        Ok(Row { time, bed, kind })
    }

    fn bed(&mut self, line: usize) -> Result<u32, ReplayError> {
        let raw = self.f(1).trim_ascii();
        // Beds usually come in runs, and in the same order every second: the last bed or the one after it.
        if let Some(b) = self.last_bed {
            if self.names[b as usize].as_bytes() == raw {
                return Ok(b);
            }
            if self.names.get(b as usize + 1).is_some_and(|n| n.as_bytes() == raw) {
                self.last_bed = Some(b + 1);
                return Ok(b + 1);
            }
        }
        if raw.is_empty() {
            return Err(self.err(line, "bed is empty".into()));
        }
        let name = self.field(1, line)?;
        let bed = match self.beds.get(name) {
            Some(&b) => b,
            None => {
                let b = u32::try_from(self.names.len())
                    .map_err(|_| self.err(line, "more than 4,294,967,295 beds".into()))?;
                let (key, id): (Box<str>, BedId) = (name.into(), name.into());
                self.beds.insert(key, b);
                self.names.push(id);
                b
            }
        };
        self.last_bed = Some(bed);
        Ok(bed)
    }
}

/// `digits` as a number when it is 1 to 15 ASCII digits (exact in an f64), else `None`.
#[inline]
fn whole_number(digits: &[u8]) -> Option<f64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n as f64)
}

fn parse_event(value: &str) -> Result<RowKind, String> {
    let action = |action| Ok(RowKind::Action { action: Box::new(action), line: 0 });
    let (name, arg) = match value.split_once(':') {
        Some((n, a)) => (n, Some(a.trim())),
        None => (value, None),
    };
    match (name, arg) {
        ("session_start", None) => Ok(RowKind::Command(Box::new(Command::SessionStart {
            patient: None,
            baseline_sys: None,
            baseline_dia: None,
        }))),
        ("infusion_start", None) => Ok(RowKind::Command(Box::new(Command::InfusionStart))),
        ("infusion_stop", None) => Ok(RowKind::Command(Box::new(Command::InfusionStop))),
        ("session_end", None) => Ok(RowKind::Command(Box::new(Command::SessionEnd))),
        ("acknowledge", None) => action(Action::AcknowledgeAll),
        ("acknowledge", Some(c)) if !c.is_empty() => action(Action::Acknowledge(c.to_owned())),
        ("pause_audio", None) => action(Action::PauseAudio(None)),
        ("pause_audio", Some(s)) => match s.parse::<u32>() {
            Ok(s) if s > 0 => action(Action::PauseAudio(Some(s))),
            _ => Err(format!("pause_audio:{s}: the pause must be a whole number of seconds above 0")),
        },
        ("baseline", Some(b)) => {
            let parsed = b.split_once('/').and_then(|(s, d)| Some((s.trim().parse().ok()?, d.trim().parse().ok()?)));
            match parsed {
                Some((s, d)) => action(Action::Baseline(s, d)),
                None => Err(format!("baseline:{b}: expected baseline:<systolic>/<diastolic>, e.g. baseline:130/80")),
            }
        }
        _ => Err(format!("event '{value}' is not one of {EVENTS}")),
    }
}

/// The CSV rows in time order: rows up to [`REORDER_WINDOW_S`] behind the latest are put back in place, a row
/// further behind is an error naming its line. Holds only the rows of the window.
pub struct SortedCsv {
    csv: CsvRows,
    buffer: VecDeque<Row>,
    /// The latest time read, its line, and that time minus the window (computed once per new latest time, not
    /// per row).
    latest: Option<(Timestamp, usize, Timestamp)>,
    eof: bool,
}

impl SortedCsv {
    fn new(csv: CsvRows) -> SortedCsv {
        SortedCsv { csv, buffer: VecDeque::new(), latest: None, eof: false }
    }

    fn next_row(&mut self) -> Result<Option<Row>, ReplayError> {
        let window = TimeDelta::seconds(REORDER_WINDOW_S);
        loop {
            if let Some(front) = self.buffer.front() {
                // Every row still to come is at or after latest - window.
                if self.eof || self.latest.is_some_and(|(_, _, floor)| front.time < floor) {
                    return Ok(self.buffer.pop_front());
                }
            } else if self.eof {
                return Ok(None);
            }
            let Some((row, line)) = self.csv.next_row()? else {
                self.eof = true;
                continue;
            };
            match self.latest {
                Some((t, latest_line, floor)) if row.time < floor => {
                    return Err(self.csv.err(
                        line,
                        format!(
                            "out of time order: {} is {} s before {} on line {latest_line}; replay puts rows back in \
                             order only within {REORDER_WINDOW_S} s (sort the file by timestamp first, e.g. \
                             `sort -s -t, -k1,1n`)",
                            row.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            (t - row.time).num_milliseconds() as f64 / 1000.0,
                            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        ),
                    ))
                }
                Some((t, ..)) if row.time <= t => {}
                _ => self.latest = Some((row.time, line, row.time - window)),
            }
            // After every row of the same or an earlier time: a stable order (a file in time order appends).
            let mut at = self.buffer.len();
            while at > 0 && self.buffer[at - 1].time > row.time {
                at -= 1;
            }
            if at == self.buffer.len() {
                self.buffer.push_back(row);
            } else {
                self.buffer.insert(at, row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{whole_number, Row};

    /// The reorder window holds about 10,000 rows on a 1,000-bed recording; each is moved in and out of it.
    #[test]
    fn a_row_takes_at_most_40_bytes() {
        assert!(std::mem::size_of::<Row>() <= 40, "{} bytes", std::mem::size_of::<Row>());
    }

    proptest::proptest! {
        /// The fast path reads a whole number exactly as the float parser does, and leaves anything else to it.
        #[test]
        fn a_whole_number_reads_as_the_float_parser_reads_it(s in "[0-9]{1,15}|[0-9]{16,18}|[0-9]*[.eE+-][0-9]*") {
            match whole_number(s.as_bytes()) {
                Some(v) => proptest::prop_assert_eq!(v.to_bits(), s.parse::<f64>().unwrap().to_bits()),
                None => proptest::prop_assert!(s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit())),
            }
        }
    }
}
