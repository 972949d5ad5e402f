//! The mbox format: reading mboxrd (and the older mboxo, which it reads the same way)
//! message by message, and writing mboxrd.
//!
//! A message starts at a `From ` line that opens the file or follows an empty line
//! and carries an asctime date (`From sender Thu Nov 26 16:24:37 2026`); any other
//! `From ` line is body text. Lines of the form `>From `, `>>From `, ... lose one `>`
//! (mboxrd). The empty line before the next `From ` line belongs to the separator.

use std::io::{BufRead, Write};

/// One message read from an mbox file, before anything is done with it.
pub struct MboxMessage {
    /// 1-based position in the file, and the line its `From ` line is on.
    pub number: usize,
    pub line: usize,
    /// The date of the `From ` line, if it had one that parses.
    pub date: Option<i64>,
    /// The message as the file holds it, unquoted, with the file's line ends; empty
    /// if it was over the reader's limit.
    pub bytes: Vec<u8>,
    /// Its length in the file, when it was over the reader's limit (it is not kept).
    pub too_large: Option<u64>,
}

/// Reads an mbox file one message at a time.
pub struct MboxReader<R> {
    input: R,
    line_no: usize,
    /// The `From ` line that starts the next message, read already.
    pending: Option<(usize, Vec<u8>)>,
    number: usize,
    /// Bytes read so far, for a progress bar.
    pub consumed: u64,
    done: bool,
    limit: u64,
}

impl<R: BufRead> MboxReader<R> {
    /// A reader over `input`; fails with `InvalidData` if the first line is not a
    /// `From ` line (it is not an mbox file then).
    pub fn new(mut input: R) -> std::io::Result<MboxReader<R>> {
        let mut first = Vec::new();
        let n = input.read_until(b'\n', &mut first)?;
        let empty = n == 0;
        if !empty && !first.starts_with(b"From ") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not an mbox file: it does not start with a \"From \" line",
            ));
        }
        Ok(MboxReader {
            input,
            line_no: 1,
            pending: (!empty).then_some((1, first)),
            number: 0,
            consumed: n as u64,
            done: empty,
            limit: u64::MAX,
        })
    }

    /// Keeps no more than `limit` bytes of a message: a longer one is passed over and
    /// reported with its length, so one huge message cannot fill the memory.
    pub fn with_limit(mut self, limit: u64) -> MboxReader<R> {
        self.limit = limit;
        self
    }

    /// The next message, or None at the end of the file.
    pub fn next_message(&mut self) -> std::io::Result<Option<MboxMessage>> {
        if self.done {
            return Ok(None);
        }
        let Some((line, from_line)) = self.pending.take() else {
            return Ok(None);
        };
        self.number += 1;
        let date = from_line_date(&from_line);
        let mut bytes = Vec::new();
        let mut length = 0u64;
        let mut prev_empty = false;
        loop {
            let mut buf = Vec::new();
            let n = self.input.read_until(b'\n', &mut buf)?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.consumed += n as u64;
            self.line_no += 1;
            if prev_empty && buf.starts_with(b"From ") && from_line_date(&buf).is_some() {
                self.pending = Some((self.line_no, buf));
                break;
            }
            prev_empty = buf == b"\n" || buf == b"\r\n";
            let line = unquote(&buf).unwrap_or(&buf);
            length += line.len() as u64;
            if length <= self.limit {
                bytes.extend_from_slice(line);
            } else {
                bytes = Vec::new();
            }
        }
        if length > self.limit {
            return Ok(Some(MboxMessage {
                number: self.number,
                line,
                date,
                bytes,
                too_large: Some(length),
            }));
        }
        // The empty line before a separator (or at the end) is the separator's.
        if bytes.ends_with(b"\r\n\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n\n") {
            bytes.truncate(bytes.len() - 1);
        }
        Ok(Some(MboxMessage {
            number: self.number,
            line,
            date,
            bytes,
            too_large: None,
        }))
    }
}

