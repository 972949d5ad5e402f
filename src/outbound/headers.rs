//! Header-section edits on raw RFC 5322 messages: where the body starts, one line
//! ending, reading, removing and adding fields, and the signals (hops, automatic mail,
//! delivery reports) that decide whether outbound mail may be sent or answered.
//!
//! Everything here works on the bytes as they came, without a MIME parse, so a message
//! leaves byte-for-byte as it arrived except for the edit asked for (DKIM signatures on
//! it stay valid). The input is untrusted mail: nothing panics, and both CRLF and bare
//! LF line ends are understood.

use std::borrow::Cow;
use std::ops::Range;

use mail_builder::headers::Header;
use mail_builder::headers::address::Address;

/// Index just past the header section's blank line (the body's first byte); raw.len() when there is no blank line. Accepts CRLF or bare LF line ends.
pub fn body_start(raw: &[u8]) -> usize {
    blank_line(raw).map_or(raw.len(), |line| line.end)
}

/// Every bare CR and every bare LF made CRLF, so the message has one line ending. The SMTP client dot-stuffs only after CRLF, so this must run first: otherwise "\n.\n" in a message could end the DATA early at a lenient server (SMTP smuggling).
pub fn normalize_line_endings(raw: &[u8]) -> Cow<'_, [u8]> {
    let already = raw.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => raw.get(i + 1) == Some(&b'\n'),
        b'\n' => i.checked_sub(1).and_then(|p| raw.get(p)) == Some(&b'\r'),
        _ => true,
    });
    if already {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16 + 2);
    let mut bytes = raw.iter().peekable();
    while let Some(&b) = bytes.next() {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                bytes.next_if_eq(&&b'\n');
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    Cow::Owned(out)
}

/// The unfolded values of every field named `name` (case-insensitive) in the header section, in order, trimmed; non-UTF-8 bytes lossily.
pub fn field_values(raw: &[u8], name: &str) -> Vec<String> {
    fields(raw)
        .into_iter()
        .filter(|f| f.is(name))
        .map(|f| {
            let field = &raw[f.range];
            let value = field
                .iter()
                .position(|&b| b == b':')
                .map_or(&[][..], |colon| &field[colon + 1..]);
            // Unfolding is taking out the line breaks; the whitespace after them stays.
            let unfolded: Vec<u8> = value
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            String::from_utf8_lossy(&unfolded).trim().to_owned()
        })
        .collect()
}

/// The message with every header field whose name is in `names` (case-insensitive), folded continuation lines included, taken out of the header section; the body untouched.
pub fn remove_fields(raw: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut kept_to = 0;
    for f in fields(raw) {
        if names.iter().any(|n| f.is(n)) {
            out.extend_from_slice(&raw[kept_to..f.range.start]);
            kept_to = f.range.end;
        }
    }
    out.extend_from_slice(&raw[kept_to..]);
    out
}

