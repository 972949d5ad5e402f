//! RFC 3464 delivery status notifications: the bounce (or delay warning) we send the
//! original sender when outbound mail could not be delivered, and the enhanced status
//! code (RFC 3463) taken from a remote server's reply.
//!
//! Pure: the clock and every name come in as arguments. The recipient, the remote
//! server's name and its reply come from outside, so each is cleaned before it is
//! written (no controls, ASCII only, short lines): a hostile reply must not be able to
//! add header fields or MIME parts to a message we send in our own name. The result is
//! 7-bit throughout, so it can go to any server.

use sha2::{Digest, Sha256};

use super::headers;

/// What happened to one recipient (RFC 3464 Action; "delivered", "relayed" and
/// "expanded" are never reported by us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
}

/// One recipient's group in the delivery-status part.
#[derive(Debug, Clone)]
pub struct RecipientStatus {
    /// Final-Recipient: rfc822; <recipient>
    pub recipient: String,
    pub action: Action,
    /// Enhanced status code, e.g. "5.1.1" (see [`status_of`]).
    pub status: String,
    /// Remote-MTA: dns; <host>
    pub remote_mta: Option<String>,
    /// Diagnostic-Code: smtp; <the reply as received, e.g. "550 5.1.1 no such user">
    pub diagnostic: Option<String>,
    /// Unix seconds of the last attempt → Last-Attempt-Date.
    pub last_attempt: i64,
}

/// Everything one notification says.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name: Reporting-MTA: dns; <it>
    pub reporting_mta: &'a str,
    /// e.g. MAILER-DAEMON@example.test (shown as "Mail Delivery System")
    pub from: &'a str,
    /// The original sender.
    pub to: &'a str,
    /// When we took the message: Arrival-Date.
    pub arrival_date: i64,
    /// The Date header.
    pub now: i64,
    /// The report's own Message-ID, without brackets.
    pub message_id: &'a str,
    /// The original message; only its header section is returned, never its body.
    pub original: &'a [u8],
    pub recipients: &'a [RecipientStatus],
}

/// The longest value from outside written on one line: with its field name it stays
/// well under SMTP's 998-octet line limit.
const VALUE_MAX: usize = 900;
/// The most of the original's header section returned; real ones are a few KiB, and a
/// message without a blank line must not come back whole.
const HEADERS_MAX: usize = 64 * 1024;
/// Dates are clamped to years 1970..=9999 so that every one is a valid RFC 5322 date.
const LAST_DATE: i64 = 253_402_300_799;

