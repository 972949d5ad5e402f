//! The message body of DATA, line by line: dot-unstuffing, the end marker, and the
//! checks that keep SMTP smuggling out.
//!
//! Only `CRLF . CRLF` ends a message. A bare CR or a bare LF anywhere is either refused
//! (the default) or turned into CRLF, so no other reading of the end marker
//! (`LF . LF`, `CR . CR`, `LF . CRLF`, ...) can make this server and another disagree
//! about where a message stops (CVE-2023-51764 and kin). Over-long lines and oversized
//! messages are read to the end and then refused, so the session stays in step.

/// What was wrong with a message, found once it has been read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProblem {
    TooLarge,
    LineTooLong,
    BareNewline,
}

/// Assembles one message from DATA lines.
#[derive(Debug)]
pub struct DataReader {
    pub message: Vec<u8>,
    max_bytes: usize,
    normalize: bool,
    problem: Option<DataProblem>,
    /// The previous piece ended inside an over-long line.
    in_long_line: bool,
    /// The previous line ended in CRLF: only then can `.` CRLF end the message, so
    /// `LF . CRLF` is never an end marker.
    after_crlf: bool,
    /// The previous piece was cut at the length limit right after a CR, so a piece
    /// that is just LF completes a CRLF.
    pending_cr: bool,
}

