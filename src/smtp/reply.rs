//! SMTP replies: a code, an enhanced status code (RFC 3463) and text, written as one
//! line or as a multi-line reply. Text is kept within RFC 5321's 512-octet reply line.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code, e.g. "5.1.1"; empty for replies that carry none
    /// (the greeting, EHLO, AUTH challenges).
    pub status: &'static str,
    pub lines: Vec<String>,
}

/// The longest text per reply line: 512 octets less the code, separator, status and CRLF.
const MAX_TEXT: usize = 480;

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: "",
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the reply in wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            // Nothing a peer sent may break the reply into extra lines.
            let mut text: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if text.len() > MAX_TEXT {
                let mut cut = MAX_TEXT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            let _ = write!(s, "{}{}", self.code, sep);
            if !self.status.is_empty() {
                let _ = write!(s, "{} ", self.status);
            }
            s.push_str(&text);
            s.push_str("\r\n");
        }
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn writes_single_and_multi_line_replies() {
        assert_eq!(
            wire(&Reply::new(550, "5.1.1", "no such user")),
            "550 5.1.1 no such user\r\n"
        );
        assert_eq!(
            wire(&Reply::multi(250, vec!["host".into(), "SIZE 10".into()])),
            "250-host\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn peer_text_cannot_add_lines_or_overrun_the_limit() {
        let r = Reply::new(501, "5.1.3", "bad <a\r\n250 ok>");
        assert_eq!(wire(&r), "501 5.1.3 bad <a  250 ok>\r\n");
        let long = Reply::new(550, "5.7.1", "é".repeat(400));
        let w = wire(&long);
        assert!(w.len() <= 512, "{}", w.len());
        assert!(w.ends_with("\r\n"));
    }
}