/// The report as a complete RFC 5322 message with CRLF line ends: a multipart/report
/// (report-type=delivery-status) of a human explanation, the message/delivery-status
/// part, and the original's header section as text/rfc822-headers (quoted-printable
/// when it is not plain 7-bit text with short lines).
pub fn render(report: &Report<'_>) -> Vec<u8> {
    let delayed_only = !report.recipients.is_empty()
        && report
            .recipients
            .iter()
            .all(|r| r.action == Action::Delayed);
    let reporting_mta = clean(report.reporting_mta);

    let notice = notice(report, &reporting_mta, delayed_only);
    let status = delivery_status(report, &reporting_mta);
    let (original, original_encoding) = original_headers(report.original);
    let boundary = boundary(report.message_id, &[&notice, &status, &original]);

    let mut out = Vec::with_capacity(notice.len() + status.len() + original.len() + 2048);
    let mut field = |line: &str| {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    field(&headers::address_field(
        "From",
        "Mail Delivery System",
        &clean(report.from),
    ));
    field(&headers::address_field("To", "", &clean(report.to)));
    field(&format!(
        "Subject: {}",
        if delayed_only {
            "Delayed Mail (still being retried)"
        } else {
            "Undelivered Mail Returned to Sender"
        }
    ));
    field(&format!("Date: {}", date(report.now)));
    field(&format!("Message-ID: <{}>", clean(report.message_id)));
    if let Some(id) = original_message_id(report.original) {
        field(&format!("In-Reply-To: <{id}>"));
        field(&format!("References: <{id}>"));
    }
    field("Auto-Submitted: auto-replied");
    field("MIME-Version: 1.0");
    field("Content-Type: multipart/report; report-type=delivery-status;");
    field(&format!("\tboundary=\"{boundary}\""));
    field("");
    field("This is a MIME-encapsulated delivery status notification.");

    let part = |out: &mut Vec<u8>, part_headers: &[&str], body: &[u8]| {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        for h in part_headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    };
    part(
        &mut out,
        &[
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Description: Notification",
            "Content-Transfer-Encoding: 7bit",
        ],
        &notice,
    );
    part(
        &mut out,
        &[
            "Content-Type: message/delivery-status",
            "Content-Description: Delivery report",
        ],
        &status,
    );
    let encoding = format!("Content-Transfer-Encoding: {original_encoding}");
    part(
        &mut out,
        &[
            "Content-Type: text/rfc822-headers",
            if delayed_only {
                "Content-Description: Delayed message headers"
            } else {
                "Content-Description: Undelivered message headers"
            },
            &encoding,
        ],
        &original,
    );
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The enhanced status code for an SMTP reply: the one the reply text starts with ("550 5.1.1 ..." → "5.1.1") when it is well formed and its class matches the reply code's first digit, else "<d>.0.0" from the reply code (4 or 5), "4.4.1" when there was no reply (connection failed).
///
/// The text may start with the reply code itself ("550 5.1.1" or "550-5.1.1") or
/// without it ("5.1.1 ..."). A reply code that is neither 4xx nor 5xx has no business
/// ending a delivery, and counts as a permanent failure (class 5).
pub fn status_of(code: Option<u16>, text: &str) -> String {
    let Some(code) = code else {
        return "4.4.1".to_owned();
    };
    let class = if code / 100 == 4 { '4' } else { '5' };
    let text = text.trim_start();
    let text = match text.as_bytes() {
        [a, b, c, sep, ..]
            if [a, b, c].iter().all(|d| d.is_ascii_digit()) && matches!(sep, b' ' | b'-') =>
        {
            &text[4..]
        }
        _ => text,
    };
    let token = text.split_ascii_whitespace().next().unwrap_or_default();
    if is_status(token) && token.starts_with(class) {
        token.to_owned()
    } else {
        format!("{class}.0.0")
    }
}

/// Whether `s` is an enhanced status code: class 2, 4 or 5, then 1 to 3 digits, a
/// dot, and 1 to 3 digits (RFC 3463).
fn is_status(s: &str) -> bool {
    let digits = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let mut parts = s.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("2" | "4" | "5"), Some(subject), Some(detail), None) if digits(subject) && digits(detail)
    )
}

/// The text/plain part: what happened, for a person.
fn notice(report: &Report<'_>, reporting_mta: &str, delayed_only: bool) -> Vec<u8> {
    let mut text = format!("This is the mail system at host {reporting_mta}.\r\n\r\n");
    if delayed_only {
        text.push_str(
            "Your message could not be delivered yet to the recipients below.\r\n\
             The mail system is still trying; you will be told if it gives up.\r\n\
             You do not need to send the message again.\r\n",
        );
    } else {
        text.push_str(
            "Your message could not be delivered to one or more of its recipients.\r\n\
             The reasons are below; the message's header section is attached.\r\n",
        );
    }
    for r in report.recipients {
        let what = match r.action {
            Action::Failed => "delivery failed",
            Action::Delayed => "delivery delayed, still trying",
        };
        text.push_str(&format!(
            "\r\n<{}>: {what} ({})\r\n",
            clean(&r.recipient),
            status(r)
        ));
        match (
            clean_opt(r.remote_mta.as_deref()),
            clean_opt(r.diagnostic.as_deref()),
        ) {
            (Some(mta), Some(diag)) => text.push_str(&format!("    {mta} said: {diag}\r\n")),
            (None, Some(diag)) => text.push_str(&format!("    The remote server said: {diag}\r\n")),
            (Some(mta), None) => text.push_str(&format!("    Remote server: {mta}\r\n")),
            (None, None) => {}
        }
    }
    text.into_bytes()
}

