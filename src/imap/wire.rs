//! How values are written on the IMAP wire (RFC 3501 §4, RFC 9051 §4): atoms, quoted
//! strings, literals, NIL. Every response the server writes goes through these, so a
//! value taken from a message can never end a line or open a literal by accident.

/// Appends `s` as an IMAP `string`: quoted when it is short, 7-bit and free of CR, LF
/// and NUL, a literal otherwise.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        quoted(out, s);
    } else {
        literal(out, s);
    }
}

/// Appends `s` as an `nstring`: NIL for None.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Appends `s` as an `astring`: a bare atom where the grammar allows one (mailbox
/// names, flags read back by clients), a string otherwise.
pub fn astring(out: &mut Vec<u8>, s: &[u8]) {
    if !s.is_empty() && s.iter().all(|&b| is_astring_char(b)) {
        out.extend_from_slice(s);
    } else {
        string(out, s);
    }
}

/// Appends `{n}\r\n` and the bytes.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'{');
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// Appends `s` in double quotes with `"` and `\` escaped. The caller has checked
/// [`quotable`].
pub fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Whether `s` can travel as a quoted string: no CR, LF, NUL or 8-bit bytes, and
/// (Dovecot's rule, so answers compare byte for byte) at most four characters that
/// need escaping.
pub fn quotable(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
        && s.iter().filter(|&&b| b == b'"' || b == b'\\').count() <= 4
}

/// Whether a stored flag (`\Seen`, `$Paid`, a keyword) can be written as it is: a
/// flag that is not a valid atom is left out of lists rather than break them.
pub fn is_flag(f: &str) -> bool {
    let atom = f.strip_prefix('\\').unwrap_or(f);
    !atom.is_empty() && atom.bytes().all(|b| is_astring_char(b) && b != b']')
}

/// ATOM-CHAR and `]` (RFC 3501 `ASTRING-CHAR`).
fn is_astring_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// Whether `out` is well-formed IMAP response text without its final CRLF: balanced
/// parentheses outside strings, quoted strings closed and 7-bit, literals as long as
/// they say. The check the tests and the fuzz target hold rendered answers to.
pub fn well_formed(out: &[u8]) -> bool {
    let mut depth = 0i64;
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            b'"' => {
                i += 1;
                while i < out.len() && out[i] != b'"' {
                    if matches!(out[i], b'\r' | b'\n' | 0) || out[i] >= 0x80 {
                        return false;
                    }
                    if out[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= out.len() {
                    return false;
                }
            }
            b'{' => {
                let Some(close) = out[i..].iter().position(|&b| b == b'}') else {
                    return false;
                };
                let Ok(n) = std::str::from_utf8(&out[i + 1..i + close])
                    .unwrap_or("x")
                    .parse::<usize>()
                else {
                    return false;
                };
                if out.get(i + close + 1..i + close + 3) != Some(b"\r\n") {
                    return false;
                }
                i += close + 3 + n;
                if i > out.len() {
                    return false;
                }
                continue;
            }
            b'\r' | b'\n' => return false,
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_quoted_or_literal_by_content() {
        assert_eq!(w(|o| string(o, b"a \"b\" \\c")), r#""a \"b\" \\c""#);
        assert_eq!(w(|o| string(o, b"line\r\nnext")), "{10}\r\nline\r\nnext");
        assert_eq!(w(|o| string(o, "é".as_bytes())), "{2}\r\né");
        assert_eq!(w(|o| nstring(o, None)), "NIL");
        assert_eq!(w(|o| astring(o, b"INBOX")), "INBOX");
        assert_eq!(w(|o| astring(o, b"My Box")), "\"My Box\"");
        assert_eq!(w(|o| astring(o, b"")), "\"\"");
    }
}
