//! Mailbox names: the hierarchy separator, the modified UTF-7 of RFC 3501 §5.1.3 that
//! names travel in unless the client enabled UTF8=ACCEPT, and LIST's `*` and `%`
//! wildcards. Names are kept in UTF-8 in the store.

use base64::Engine;

/// The hierarchy separator.
pub const SEPARATOR: char = '/';

/// Why a name cannot be a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("mailbox name is not valid modified UTF-7")]
    BadUtf7,
    #[error("mailbox name is empty or has an empty level")]
    Empty,
    #[error("mailbox name is too long")]
    TooLong,
    #[error("mailbox name holds a control character or a wildcard")]
    BadChar,
}

/// The stored name for a client's mailbox name: INBOX in any case is INBOX, modified
/// UTF-7 is decoded (unless `utf8`, after ENABLE UTF8=ACCEPT), and the name must be
/// a sane path: no empty levels, no wildcards or controls, at most `max` bytes.
pub fn from_client(raw: &[u8], utf8: bool, max: usize) -> Result<String, NameError> {
    let text = if utf8 {
        String::from_utf8(raw.to_vec()).map_err(|_| NameError::BadUtf7)?
    } else {
        decode_utf7(raw)?
    };
    let text = text.strip_suffix(SEPARATOR).unwrap_or(&text).to_owned();
    if text.is_empty() || text.split(SEPARATOR).any(str::is_empty) {
        return Err(NameError::Empty);
    }
    if text.len() > max {
        return Err(NameError::TooLong);
    }
    if text.chars().any(|c| c.is_control() || c == '*' || c == '%') {
        return Err(NameError::BadChar);
    }
    Ok(normalize_inbox(&text))
}

/// INBOX is case-insensitive, also as the first level of a path (`inbox/x`).
pub fn normalize_inbox(name: &str) -> String {
    match name.split_once(SEPARATOR) {
        Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
        None if name.eq_ignore_ascii_case("INBOX") => "INBOX".into(),
        _ => name.to_owned(),
    }
}

/// A stored name as the client sees it.
pub fn to_client(name: &str, utf8: bool) -> Vec<u8> {
    if utf8 {
        name.as_bytes().to_vec()
    } else {
        encode_utf7(name).into_bytes()
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &match base64::alphabet::Alphabet::new(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,",
    ) {
        Ok(a) => a,
        Err(_) => panic!("the modified base64 alphabet is valid"),
    },
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// Modified UTF-7: printable ASCII stands for itself (`&` as `&-`), anything else is
/// UTF-16BE in modified base64 between `&` and `-`.
pub fn encode_utf7(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if !pending.is_empty() {
            let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&B64.encode(bytes));
            out.push('-');
            pending.clear();
        }
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

pub fn decode_utf7(raw: &[u8]) -> Result<String, NameError> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'&' {
            let end = raw[i + 1..]
                .iter()
                .position(|&c| c == b'-')
                .ok_or(NameError::BadUtf7)?
                + i
                + 1;
            let run = &raw[i + 1..end];
            if run.is_empty() {
                out.push('&');
            } else {
                let bytes = B64.decode(run).map_err(|_| NameError::BadUtf7)?;
                if bytes.len() % 2 != 0 {
                    return Err(NameError::BadUtf7);
                }
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
                let text = String::from_utf16(&units).map_err(|_| NameError::BadUtf7)?;
                // RFC 3501: printable ASCII must not be encoded.
                if text.chars().any(|c| (' '..='~').contains(&c)) {
                    return Err(NameError::BadUtf7);
                }
                out.push_str(&text);
            }
            i = end + 1;
        } else if (0x20..0x7f).contains(&b) {
            out.push(b as char);
            i += 1;
        } else {
            return Err(NameError::BadUtf7);
        }
    }
    Ok(out)
}

/// Whether `name` matches a LIST pattern: `*` matches anything, `%` anything but the
/// separator. INBOX matches case-insensitively.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = normalize_inbox(pattern).chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative glob with one backtrack point per star kind keeps it linear-ish; the
    // dynamic table below is exact and small (names are bounded).
    let mut table = vec![vec![false; n.len() + 1]; p.len() + 1];
    table[p.len()][n.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=n.len()).rev() {
            table[i][j] = match p[i] {
                '*' => table[i + 1][j] || (j < n.len() && table[i][j + 1]),
                '%' => table[i + 1][j] || (j < n.len() && n[j] != SEPARATOR && table[i][j + 1]),
                c => j < n.len() && n[j] == c && table[i + 1][j + 1],
            };
        }
    }
    table[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf7_round_trips_the_rfc_example() {
        // RFC 3501 §5.1.3's example, and an ampersand.
        let name = "~peter/mail/台北/日本語";
        assert_eq!(encode_utf7(name), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(
            decode_utf7(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            name
        );
        assert_eq!(encode_utf7("A&B"), "A&-B");
        assert_eq!(decode_utf7(b"A&-B").unwrap(), "A&B");
        assert_eq!(decode_utf7(b"&Jjo-!").unwrap(), "☺!");
        assert!(decode_utf7(b"&AGE-").is_err(), "encoded ASCII is refused");
        assert!(decode_utf7(b"&U,BTFw").is_err(), "unterminated");
        assert!(decode_utf7("ä".as_bytes()).is_err());
    }

    #[test]
    fn names_are_checked_and_inbox_is_case_insensitive() {
        assert_eq!(from_client(b"inbox", false, 100).unwrap(), "INBOX");
        assert_eq!(from_client(b"Inbox/Sub", false, 100).unwrap(), "INBOX/Sub");
        assert_eq!(from_client(b"Work/", false, 100).unwrap(), "Work");
        assert_eq!(from_client(b"a//b", false, 100), Err(NameError::Empty));
        assert_eq!(from_client(b"a*", false, 100), Err(NameError::BadChar));
        assert_eq!(from_client(b"abc", false, 2), Err(NameError::TooLong));
        assert_eq!(from_client("Über".as_bytes(), true, 100).unwrap(), "Über");
    }

    #[test]
    fn wildcards() {
        assert!(matches("*", "a/b/c"));
        assert!(matches("%", "Sent"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(!matches("a/%", "a/b/c"));
        assert!(matches("a/*", "a/b/c"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("S%t", "Sent"));
        assert!(!matches("Sent", "Sent/x"));
    }
}