/// The message/delivery-status part: per-message fields, then one group per recipient.
fn delivery_status(report: &Report<'_>, reporting_mta: &str) -> Vec<u8> {
    let mut s = format!(
        "Reporting-MTA: dns; {reporting_mta}\r\nArrival-Date: {}\r\n",
        date(report.arrival_date)
    );
    for r in report.recipients {
        s.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
            clean(&r.recipient),
            match r.action {
                Action::Failed => "failed",
                Action::Delayed => "delayed",
            },
            status(r),
        ));
        if let Some(mta) = clean_opt(r.remote_mta.as_deref()) {
            s.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        if let Some(diag) = clean_opt(r.diagnostic.as_deref()) {
            s.push_str(&format!("Diagnostic-Code: smtp; {diag}\r\n"));
        }
        s.push_str(&format!("Last-Attempt-Date: {}\r\n", date(r.last_attempt)));
    }
    s.into_bytes()
}

/// The recipient's status when it is a well-formed code, else the generic one its
/// action implies.
fn status(r: &RecipientStatus) -> String {
    let s = r.status.trim();
    if is_status(s) {
        s.to_owned()
    } else {
        match r.action {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
        }
        .to_owned()
    }
}

/// The original's header section with CRLF line ends, and the transfer encoding it
/// needs. It ends at the blank line — or, when the original has none, at the first line
/// that is neither a field nor a fold, so a body is never returned — and at
/// HEADERS_MAX. Anything but printable ASCII and tabs, or a line too long for SMTP,
/// makes it quoted-printable.
fn original_headers(original: &[u8]) -> (Vec<u8>, &'static str) {
    let section = headers::normalize_line_endings(&original[..headers::body_start(original)]);
    let mut out = Vec::new();
    for line in section.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        let fold = matches!(content.first(), Some(b' ' | b'\t'));
        if content.is_empty() || (!fold && headers::field_name(content).is_none()) {
            break;
        }
        if out.len() + content.len() + 2 > HEADERS_MAX {
            break;
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    let plain = out.split(|&b| b == b'\n').all(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.len() <= 998
            && line
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    });
    if plain {
        (out, "7bit")
    } else {
        (quoted_printable(&out), "quoted-printable")
    }
}

