//! The replay CSV's records: a line without a quote or a carriage return is split at its commas here; from the
//! first line with either on, the rest of the file goes through the `csv` crate. Both give the records, and the
//! line numbers, that the `csv` crate alone gives (flexible field counts, `#` comment lines, blank lines skipped);
//! the plain split skips `csv_core`'s byte-by-byte state machine for the common line.

use std::io::{Chain, Cursor, Read};

/// What the `csv` crate reader of the rest of a file reads from: the bytes already buffered, then the file.
type Rest<R> = csv::Reader<Chain<Cursor<Vec<u8>>, R>>;

/// Records of a CSV, one at a time, into a reused buffer.
pub struct Records<R: Read> {
    source: Source<R>,
    /// Field ranges of the current plain record in `buf`.
    fields: Vec<(usize, usize)>,
    /// The line the `csv` crate reports for the current record (its position when the read began).
    line: u64,
}

enum Source<R: Read> {
    Plain(Plain<R>),
    /// `line_offset` is the lines before the bytes the `csv` reader was given.
    Csv {
        reader: Box<Rest<R>>,
        record: csv::ByteRecord,
        line_offset: u64,
    },
    /// Only while switching.
    Empty,
}

struct Plain<R> {
    input: R,
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    eof: bool,
    /// 1 + the newlines before `pos`.
    line: u64,
}

const CHUNK: usize = 1 << 16;

impl<R: Read> Plain<R> {
    /// Reads more input after `buf[keep..end]`, moving those bytes to the front first; sets `eof` at the end.
    fn fill(&mut self, keep: usize) -> std::io::Result<()> {
        self.buf.copy_within(keep..self.end, 0);
        self.end -= keep;
        self.pos -= keep;
        if self.buf.len() < self.end + CHUNK {
            self.buf.resize(self.end + CHUNK, 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Records<R> {
    /// Records of `input`.
    pub fn new(input: R) -> Records<R> {
        let plain = Plain { input, buf: Vec::new(), pos: 0, end: 0, eof: false, line: 1 };
        Records { source: Source::Plain(plain), fields: Vec::new(), line: 1 }
    }

    /// The next record; false at the end of the input.
    pub fn read(&mut self) -> Result<bool, csv::Error> {
        let Source::Plain(p) = &mut self.source else { return self.read_csv() };
        let start_line = p.line;
        // The read starts here: if a line needs the csv crate, it is given the input from this point, so that its
        // line count (which skips blank and comment lines after the position it reports) stays the csv crate's.
        let mut start = p.pos;
        loop {
            // One pass over the line: its end, its commas, and whether it needs the csv crate.
            let line_start = p.pos;
            self.fields.clear();
            let (mut from, mut at, mut special) = (line_start, line_start, false);
            while at < p.end {
                match p.buf[at] {
                    b'\n' => break,
                    b',' => {
                        self.fields.push((from, at));
                        from = at + 1;
                    }
                    b'"' | b'\r' => special = true,
                    _ => {}
                }
                at += 1;
            }
            let newline = at < p.end;
            if !newline && !p.eof {
                // Moves the bytes from `start` to the front: scan the line again.
                p.fill(start)?;
                start = 0;
                continue;
            }
            if !newline && start == p.end {
                return Ok(false);
            }
            // A quote, a carriage return, or a last line without its newline (the csv crate reads a lone comment
            // there as an empty record): the csv crate reads from the start of this read on.
            if special || !newline {
                return self.switch(start, start_line);
            }
            p.pos = at + 1;
            p.line += 1;
            if at == line_start || p.buf[line_start] == b'#' {
                continue;
            }
            self.fields.push((from, at));
            self.line = start_line;
            return Ok(true);
        }
    }

    /// Hands the rest of the input, from `buf[start..]`, to the csv crate.
    fn switch(&mut self, start: usize, start_line: u64) -> Result<bool, csv::Error> {
        let Source::Plain(p) = std::mem::replace(&mut self.source, Source::Empty) else { return Ok(false) };
        let mut buffered = p.buf;
        buffered.truncate(p.end);
        buffered.drain(..start);
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .buffer_capacity(CHUNK)
            .from_reader(Cursor::new(buffered).chain(p.input));
        self.source =
            Source::Csv { reader: Box::new(reader), record: csv::ByteRecord::new(), line_offset: start_line - 1 };
        self.read_csv()
    }

    fn read_csv(&mut self) -> Result<bool, csv::Error> {
        let Source::Csv { reader, record, line_offset } = &mut self.source else { return Ok(false) };
        let ok = reader.read_byte_record(record)?;
        self.line = record.position().map_or(0, |p| p.line()) + *line_offset;
        Ok(ok)
    }

    /// The 1-based line the csv crate reports for the current record.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Fields in the current record.
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Csv { record, .. } => record.len(),
            _ => self.fields.len(),
        }
    }

    /// Field `i` of the current record.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        match &self.source {
            Source::Plain(p) => self.fields.get(i).map(|&(a, b)| &p.buf[a..b]),
            Source::Csv { record, .. } => record.get(i),
            Source::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Records;

    /// Records and line numbers as the csv crate alone gives them (the replay reader's settings).
    fn by_csv(input: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).comment(Some(b'#')).from_reader(input);
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let line = record.position().map_or(0, |p| p.line());
            out.push((line, record.iter().map(<[u8]>::to_vec).collect()));
        }
        out
    }

    fn by_records(input: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut records = Records::new(input);
        let mut out = Vec::new();
        while records.read().unwrap() {
            out.push((records.line(), (0..records.len()).filter_map(|i| records.get(i).map(<[u8]>::to_vec)).collect()));
        }
        out
    }

    #[test]
    fn blank_and_comment_lines_are_skipped_and_lines_are_counted_as_the_csv_crate_counts_them() {
        let input = b"timestamp,bed,parameter,value\n\n# note\n0,a,spo2,97\n \n1,a,pr,70";
        assert_eq!(by_records(input), by_csv(input));
        assert_eq!(by_records(input).len(), 4);
    }

    #[test]
    fn a_quoted_line_and_everything_after_it_reads_as_the_csv_crate_reads_it() {
        let input = b"t,b\n0,a\n\n1,\"x\ny\",z\r\n2,c\n3,d";
        assert_eq!(by_records(input), by_csv(input));
    }

    #[test]
    fn lines_across_the_read_buffer_s_edge_read_as_the_csv_crate_reads_them() {
        let mut input = Vec::new();
        for t in 0..20_000 {
            match t % 997 {
                0 => input.extend_from_slice(b"# comment\n\n"),
                _ => input.extend_from_slice(format!("{t},bed-{:04},spo2,{}\n", t % 13, 90 + t % 9).as_bytes()),
            }
        }
        input.extend_from_slice(b"20000,\"bed\",pr,70\n20001,bed,pr,71\n");
        assert!(input.len() > 4 * super::CHUNK);
        assert_eq!(by_records(&input), by_csv(&input));
    }

    proptest::proptest! {
        /// Any bytes split into the same records on the same lines as the csv crate splits them.
        #[test]
        fn records_and_lines_are_the_csv_crate_s(input in proptest::collection::vec(
            proptest::sample::select(b"ab1,,,\n\n\n# \"\r".to_vec()), 0..80)
        ) {
            proptest::prop_assert_eq!(by_records(&input), by_csv(&input));
        }
    }
}