/// Prepends `fields` (each a complete field without line end, e.g. "X-LNMP-Hops: 2") to the header section, each followed by CRLF.
///
/// Two defences, because a mistake here moves or extends header fields: a field given
/// with a line end has it trimmed and an empty one is skipped (either would otherwise
/// end the header section early), and continuation lines at the very start of `raw`,
/// which fold onto no field, are dropped (they would otherwise fold onto the last field
/// prepended — a Received or DKIM-Signature the sender could then extend).
pub fn prepend_fields(raw: &[u8], fields: &[String]) -> Vec<u8> {
    let orphans = raw
        .split_inclusive(|&b| b == b'\n')
        .take_while(|line| is_continuation(line))
        .map(<[u8]>::len)
        .sum::<usize>();
    let added: usize = fields.iter().map(|f| f.len() + 2).sum();
    let mut out = Vec::with_capacity(added + raw.len());
    for field in fields {
        let field = field.trim_end_matches(['\r', '\n']);
        if field.is_empty() {
            continue;
        }
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(raw.get(orphans..).unwrap_or_default());
    out
}

/// How many hops the message has made: the number of Received fields, or the X-LNMP-Hops value when that is larger (largest of several; garbage ignored).
///
/// A count of digits too large for usize counts as usize::MAX: it is a loop signal, so
/// an absurd value must not read as zero.
pub fn hop_count(raw: &[u8]) -> usize {
    let received = fields(raw).iter().filter(|f| f.is("Received")).count();
    let declared = field_values(raw, "X-LNMP-Hops")
        .iter()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(|v| v.parse::<usize>().unwrap_or(usize::MAX))
        .max()
        .unwrap_or(0);
    received.max(declared)
}

/// Whether the message says it was sent automatically: Auto-Submitted present with any value but "no" (RFC 3834; compare the token before any ';' or comment, case-insensitive), or Precedence bulk, junk or list (case-insensitive).
///
/// An empty or unreadable Auto-Submitted counts as automatic: the answer decides
/// whether we may reply, and a wrong "yes" costs one reply where a wrong "no" can
/// start a mail loop.
pub fn is_automatic(raw: &[u8]) -> bool {
    let auto_submitted = field_values(raw, "Auto-Submitted").iter().any(|v| {
        let v = without_comments(v);
        let token = v.split_once(';').map_or(v.as_str(), |(t, _)| t);
        !token.trim().eq_ignore_ascii_case("no")
    });
    let bulk = field_values(raw, "Precedence").iter().any(|v| {
        let v = without_comments(v);
        ["bulk", "junk", "list"]
            .iter()
            .any(|p| v.trim().eq_ignore_ascii_case(p))
    });
    auto_submitted || bulk
}

/// Whether the message is a delivery report: top-level Content-Type multipart/report (any report-type). Parsed case-insensitively, with parameters, comments and folding.
///
/// When several Content-Type fields are present any of them counts, since receivers
/// disagree on which one wins and a report must never be answered.
pub fn is_report(raw: &[u8]) -> bool {
    field_values(raw, "Content-Type").iter().any(|v| {
        let v = without_comments(v);
        let mime: String = v
            .split_once(';')
            .map_or(v.as_str(), |(t, _)| t)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        mime.eq_ignore_ascii_case("multipart/report")
    })
}

/// A header field with an address: `Name: "Display" <addr>` with the display name quoted as needed or RFC 2047 encoded when it is not ASCII; no display when `display` is empty. Returned without the trailing CRLF. CR, LF and other controls in `display` are dropped, so no value can start another field.
///
/// A long value comes back folded (CRLF and a space inside), which is one field still.
/// Controls are dropped from `addr` too, for the same reason.
pub fn address_field(name: &str, display: &str, addr: &str) -> String {
    let display: String = display.chars().filter(|c| !c.is_control()).collect();
    let display = display.trim();
    let addr: String = addr.chars().filter(|c| !c.is_control()).collect();
    let address = Address::new_address((!display.is_empty()).then_some(display), addr.as_str());
    let mut out = format!("{name}: ").into_bytes();
    let column = out.len();
    address.write_header(&mut out, column);
    while out.last().is_some_and(|&b| b == b'\r' || b == b'\n') {
        out.pop();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The field name a header line starts, when it starts one: the bytes before the
/// first colon, without the whitespace RFC 5322's obsolete syntax allows before it,
/// all printable ASCII.
pub(crate) fn field_name(line: &[u8]) -> Option<&[u8]> {
    if is_continuation(line) {
        return None;
    }
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|b| (33..=126).contains(b))).then_some(name)
}

/// Whether a line folds onto the one before it.
fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// The header section's blank line, its line end included.
fn blank_line(raw: &[u8]) -> Option<Range<usize>> {
    let mut start = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            return Some(start..start + line.len());
        }
        start += line.len();
    }
    None
}

/// One header field, folded lines and line ends included — or a stray line that
/// starts none, which is kept as it is and matches no name.
struct Field<'a> {
    name: Option<&'a [u8]>,
    range: Range<usize>,
}