/// Quoted-printable (RFC 2045 6.7) of CRLF-terminated lines, the line breaks kept.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        let mut column = 0;
        for (i, &b) in content.iter().enumerate() {
            let last = i + 1 == content.len();
            let literal =
                (b'!'..=b'~').contains(&b) && b != b'=' || (matches!(b, b' ' | b'\t') && !last);
            let width = if literal { 1 } else { 3 };
            // A soft break keeps every encoded line within 76 octets, the "=" included.
            if column + width > 75 {
                out.extend_from_slice(b"=\r\n");
                column = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            column += width;
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The original's Message-ID without brackets, cleaned, when it has one.
fn original_message_id(original: &[u8]) -> Option<String> {
    let value = headers::field_values(original, "Message-ID")
        .into_iter()
        .next()?;
    let inner = match value.split_once('<') {
        Some((_, rest)) => rest.split_once('>').map_or(rest, |(id, _)| id),
        None => value.as_str(),
    };
    let id: String = clean(inner)
        .chars()
        .filter(|c| !matches!(c, ' ' | '<' | '>'))
        .collect();
    (!id.is_empty()).then_some(id)
}

/// A boundary derived from the report's Message-ID, rehashed until it occurs in none of
/// the parts. Each candidate is 43 octets, so among n + 1 of them at least one is absent
/// from n octets of content: the loop ends.
fn boundary(message_id: &str, parts: &[&[u8]]) -> String {
    let mut round = 0u64;
    loop {
        let mut hash = Sha256::new();
        hash.update(message_id.as_bytes());
        hash.update(round.to_be_bytes());
        let digest = hash.finalize();
        let candidate = format!("=_lnmp-dsn-{}", hex::encode(&digest[..16]));
        let needle = candidate.as_bytes();
        if !parts
            .iter()
            .any(|p| p.windows(needle.len()).any(|w| w == needle))
        {
            return candidate;
        }
        round += 1;
    }
}

/// An RFC 5322 date for unix seconds, clamped to years 1970..=9999.
fn date(ts: i64) -> String {
    mail_builder::headers::date::Date::new(ts.clamp(0, LAST_DATE)).to_rfc822()
}

/// A value from outside made fit for one line of a header or the delivery-status part:
/// line breaks and tabs become one space, other controls are dropped, non-ASCII becomes
/// '?', the ends are trimmed, and at most VALUE_MAX octets are kept.
fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(VALUE_MAX));
    for c in value.chars() {
        if out.len() >= VALUE_MAX {
            break;
        }
        match c {
            '\r' | '\n' | '\t' | ' ' => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c if c.is_control() => {}
            c if c.is_ascii() => out.push(c),
            _ => out.push('?'),
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// `clean` of an optional value; None when nothing is left.
fn clean_opt(value: Option<&str>) -> Option<String> {
    value.map(clean).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\n\
To: bob@remote.test, carol@remote.test\r\n\
Subject: Lunch\r\n\
Message-ID: <orig-123@example.org>\r\n\
Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
\r\n\
SECRET BODY TEXT that must never come back\r\n";

    fn failed(recipient: &str, diagnostic: Option<&str>) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.to_owned(),
            action: Action::Failed,
            status: "5.1.1".to_owned(),
            remote_mta: Some("mx.remote.test".to_owned()),
            diagnostic: diagnostic.map(str::to_owned),
            last_attempt: 1_704_103_200,
        }
    }

    fn report<'a>(original: &'a [u8], recipients: &'a [RecipientStatus]) -> Report<'a> {
        Report {
            reporting_mta: "mail.example.org",
            from: "MAILER-DAEMON@example.org",
            to: "alice@example.org",
            arrival_date: 1_704_103_000,
            now: 1_704_103_300,
            message_id: "dsn-1@example.org",
            original,
            recipients,
        }
    }

    /// Checks what every report must be, whatever went in: CRLF only, ASCII only, short
    /// lines, and three parts in a multipart/report mail-parser reads. Returns the parts'
    /// decoded contents.
    fn well_formed(raw: &[u8]) -> [Vec<u8>; 3] {
        assert!(raw.is_ascii(), "not ASCII");
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(raw[i - 1], b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
            assert!(
                b >= b' ' || matches!(b, b'\r' | b'\n' | b'\t'),
                "control at {i}"
            );
        }
        for line in raw.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line of {} octets", line.len());
        }
        let parsed = MessageParser::default().parse(raw).expect("parses");
        let root = parsed.root_part();
        let ct = root.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let PartType::Multipart(ids) = &root.body else {
            panic!("not multipart")
        };
        assert_eq!(ids.len(), 3);
        let types: Vec<(String, Option<String>)> = ids
            .iter()
            .map(|id| {
                let ct = parsed
                    .part(*id)
                    .and_then(|p| p.content_type())
                    .expect("part type");
                (ct.ctype().to_owned(), ct.subtype().map(str::to_owned))
            })
            .collect();
        assert_eq!(
            types,
            [
                ("text".into(), Some("plain".into())),
                ("message".into(), Some("delivery-status".into())),
                ("text".into(), Some("rfc822-headers".into())),
            ]
        );
        // The header section itself has no field the renderer did not write.
        let names: Vec<String> = raw[..headers::body_start(raw)]
            .split(|&b| b == b'\n')
            .filter_map(|l| headers::field_name(l))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        for n in &names {
            assert!(
                [
                    "From",
                    "To",
                    "Subject",
                    "Date",
                    "Message-ID",
                    "In-Reply-To",
                    "References",
                    "Auto-Submitted",
                    "MIME-Version",
                    "Content-Type"
                ]
                .contains(&n.as_str()),
                "unexpected field {n}"
            );
        }
        ids.iter()
            .map(|id| parsed.part(*id).unwrap().contents().to_vec())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap()
    }

    /// The delivery-status part's groups, each a list of (name, value).
    fn groups(status: &[u8]) -> Vec<Vec<(String, String)>> {
        let text = String::from_utf8(status.to_vec()).unwrap();
        text.split("\r\n\r\n")
            .filter(|g| !g.trim().is_empty())
            .map(|g| {
                g.split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (n, v) = l.split_once(':').expect("field");
                        (n.to_owned(), v.trim().to_owned())
                    })
                    .collect()
            })
            .collect()
    }

    fn get<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
        group
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_failure_report_has_the_three_parts_and_every_field() {
        let recipients = [
            failed(
                "bob@remote.test",
                Some("550 5.1.1 <bob@remote.test>: no such user"),
            ),
            RecipientStatus {
                recipient: "carol@remote.test".into(),
                action: Action::Delayed,
                status: "4.4.1".into(),
                remote_mta: None,
                diagnostic: None,
                last_attempt: 1_704_103_250,
            },
        ];
        let raw = render(&report(ORIGINAL, &recipients));
        let [notice, status, original] = well_formed(&raw);

        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(parsed.message_id(), Some("dsn-1@example.org"));
        let from = parsed.from().and_then(|a| a.first()).unwrap();
        assert_eq!(from.name(), Some("Mail Delivery System"));
        assert_eq!(from.address(), Some("MAILER-DAEMON@example.org"));
        assert_eq!(
            parsed
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("alice@example.org")
        );
        assert_eq!(parsed.in_reply_to().as_text(), Some("orig-123@example.org"));
        assert_eq!(parsed.references().as_text(), Some("orig-123@example.org"));
        assert_eq!(parsed.date().map(|d| d.to_timestamp()), Some(1_704_103_300));
        assert!(headers::is_automatic(&raw));
        assert!(headers::is_report(&raw));
        assert_eq!(
            headers::field_values(&raw, "Auto-Submitted"),
            ["auto-replied"]
        );

        let notice = String::from_utf8(notice).unwrap();
        assert!(notice.contains("mail.example.org"));
        assert!(notice.contains("<bob@remote.test>: delivery failed (5.1.1)"));
        assert!(notice.contains("mx.remote.test said: 550 5.1.1 <bob@remote.test>: no such user"));
        assert!(notice.contains("<carol@remote.test>: delivery delayed"));

        let groups = groups(&status);
        assert_eq!(groups.len(), 3);
        assert_eq!(
            get(&groups[0], "Reporting-MTA"),
            Some("dns; mail.example.org")
        );
        assert_eq!(
            get(&groups[0], "Arrival-Date"),
            Some("Mon, 1 Jan 2024 09:56:40 +0000")
        );
        let bob = &groups[1];
        assert_eq!(get(bob, "Final-Recipient"), Some("rfc822; bob@remote.test"));
        assert_eq!(get(bob, "Action"), Some("failed"));
        assert_eq!(get(bob, "Status"), Some("5.1.1"));
        assert_eq!(get(bob, "Remote-MTA"), Some("dns; mx.remote.test"));
        assert_eq!(
            get(bob, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 <bob@remote.test>: no such user")
        );
        assert_eq!(
            get(bob, "Last-Attempt-Date"),
            Some("Mon, 1 Jan 2024 10:00:00 +0000")
        );
        let carol = &groups[2];
        assert_eq!(
            get(carol, "Final-Recipient"),
            Some("rfc822; carol@remote.test")
        );
        assert_eq!(get(carol, "Action"), Some("delayed"));
        assert_eq!(get(carol, "Status"), Some("4.4.1"));
        assert_eq!(get(carol, "Remote-MTA"), None);
        assert_eq!(get(carol, "Diagnostic-Code"), None);
        assert_eq!(
            get(carol, "Last-Attempt-Date"),
            Some("Mon, 1 Jan 2024 10:00:50 +0000")
        );

        let body = headers::body_start(ORIGINAL);
        assert_eq!(original, ORIGINAL[..body - 2].to_vec());
        let needle = b"SECRET BODY";
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn only_delays_say_so() {
        let mut r = failed("bob@remote.test", Some("451 4.7.1 try later"));
        r.action = Action::Delayed;
        r.status = status_of(Some(451), "4.7.1 try later");
        let recipients = [r];
        let raw = render(&report(ORIGINAL, &recipients));
        let [notice, status, _] = well_formed(&raw);
        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.subject(), Some("Delayed Mail (still being retried)"));
        assert!(String::from_utf8(notice).unwrap().contains("still trying"));
        assert_eq!(get(&groups(&status)[1], "Status"), Some("4.7.1"));
        // No recipients at all is a failure report, not a delay.
        let raw = render(&report(ORIGINAL, &[]));
        well_formed(&raw);
        assert_eq!(
            headers::field_values(&raw, "Subject"),
            ["Undelivered Mail Returned to Sender"]
        );
    }

    #[test]
    fn the_output_is_deterministic_and_the_boundary_avoids_the_content() {
        let recipients = [failed("bob@remote.test", Some("550 no"))];
        let a = render(&report(ORIGINAL, &recipients));
        assert_eq!(a, render(&report(ORIGINAL, &recipients)));
        let boundary = MessageParser::default()
            .parse(&a)
            .unwrap()
            .root_part()
            .content_type()
            .and_then(|ct| ct.attribute("boundary"))
            .unwrap()
            .to_owned();
        assert!(boundary.starts_with("=_lnmp-dsn-") && boundary.len() == 43);
        // An original that carries the boundary we would pick gets another one.
        let hostile = [
            b"X-Trap: ".as_slice(),
            boundary.as_bytes(),
            b"\r\n\r\nbody\r\n",
        ]
        .concat();
        let b = render(&report(&hostile, &recipients));
        let [_, _, original] = well_formed(&b);
        assert!(
            original
                .windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
        );
        assert_ne!(
            headers::field_values(&b, "Content-Type"),
            headers::field_values(&a, "Content-Type")
        );
        // And so does a diagnostic that carries it.
        let trap = [failed(
            "bob@remote.test",
            Some(&format!("550 --{boundary}--")),
        )];
        well_formed(&render(&report(ORIGINAL, &trap)));
    }

    #[test]
    fn hostile_values_cannot_add_fields_or_parts() {
        let recipients = [RecipientStatus {
            recipient: "bob@remote.test\r\nBcc: victim@else.test".into(),
            action: Action::Failed,
            status: "5.1.1\r\nX-Evil: 1".into(),
            remote_mta: Some("mx\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<b>".into()),
            diagnostic: Some(
                "550 5.1.1 no\r\nFinal-Recipient: rfc822; forged@x\r\n\r\n.\r\nQUIT\r\n\u{0}\u{7}\u{1b}[31m ünïcödé \u{85}".into(),
            ),
            last_attempt: 0,
        }];
        let mut r = report(ORIGINAL, &recipients);
        r.to = "alice@example.org\r\nBcc: victim@else.test";
        r.reporting_mta = "mail\r\nX-Evil: 2";
        let raw = render(&r);
        let [notice, status, _] = well_formed(&raw);
        assert!(headers::field_values(&raw, "Bcc").is_empty());
        assert!(headers::field_values(&raw, "X-Evil").is_empty());
        let groups = groups(&status);
        assert_eq!(groups.len(), 2, "{groups:?}");
        let g = &groups[1];
        assert_eq!(
            get(g, "Final-Recipient"),
            Some("rfc822; bob@remote.test Bcc: victim@else.test")
        );
        assert_eq!(get(g, "Status"), Some("5.0.0"));
        assert_eq!(
            get(g, "Remote-MTA"),
            Some("dns; mx --x Content-Type: text/html <b>")
        );
        assert_eq!(
            get(g, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 no Final-Recipient: rfc822; forged@x . QUIT [31m ?n?c?d?")
        );
        assert_eq!(
            get(&groups[0], "Reporting-MTA"),
            Some("dns; mail X-Evil: 2")
        );
        assert!(!String::from_utf8(notice).unwrap().contains("\r\nBcc"));
    }

    #[test]
    fn a_long_diagnostic_is_cut_to_a_line() {
        let long = format!("550 5.7.1 {}", "x".repeat(5_000));
        let recipients = [failed(&"r".repeat(3_000), Some(&long))];
        let raw = render(&report(ORIGINAL, &recipients));
        let [_, status, _] = well_formed(&raw);
        let groups = groups(&status);
        let diag = get(&groups[1], "Diagnostic-Code").unwrap();
        assert_eq!(diag.len(), "smtp; ".len() + VALUE_MAX);
        assert!(diag.starts_with("smtp; 550 5.7.1 xxx"));
        assert_eq!(
            get(&groups[1], "Final-Recipient").unwrap().len(),
            "rfc822; ".len() + VALUE_MAX
        );
    }

    #[test]
    fn an_original_that_is_not_utf8_comes_back_quoted_printable() {
        let original = b"From: \xff\xfe <a@x>\r\nSubject: caf\xe9 \x00\x1b\r\n\tfolded\r\nX-Long: \
"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'y', 2_000))
        .chain(
            b"\r\nMessage-ID: <\xff@x>\r\n\r\nSECRET BODY\xff\r\n"
                .iter()
                .copied(),
        )
        .collect::<Vec<u8>>();
        let recipients = [failed("bob@remote.test", None)];
        let raw = render(&report(&original, &recipients));
        let [_, _, headers_part] = well_formed(&raw);
        // mail-parser decoded the quoted-printable (and, the part being text, made it
        // UTF-8): the header section is back, with CRLF, and only it.
        let body = headers::body_start(&original);
        let expected = String::from_utf8_lossy(&original[..body - 2]);
        assert!(
            headers_part == expected.as_bytes(),
            "{}",
            String::from_utf8_lossy(&headers_part)
        );
        let encoded = String::from_utf8(raw.clone()).unwrap();
        assert!(encoded.contains("Content-Transfer-Encoding: quoted-printable"));
        assert!(encoded.contains("caf=E9 =00=1B\r\n\tfolded"));
        assert!(raw.windows(11).all(|w| w != b"SECRET BODY"));
        // The broken Message-ID is still named, made ASCII.
        assert_eq!(headers::field_values(&raw, "In-Reply-To"), ["<?@x>"]);
    }

    #[test]
    fn an_original_without_a_blank_line_returns_its_fields_only() {
        let original = b"From: a@x\r\nSubject: s\r\n folded\r\nthis line is body text\r\nSECRET: looks like a field\r\n";
        let recipients = [failed("bob@remote.test", Some("550 no"))];
        let raw = render(&report(original, &recipients));
        let [_, _, headers_part] = well_formed(&raw);
        assert_eq!(
            headers_part,
            b"From: a@x\r\nSubject: s\r\n folded\r\n".to_vec()
        );
        assert!(raw.windows(6).all(|w| w != b"SECRET"));
        assert!(headers::field_values(&raw, "In-Reply-To").is_empty());
        assert!(headers::field_values(&raw, "References").is_empty());

        // Bare LF and a lone CR, an empty original, only a body, huge headers.
        let lf = b"From: a@x\nSubject: s\r\rX: y\n\nSECRET\n";
        let [_, _, part] = well_formed(&render(&report(lf, &recipients)));
        assert_eq!(part, b"From: a@x\r\nSubject: s\r\n".to_vec());
        let [_, _, part] = well_formed(&render(&report(b"", &recipients)));
        assert!(part.is_empty());
        let [_, _, part] = well_formed(&render(&report(b"\r\nSECRET\r\n", &recipients)));
        assert!(part.is_empty());
        let huge: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("Received: hop {i}\r\n").into_bytes())
            .collect();
        let [_, _, part] = well_formed(&render(&report(&huge, &recipients)));
        assert!(part.len() <= HEADERS_MAX && part.len() > HEADERS_MAX - 100);
        assert!(part.ends_with(b"\r\n"));
    }

    #[test]
    fn dates_are_always_valid() {
        let recipients = [RecipientStatus {
            last_attempt: i64::MAX,
            ..failed("b@x", None)
        }];
        let mut r = report(ORIGINAL, &recipients);
        r.now = i64::MIN;
        r.arrival_date = -1;
        let raw = render(&r);
        let [_, status, _] = well_formed(&raw);
        assert_eq!(
            headers::field_values(&raw, "Date"),
            ["Thu, 1 Jan 1970 00:00:00 +0000"]
        );
        assert_eq!(
            get(&groups(&status)[1], "Last-Attempt-Date"),
            Some("Fri, 31 Dec 9999 23:59:59 +0000")
        );
    }

    #[test]
    fn status_codes_come_from_the_reply() {
        assert_eq!(status_of(Some(550), "550 5.1.1 no such user"), "5.1.1");
        assert_eq!(
            status_of(Some(550), "550-5.1.1 first line\r\n550 5.1.1 last"),
            "5.1.1"
        );
        assert_eq!(status_of(Some(550), "5.7.26 DMARC"), "5.7.26");
        assert_eq!(status_of(Some(552), "  552 5.3.4 too big"), "5.3.4");
        assert_eq!(status_of(Some(451), "451 4.7.1 greylisted"), "4.7.1");
        assert_eq!(status_of(Some(421), "421 4.4.2 timeout"), "4.4.2");
        assert_eq!(status_of(Some(554), "554 5.123.456 x"), "5.123.456");
        // Class mismatch, malformed, or none: from the reply code.
        assert_eq!(status_of(Some(550), "550 4.1.1 wrong class"), "5.0.0");
        assert_eq!(status_of(Some(450), "450 5.1.1 wrong class"), "4.0.0");
        assert_eq!(status_of(Some(550), "550 no such user"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 5.1 short"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 5.1.1.1 long"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 5.1234.1 wide"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 5.a.1 letters"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 5.1.1, comma"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 5..1"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 ５.1.1 fullwidth"), "5.0.0");
        assert_eq!(status_of(Some(550), "550 ５"), "5.0.0");
        assert_eq!(status_of(Some(550), ""), "5.0.0");
        assert_eq!(status_of(Some(450), ""), "4.0.0");
        assert_eq!(status_of(Some(554), "5.5.0"), "5.5.0");
        // Codes that are neither 4xx nor 5xx are permanent failures.
        assert_eq!(status_of(Some(250), "250 2.0.0 ok"), "5.0.0");
        assert_eq!(status_of(Some(0), "é"), "5.0.0");
        assert_eq!(status_of(Some(u16::MAX), "655 5.1.1"), "5.1.1");
        // No reply at all.
        assert_eq!(status_of(None, ""), "4.4.1");
        assert_eq!(status_of(None, "550 5.1.1 ignored"), "4.4.1");
    }

    #[test]
    fn quoted_printable_round_trips_through_mail_parser() {
        let text: Vec<u8> = (0..=255u8)
            .filter(|&b| b != b'\r' && b != b'\n')
            .chain(b" \t=\r\n \r\n\t\r\n".iter().copied())
            .chain(std::iter::repeat_n(b'=', 300))
            .chain(b"\r\n".iter().copied())
            .collect();
        let encoded = quoted_printable(&text);
        assert!(encoded.is_ascii());
        assert!(encoded.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        let raw = [
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n".as_slice(),
            &encoded,
        ]
        .concat();
        let parsed = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.root_part().contents(), text.as_slice());
    }
}