/// `>From ` with one or more `>`: the line without its first `>`.
fn unquote(line: &[u8]) -> Option<&[u8]> {
    let quotes = line.iter().take_while(|&&b| b == b'>').count();
    (quotes > 0 && line[quotes..].starts_with(b"From ")).then(|| &line[1..])
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The date of a `From sender Www Mmm dd hh:mm:ss yyyy [zone]` line, as a Unix time
/// (UTC unless a numeric zone follows the time or the year).
pub fn from_line_date(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    let tokens: Vec<&str> = text.split_whitespace().collect();
    // From, sender, then the weekday somewhere after (senders have no spaces, but a
    // few writers quote ones that do).
    let start = (2..tokens.len()).find(|&i| {
        WEEKDAYS.contains(&tokens[i].to_ascii_lowercase().as_str())
            && tokens
                .get(i + 1)
                .is_some_and(|m| MONTHS.contains(&m.to_ascii_lowercase().as_str()))
    })?;
    let month = MONTHS
        .iter()
        .position(|m| tokens[start + 1].eq_ignore_ascii_case(m))? as u32
        + 1;
    let day: u32 = tokens.get(start + 2)?.parse().ok()?;
    let mut hms = tokens.get(start + 3)?.split(':');
    let h: u32 = hms.next()?.parse().ok()?;
    let m: u32 = hms.next()?.parse().ok()?;
    let s: u32 = hms.next().map_or(Some(0), |s| s.parse().ok())?;
    let rest = &tokens[start + 4..];
    let year: i32 = rest
        .iter()
        .find(|t| t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()?;
    let offset = rest
        .iter()
        .find(|t| t.len() == 5 && (t.starts_with('+') || t.starts_with('-')))
        .and_then(|t| {
            let n: i64 = t[1..].parse().ok()?;
            let secs = (n / 100) * 3600 + (n % 100) * 60;
            Some(if t.starts_with('-') { -secs } else { secs })
        })
        .unwrap_or(0);
    let local = chrono::NaiveDate::from_ymd_opt(year, month, day)?
        .and_hms_opt(h, m, s)?
        .and_utc()
        .timestamp();
    Some(local - offset)
}

/// The asctime form of a Unix time in UTC, as `From ` lines carry it.
pub fn asctime(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%a %b %e %H:%M:%S %Y")
        .to_string()
}

/// Writes one message as mboxrd: the `From ` line, `extra` header lines (each ending
/// in `\n`), the message with LF line ends and `From ` lines quoted, and an empty line.
pub fn write_message(
    out: &mut impl Write,
    sender: &str,
    date: i64,
    extra: &[u8],
    message: &[u8],
) -> std::io::Result<()> {
    writeln!(out, "From {sender} {}", asctime(date))?;
    out.write_all(extra)?;
    let mut rest = message;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if line[quotes..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        out.write_all(body)?;
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &[u8]) -> Vec<MboxMessage> {
        let mut r = MboxReader::new(text).unwrap();
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn splits_unquotes_and_dates() {
        let text = b"From a@b Thu Nov 26 16:24:37 2026\nSubject: x\n\nFrom here on\n>From quoted\n>>From twice\n\nFrom b@c Fri Nov 27 01:02:03 2026\nSubject: y\n\nbody\n";
        let msgs = read_all(text);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0].bytes,
            b"Subject: x\n\nFrom here on\nFrom quoted\n>From twice\n"
        );
        assert_eq!(msgs[1].bytes, b"Subject: y\n\nbody\n");
        assert_eq!(msgs[0].date, Some(1_795_710_277));
        assert_eq!(msgs[1].line, 8);
    }

    #[test]
    fn from_line_forms() {
        assert_eq!(
            from_line_date(b"From x Thu Nov 26 16:24:37 2026 +0100"),
            Some(1_795_710_277 - 3600)
        );
        assert_eq!(
            from_line_date(b"From MAILER-DAEMON Thu Nov  5 00:00:00 2026\n"),
            from_line_date(b"From x Thu Nov 05 00:00 2026")
        );
        assert_eq!(from_line_date(b"From me to you"), None);
        assert_eq!(asctime(1_795_710_277), "Thu Nov 26 16:24:37 2026");
    }

    #[test]
    fn over_the_limit_is_passed_over() {
        let text = b"From a Thu Nov 26 16:24:37 2026\nSubject: x\n\n0123456789\n\nFrom b Thu Nov 26 16:24:37 2026\nS: y\n\n";
        let mut r = MboxReader::new(&text[..]).unwrap().with_limit(20);
        let big = r.next_message().unwrap().unwrap();
        assert!(big.bytes.is_empty());
        assert!(big.too_large.is_some());
        let small = r.next_message().unwrap().unwrap();
        assert_eq!(small.bytes, b"S: y\n");
        assert!(small.too_large.is_none());
    }

    #[test]
    fn not_an_mbox() {
        assert!(MboxReader::new(&b"Subject: x\n"[..]).is_err());
        assert!(read_all(b"").is_empty());
    }

    #[test]
    fn writes_mboxrd() {
        let mut out = Vec::new();
        write_message(
            &mut out,
            "a@b",
            1_795_710_277,
            b"Status: RO\n",
            b"Subject: x\r\n\r\nFrom me\r\n>From you\r\nend",
        )
        .unwrap();
        assert_eq!(
            out,
            b"From a@b Thu Nov 26 16:24:37 2026\nStatus: RO\nSubject: x\n\n>From me\n>>From you\nend\n\n"
        );
        let back = read_all(&out);
        assert_eq!(
            back[0].bytes,
            b"Status: RO\nSubject: x\n\nFrom me\n>From you\nend\n"
        );
    }
}