impl Field<'_> {
    fn is(&self, name: &str) -> bool {
        self.name
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The header section cut into fields, in order; each a contiguous range of `raw`.
fn fields(raw: &[u8]) -> Vec<Field<'_>> {
    let end = blank_line(raw).map_or(raw.len(), |line| line.start);
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut start = 0;
    for line in raw[..end].split_inclusive(|&b| b == b'\n') {
        let range = start..start + line.len();
        start = range.end;
        match out.last_mut() {
            Some(last) if is_continuation(line) => last.range.end = range.end,
            _ => out.push(Field {
                name: field_name(line),
                range,
            }),
        }
    }
    out
}

/// `value` without RFC 5322 comments (nested, with quoted-pairs; quoted strings
/// respected); an unclosed comment runs to the end.
fn without_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if depth > 0 || quoted => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(' ');
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRLF_MSG: &[u8] = b"From: a@x\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn body_start_finds_the_blank_line_with_either_line_end() {
        assert_eq!(body_start(CRLF_MSG), CRLF_MSG.len() - 6);
        assert_eq!(&CRLF_MSG[body_start(CRLF_MSG)..], b"body\r\n");
        let lf = b"From: a@x\nSubject: hi\n\nbody\n";
        assert_eq!(&lf[body_start(lf)..], b"body\n");
        let mixed = b"From: a@x\r\nSubject: hi\n\r\nbody";
        assert_eq!(&mixed[body_start(mixed)..], b"body");
        // No blank line: everything is header.
        assert_eq!(body_start(b"From: a@x\r\nSubject: hi\r\n"), 24);
        assert_eq!(body_start(b"From: a@x"), 9);
        assert_eq!(body_start(b""), 0);
        // An empty header section.
        assert_eq!(body_start(b"\r\nbody"), 2);
        assert_eq!(body_start(b"\nbody"), 1);
        // A blank line with whitespace on it is not the separator; a bare CR line neither.
        assert_eq!(body_start(b"A: b\r\n \r\nC: d\r\n\r\nx"), 17);
        assert_eq!(body_start(b"A: b\r\r\nx"), 8);
        // Only the first blank line counts.
        assert_eq!(body_start(b"A: b\n\nc\n\nd"), 6);
    }

    #[test]
    fn line_endings_become_crlf() {
        assert!(matches!(normalize_line_endings(CRLF_MSG), Cow::Borrowed(_)));
        assert!(matches!(normalize_line_endings(b""), Cow::Borrowed(_)));
        assert!(matches!(
            normalize_line_endings(b"no line end"),
            Cow::Borrowed(_)
        ));
        assert_eq!(&*normalize_line_endings(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(&*normalize_line_endings(b"a\rb\r"), b"a\r\nb\r\n");
        assert_eq!(&*normalize_line_endings(b"\n"), b"\r\n");
        assert_eq!(&*normalize_line_endings(b"\r"), b"\r\n");
        assert_eq!(&*normalize_line_endings(b"\n\r"), b"\r\n\r\n");
        assert_eq!(&*normalize_line_endings(b"a\r\r\nb"), b"a\r\n\r\nb");
        assert_eq!(&*normalize_line_endings(b"a\n\r\nb"), b"a\r\n\r\nb");
        // The smuggling shapes: every lone dot ends up on a CRLF line of its own, where
        // the SMTP client's dot-stuffing sees it.
        assert_eq!(
            &*normalize_line_endings(b"x\r\n.\nMAIL FROM:<e@v>\n.\r\n"),
            b"x\r\n.\r\nMAIL FROM:<e@v>\r\n.\r\n"
        );
        assert_eq!(&*normalize_line_endings(b"x\r.\r\ny"), b"x\r\n.\r\ny");
        // The result has no bare CR or LF, whatever went in.
        let all: Vec<u8> = (0..=255u8).chain(b"\r\r\n\n\r".iter().copied()).collect();
        let out = normalize_line_endings(&all);
        for (i, &b) in out.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'));
            }
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r');
            }
        }
        assert!(matches!(normalize_line_endings(&out), Cow::Borrowed(_)));
    }

    #[test]
    fn field_values_unfold_trim_and_match_names_case_insensitively() {
        let raw = b"Received: from a\r\n\tby b;\r\n  Mon, 1 Jan 2024\r\nsubject:  one \r\nX: y\r\nSUBJECT:two\r\nSubject :three\r\n\r\nSubject: in body\r\n";
        assert_eq!(field_values(raw, "Subject"), ["one", "two", "three"]);
        assert_eq!(
            field_values(raw, "received"),
            ["from a\tby b;  Mon, 1 Jan 2024"]
        );
        assert!(field_values(raw, "Missing").is_empty());
        assert!(field_values(raw, "Subj").is_empty());
        let lf = b"To: a@x,\n b@y\nSubject: s\n\nTo: c@z\n";
        assert_eq!(field_values(lf, "to"), ["a@x, b@y"]);
        assert_eq!(
            field_values(b"Subject: \xff\xfe ok\r\n\r\n", "Subject"),
            ["\u{fffd}\u{fffd} ok"]
        );
        assert_eq!(field_values(b"Subject:\r\n\r\n", "Subject"), [""]);
        // No blank line: the whole input is the header section.
        assert_eq!(field_values(b"A: 1\r\nA: 2", "a"), ["1", "2"]);
    }

    #[test]
    fn stray_lines_are_no_field_and_orphan_folds_attach_to_nothing() {
        let raw = b" orphan: x\r\nnot a field\r\n continued\r\n: empty name\r\nA: 1\r\n\r\n";
        assert!(field_values(raw, "orphan").is_empty());
        assert!(field_values(raw, "").is_empty());
        assert_eq!(field_values(raw, "A"), ["1"]);
        assert_eq!(
            remove_fields(raw, &["orphan", "", "A"]),
            raw[..raw.len() - 8]
                .iter()
                .chain(b"\r\n")
                .copied()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn removed_fields_take_their_folded_lines_and_nothing_else() {
        let raw = b"From: a@x\r\nBcc: secret@y,\r\n  other@z\r\nTo: b@x\r\nBCC: s2@y\r\n\r\nBcc: in the body stays\r\n";
        assert_eq!(
            remove_fields(raw, &["Bcc"]),
            b"From: a@x\r\nTo: b@x\r\n\r\nBcc: in the body stays\r\n".to_vec()
        );
        let plain = b"From: a@x\r\n\r\nbody\r\n";
        assert_eq!(remove_fields(plain, &["Bcc"]), plain.to_vec());
        assert_eq!(remove_fields(plain, &[]), plain.to_vec());
        // Several names, bare LF, a name that only prefixes another.
        let lf = b"Bcc: x\n\ty\nBccx: keep\nResent-Bcc: z\nX-Keep: 1\n\nbody\nBcc: no\n";
        assert_eq!(
            remove_fields(lf, &["bcc", "resent-bcc"]),
            b"Bccx: keep\nX-Keep: 1\n\nbody\nBcc: no\n".to_vec()
        );
        // The last field, with no blank line after it.
        assert_eq!(
            remove_fields(b"A: 1\r\nBcc: 2\r\n", &["Bcc"]),
            b"A: 1\r\n".to_vec()
        );
        assert_eq!(
            remove_fields(b"A: 1\r\nBcc: 2", &["Bcc"]),
            b"A: 1\r\n".to_vec()
        );
        // Whitespace before the colon still names the field.
        assert_eq!(
            remove_fields(b"Bcc : x\r\n\r\n", &["Bcc"]),
            b"\r\n".to_vec()
        );
        assert_eq!(remove_fields(b"", &["Bcc"]), b"".to_vec());
    }

    #[test]
    fn prepended_fields_come_first_with_crlf() {
        let out = prepend_fields(
            CRLF_MSG,
            &["X-LNMP-Hops: 2".into(), "Received: by us".into()],
        );
        assert_eq!(
            out,
            b"X-LNMP-Hops: 2\r\nReceived: by us\r\nFrom: a@x\r\nSubject: hi\r\n\r\nbody\r\n"
                .to_vec()
        );
        assert_eq!(prepend_fields(CRLF_MSG, &[]), CRLF_MSG.to_vec());
        assert_eq!(prepend_fields(b"", &["A: 1".into()]), b"A: 1\r\n".to_vec());
        assert_eq!(
            prepend_fields(b"\r\nbody", &["A: 1".into()]),
            b"A: 1\r\n\r\nbody".to_vec()
        );
        // A line end or an empty field cannot end the header section early.
        assert_eq!(
            prepend_fields(
                CRLF_MSG,
                &["A: 1\r\n".into(), String::new(), "B: 2\n".into()]
            ),
            [&b"A: 1\r\nB: 2\r\n"[..], CRLF_MSG].concat()
        );
        // Orphan continuation lines cannot fold onto what we prepend.
        let out = prepend_fields(
            b" evil\r\n\tmore\r\nFrom: a@x\r\n\r\nb",
            &["X-LNMP-Hops: 1".into()],
        );
        assert_eq!(out, b"X-LNMP-Hops: 1\r\nFrom: a@x\r\n\r\nb".to_vec());
        assert_eq!(field_values(&out, "X-LNMP-Hops"), ["1"]);
    }

    #[test]
    fn hops_are_received_fields_or_the_declared_count() {
        assert_eq!(hop_count(CRLF_MSG), 0);
        assert_eq!(hop_count(b""), 0);
        let raw = b"Received: a\r\nReceived: b\r\n c\r\nreceived: d\r\n\r\nReceived: body\r\n";
        assert_eq!(hop_count(raw), 3);
        assert_eq!(hop_count(b"X-LNMP-Hops: 7\r\nReceived: a\r\n\r\n"), 7);
        assert_eq!(
            hop_count(b"X-LNMP-Hops: 1\r\nReceived: a\r\nReceived: b\r\n\r\n"),
            2
        );
        assert_eq!(
            hop_count(b"X-LNMP-Hops: 4\r\nx-lnmp-hops: 9\r\nX-LNMP-Hops: 2\r\n\r\n"),
            9
        );
        for garbage in ["", "many", "-3", "3 hops", "0x10", "\u{0665}"] {
            let raw = format!("X-LNMP-Hops: {garbage}\r\nReceived: a\r\n\r\n");
            assert_eq!(hop_count(raw.as_bytes()), 1, "{garbage:?}");
        }
        assert_eq!(hop_count(b"X-LNMP-Hops:\r\n  5\r\n\r\n"), 5);
        assert_eq!(
            hop_count(b"X-LNMP-Hops: 99999999999999999999999999\r\n\r\n"),
            usize::MAX
        );
        assert_eq!(hop_count(b"\r\nX-LNMP-Hops: 9\r\n"), 0);
    }

    #[test]
    fn automatic_mail_is_recognized() {
        let auto =
            |fields: &str| is_automatic(format!("{fields}From: a@x\r\n\r\nbody\r\n").as_bytes());
        assert!(!auto(""));
        assert!(!auto("Auto-Submitted: no\r\n"));
        assert!(!auto("Auto-Submitted: NO\r\n"));
        assert!(!auto("Auto-Submitted: no ; x=y\r\n"));
        assert!(!auto("Auto-Submitted: (by hand) no (really)\r\n"));
        assert!(!auto("Auto-Submitted:\r\n no\r\n"));
        assert!(auto("Auto-Submitted: auto-replied\r\n"));
        assert!(auto("auto-submitted: Auto-Generated\r\n"));
        assert!(auto("Auto-Submitted: auto-notified; owner-email=a@x\r\n"));
        assert!(auto("Auto-Submitted: nope\r\n"));
        assert!(auto("Auto-Submitted: \r\n"));
        assert!(auto("Auto-Submitted: (no) auto-replied\r\n"));
        assert!(auto(
            "Auto-Submitted: no\r\nAuto-Submitted: auto-generated\r\n"
        ));
        assert!(auto("Precedence: bulk\r\n"));
        assert!(auto("Precedence: JUNK\r\n"));
        assert!(auto("precedence:  list \r\n"));
        assert!(!auto("Precedence: first-class\r\n"));
        assert!(!auto("Precedence: bulky\r\n"));
        assert!(!is_automatic(
            b"From: a@x\r\n\r\nAuto-Submitted: auto-replied\r\n"
        ));
    }

    #[test]
    fn reports_are_multipart_report_at_the_top() {
        assert!(is_report(
            b"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"b\"\r\n\r\n"
        ));
        assert!(is_report(b"content-type: Multipart/Report\r\n\r\n"));
        assert!(is_report(
            b"Content-Type:\r\n multipart/report;\r\n report-type=disposition-notification\r\n\r\n"
        ));
        assert!(is_report(
            b"Content-Type: multipart (c) / (d) report ; x=y\r\n\r\n"
        ));
        assert!(is_report(b"Content-Type: multipart/report\n\n"));
        assert!(!is_report(
            b"Content-Type: multipart/mixed; boundary=\"multipart/report\"\r\n\r\n"
        ));
        assert!(!is_report(
            b"Content-Type: text/plain\r\n\r\nContent-Type: multipart/report\r\n"
        ));
        assert!(!is_report(b"Content-Type: multipart/reports\r\n\r\n"));
        assert!(!is_report(CRLF_MSG));
    }

    #[test]
    fn comments_are_removed() {
        assert_eq!(without_comments("a (b (c) d) e").trim(), "a   e".trim());
        assert_eq!(without_comments("a (b \\) c) d"), "a   d");
        assert_eq!(
            without_comments("\"(not a comment)\" x"),
            "\"(not a comment)\" x"
        );
        assert_eq!(without_comments("a (unclosed"), "a ");
        assert_eq!(without_comments("a ) b"), "a ) b");
    }

    #[test]
    fn address_fields_quote_encode_and_cannot_inject() {
        assert_eq!(address_field("To", "", "a@x.test"), "To: <a@x.test>");
        assert_eq!(
            address_field("From", "Mail Delivery System", "MAILER-DAEMON@x.test"),
            "From: \"Mail Delivery System\" <MAILER-DAEMON@x.test>"
        );
        assert_eq!(address_field("From", "  ", "a@x"), "From: <a@x>");
        assert_eq!(
            address_field("From", "Doe, \"J\" \\", "a@x"),
            "From: \"Doe, \\\"J\\\" \\\\\" <a@x>"
        );
        let hostile = address_field("From", "Eve\r\nBcc: victim@y\r\n\r\nbody", "e@v\r\nX: y");
        assert!(!hostile.contains(['\r', '\n']), "{hostile}");
        let hostile = address_field("From", "\u{7}\u{85}\u{0}", "a@x");
        assert_eq!(hostile, "From: <a@x>");

        for display in [
            "Jörg Müller",
            "日本語の名前",
            "Ünïcödé \"quoted\" name, with comma",
        ] {
            let field = address_field("From", display, "u@x.test");
            assert!(field.is_ascii(), "{field}");
            assert!(!field.ends_with('\n'));
            let raw = format!("{field}\r\nSubject: s\r\n\r\nbody\r\n");
            let parsed = mail_parser::MessageParser::default()
                .parse(raw.as_bytes())
                .unwrap();
            let from = parsed.from().and_then(|a| a.first()).unwrap();
            assert_eq!(from.name(), Some(display));
            assert_eq!(from.address(), Some("u@x.test"));
        }
        // A long name folds, but stays one field.
        let long = "Ö".repeat(200);
        let field = address_field("From", &long, "u@x.test");
        let raw = format!("{field}\r\n\r\n");
        assert_eq!(field_values(raw.as_bytes(), "From").len(), 1);
        assert!(raw.split("\r\n").all(|l| l.len() <= 78));
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.from().and_then(|a| a.first()).and_then(|a| a.name()),
            Some(long.as_str())
        );
    }

    #[test]
    fn nothing_panics_on_odd_input() {
        let inputs: [&[u8]; 10] = [
            b"",
            b"\r",
            b"\n",
            b"\r\n",
            b":",
            b" :",
            b"\xff\xfe:\x00\r\n\r\n",
            b"A",
            b"A:\r",
            b"\t\t\r\n\r\n\r\n",
        ];
        for raw in inputs {
            body_start(raw);
            normalize_line_endings(raw);
            field_values(raw, "A");
            remove_fields(raw, &["A", ""]);
            prepend_fields(raw, &["A: 1".into()]);
            hop_count(raw);
            is_automatic(raw);
            is_report(raw);
        }
    }
}