/// Appends `content` (a line without its terminator) to `out`, handling bare CR and LF.
/// Returns false if one was found and not normalized.
fn push_checked(out: &mut Vec<u8>, content: &[u8], normalize: bool) -> bool {
    let bare = content.iter().any(|&b| b == b'\r' || b == b'\n');
    if !bare {
        out.extend_from_slice(content);
        return true;
    }
    if !normalize {
        return false;
    }
    let mut i = 0;
    while i < content.len() {
        match content[i] {
            b'\r' if content.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    true
}

impl DataReader {
    pub fn new(max_bytes: usize, normalize: bool) -> DataReader {
        DataReader {
            message: Vec::new(),
            max_bytes,
            normalize,
            problem: None,
            in_long_line: false,
            after_crlf: true,
            pending_cr: false,
        }
    }

    fn flag(&mut self, p: DataProblem) {
        self.problem.get_or_insert(p);
    }

    /// Takes one piece as the line reader returns it: a whole line ending in LF, or
    /// (`complete == false`) the first part of a line longer than the limit. Returns
    /// true once the end marker has been read.
    pub fn push(&mut self, piece: &[u8], complete: bool) -> bool {
        let pending_cr =
            std::mem::replace(&mut self.pending_cr, !complete && piece.ends_with(b"\r"));
        if !complete {
            self.in_long_line = true;
            self.after_crlf = false;
            self.flag(DataProblem::LineTooLong);
            return false;
        }
        let ends_crlf = piece.ends_with(b"\r\n") || (piece == b"\n" && pending_cr);
        let after_crlf = std::mem::replace(&mut self.after_crlf, ends_crlf);
        if std::mem::take(&mut self.in_long_line) {
            // The tail of an over-long line: never an end marker, and already refused.
            return false;
        }
        if piece == b".\r\n" && after_crlf {
            return true;
        }
        if self.problem.is_some() {
            // Keep reading to the end marker, but keep nothing more.
            return false;
        }
        let (content, crlf) = match piece.strip_suffix(b"\r\n") {
            Some(c) => (c, true),
            None => (piece.strip_suffix(b"\n").unwrap_or(piece), false),
        };
        let content = content.strip_prefix(b".").unwrap_or(content);
        let before = self.message.len();
        let mut ok = push_checked(&mut self.message, content, self.normalize);
        if ok {
            if !crlf && !self.normalize {
                ok = false;
            } else {
                self.message.extend_from_slice(b"\r\n");
            }
        }
        if !ok {
            self.message.truncate(before);
            self.flag(DataProblem::BareNewline);
        } else if self.message.len() > self.max_bytes {
            self.flag(DataProblem::TooLarge);
        }
        if self.problem.is_some() {
            self.message = Vec::new();
        }
        false
    }

    /// The message, or what was wrong with it.
    pub fn finish(self) -> Result<Vec<u8>, DataProblem> {
        match self.problem {
            Some(p) => Err(p),
            None => Ok(self.message),
        }
    }
}

/// Checks (or, with `normalize`, repairs) the line endings of a message that arrived by
/// BDAT, where no dot-stuffing applies.
pub fn check_chunked(message: Vec<u8>, normalize: bool) -> Result<Vec<u8>, DataProblem> {
    let mut i = 0;
    let mut clean = true;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' | b'\n' => {
                clean = false;
                break;
            }
            _ => i += 1,
        }
    }
    if clean {
        return Ok(message);
    }
    if !normalize {
        return Err(DataProblem::BareNewline);
    }
    let mut out = Vec::with_capacity(message.len() + 16);
    push_checked(&mut out, &message, true);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at LF, as the line reader would; `ended` says whether the
    /// end marker was found, and `rest` what was left unread after it.
    fn read_rest(input: &[u8], normalize: bool) -> (bool, usize, Result<Vec<u8>, DataProblem>) {
        let mut r = DataReader::new(1 << 20, normalize);
        let mut used = 0;
        for line in input.split_inclusive(|&b| b == b'\n') {
            used += line.len();
            if r.push(line, line.ends_with(b"\n")) {
                return (true, input.len() - used, r.finish());
            }
        }
        (false, 0, r.finish())
    }

    fn read(input: &[u8], normalize: bool) -> (bool, Result<Vec<u8>, DataProblem>) {
        let (ended, _, m) = read_rest(input, normalize);
        (ended, m)
    }

    #[test]
    fn unstuffs_dots_and_stops_at_crlf_dot_crlf() {
        let (ended, m) = read(
            b"Subject: x\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<a@b>\r\n",
            false,
        );
        assert!(ended);
        assert_eq!(m.unwrap(), b"Subject: x\r\n\r\n.leading dot\r\n");
    }

    #[test]
    fn smuggling_end_markers_do_not_end_the_message_and_are_refused() {
        for payload in [
            &b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x>\r\n.\r\n"[..],
            b"Subject: x\r\n\r\nhi\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n",
            b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n",
            b"Subject: x\r\n\r\nhi\r.\rMAIL FROM:<evil@x>\r\n.\r\n",
            b"Subject: x\r\n\r\nhi\r\n.\r.\r\n.\r\n",
            b"Subject: x\r\n\r\nhi\r\n.\r\r\nMAIL FROM:<evil@x>\r\n.\r\n",
        ] {
            let (ended, rest, m) = read_rest(payload, false);
            assert!(ended, "{payload:?}");
            assert_eq!(rest, 0, "only the last CRLF.CRLF ends {payload:?}");
            assert_eq!(m, Err(DataProblem::BareNewline), "{payload:?}");
        }
    }

    #[test]
    fn normalizing_turns_bare_newlines_into_crlf_inside_one_message() {
        let (ended, rest, m) = read_rest(b"Subject: x\n\nhi\n.\nMAIL FROM:<e@x>\r\n.\r\n", true);
        assert!(ended && rest == 0);
        assert_eq!(
            m.unwrap(),
            b"Subject: x\r\n\r\nhi\r\n\r\nMAIL FROM:<e@x>\r\n".to_vec()
        );
        let (_, m) = read(b"a\rb\r\n.\r\n", true);
        assert_eq!(m.unwrap(), b"a\r\nb\r\n");
    }

    #[test]
    fn size_and_line_limits_are_refused_after_the_end_marker() {
        let mut r = DataReader::new(10, false);
        assert!(!r.push(b"0123456789abc\r\n", true));
        assert!(r.push(b".\r\n", true));
        assert_eq!(r.finish(), Err(DataProblem::TooLarge));

        // A CRLF split by the limit still ends the long line: the next . CRLF ends DATA.
        let mut r = DataReader::new(1000, false);
        assert!(!r.push(b"xxxxxxx\r", false));
        assert!(!r.push(b"\n", true));
        assert!(r.push(b".\r\n", true));
        assert_eq!(r.finish(), Err(DataProblem::LineTooLong));

        let mut r = DataReader::new(1000, false);
        assert!(!r.push(b"xxxxxxxx", false));
        // The rest of the long line looks like an end marker, but is not one.
        assert!(!r.push(b".\r\n", true));
        assert!(r.push(b".\r\n", true));
        assert_eq!(r.finish(), Err(DataProblem::LineTooLong));
    }

    #[test]
    fn chunked_messages_get_the_same_line_ending_rules() {
        assert_eq!(
            check_chunked(b"a\r\nb\r\n".to_vec(), false).unwrap(),
            b"a\r\nb\r\n"
        );
        assert_eq!(
            check_chunked(b"a\nb".to_vec(), false),
            Err(DataProblem::BareNewline)
        );
        assert_eq!(
            check_chunked(b"a\nb\r".to_vec(), true).unwrap(),
            b"a\r\nb\r\n"
        );
    }
}
