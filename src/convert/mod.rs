//! Mail and LNMP content, each turned into the other: MIME -> [`MessageContent`]
//! (mail-parser) for mail arriving by SMTP, and [`MessageContent`] -> MIME
//! (mail-builder) for LNMP messages shown to mail clients.
//!
//! Attachments leave the content as encrypted blobs ([`FileAttachment`]): conversion
//! returns the sealed bytes beside the content, and the caller stores them in the blob
//! store before committing the message that names them. Conversion itself does no I/O.

pub mod threading;
pub mod view;

pub use view::{NativeView, render_native, x_priority};

use crate::lnmp::content::{BridgedEmail, RawEmail};
use crate::lnmp::{FileAttachment, MessageContent, SealedBlob};
use mail_parser::{MessageParser, MimeHeaders, PartType};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("the message is not RFC 5322 mail (no header section could be read)")]
    Unparsable,
    #[error("the message has {0} MIME parts, more than the {1} allowed")]
    TooManyParts(usize, usize),
    #[error("cannot write the MIME message: {0}")]
    Write(#[from] std::io::Error),
}

/// Where converted mail came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Mail from the email world, received by our MX: its raw bytes travel with it.
    Bridged {
        authentication_results: Option<String>,
        mail_from: Option<String>,
    },
    /// Mail a user of ours wrote in a mail client: it becomes a native LNMP message.
    Native,
}

/// Size thresholds of the conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Raw mail up to this many bytes travels inline in the content; larger, as a blob.
    pub max_inline_raw: usize,
    /// A text body larger than this travels as an attachment instead.
    pub max_inline_body: usize,
    /// MIME parts a message may have; each attachment costs a sealed blob.
    pub max_parts: usize,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            max_inline_raw: 64 * 1024,
            max_inline_body: 1024 * 1024,
            max_parts: 1000,
        }
    }
}

/// What the header section says about who and when, for routing and checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Addresses of From, lowercased domain, as written otherwise.
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// The Message-ID without brackets.
    pub message_id: Option<String>,
    /// The Date header as Unix seconds.
    pub date: Option<i64>,
}

/// Converted mail: the content, the sealed blobs it names, and the header summary.
pub struct Converted {
    pub content: MessageContent,
    /// Store these in the blob store before committing anything that names them.
    pub blobs: Vec<SealedBlob>,
    pub summary: Summary,
}

/// Parses mail with mail-parser, which can trip a debug assertion on some malformed
/// multiparts (found by fuzzing): a panic there is the same as unparsable mail, never
/// a dropped connection.
pub fn parse_mail(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

/// The addresses of each From header field, in order (RFC 5322 allows exactly one
/// field; more than one is how a forger hides a second sender). Parsed like
/// [`parse_mail`], panics included.
pub fn from_fields(raw: &[u8]) -> Vec<Vec<String>> {
    std::panic::catch_unwind(|| {
        MessageParser::new().parse_headers(raw).map(|m| {
            m.header_values(mail_parser::HeaderName::From)
                .map(|v| addresses(v.as_address()))
                .collect()
        })
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Text with CRLF line ends as plain `\n` lines.
fn lf_lines(text: String) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n")
    } else {
        text
    }
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address.as_deref())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// A file name for a part that has none, with an extension a client can open.
fn fallback_name(n: usize, mime: &str) -> String {
    let ext = match mime {
        "message/rfc822" => "eml",
        "text/calendar" | "application/ics" => "ics",
        "text/plain" => "txt",
        "text/html" => "html",
        "application/pgp-signature" => "asc",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "application/pdf" => "pdf",
        _ => "bin",
    };
    format!("attachment-{n}.{ext}")
}

/// A part's decoded bytes. mail-parser hands back still-encoded base64 when it could
/// not decode a part cleanly (a missing final boundary leaves trailing text after the
/// base64); such a part is decoded again here, leniently, from its raw bytes.
fn contents_of<'a>(
    part: &'a mail_parser::MessagePart<'_>,
    raw: &[u8],
) -> std::borrow::Cow<'a, [u8]> {
    use base64::Engine;
    let base64_declared = part.encoding == mail_parser::Encoding::Base64
        || part
            .content_transfer_encoding()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    if part.is_encoding_problem && base64_declared {
        let body = raw
            .get(part.offset_body as usize..part.offset_end as usize)
            .unwrap_or_default();
        let clean: Vec<u8> = body
            .iter()
            .copied()
            .take_while(|&b| b != b'-')
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        if let Ok(d) = lenient.decode(&clean) {
            return std::borrow::Cow::Owned(d);
        }
    }
    std::borrow::Cow::Borrowed(part.contents())
}

fn mime_of(part: &mail_parser::MessagePart<'_>) -> String {
    if part.is_message() {
        return "message/rfc822".into();
    }
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "application/octet-stream".into(),
    }
}

/// Converts RFC 5322 mail into LNMP content: subject, plain and HTML bodies, threading
/// and attachments; for bridged mail also the raw bytes, so the message can be shown
/// byte for byte later and its DKIM signatures still verify.
pub fn from_mime(
    raw: &[u8],
    origin: Origin,
    opts: &ConvertOptions,
) -> Result<Converted, ConvertError> {
    let message = parse_mail(raw).ok_or(ConvertError::Unparsable)?;
    if message.parts.len() > opts.max_parts {
        return Err(ConvertError::TooManyParts(
            message.parts.len(),
            opts.max_parts,
        ));
    }
    let mut rng = rand_core::OsRng;
    let mut blobs = Vec::new();
    let mut attachments = Vec::new();

    let parts_of = |list: &[u32], html: bool| -> Vec<String> {
        list.iter()
            .filter_map(|&i| message.parts.get(i as usize))
            .filter_map(|p| match (&p.body, html) {
                (PartType::Text(t), false) | (PartType::Html(t), true) => {
                    Some(lf_lines(t.to_string()))
                }
                _ => None,
            })
            .collect()
    };
    let plain = parts_of(&message.text_body, false);
    let html = parts_of(&message.html_body, true);
    let mut body = if plain.is_empty() {
        // HTML-only mail: mail-parser renders the HTML as text for the plain body.
        message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    } else {
        plain.join("\n")
    };
    let mut body_html = (!html.is_empty()).then(|| html.join("\n"));

    // Bodies too large to carry inline travel as attachments, like any other file.
    if body.len() > opts.max_inline_body {
        let sealed = FileAttachment::seal("body.txt", "text/plain", body.as_bytes(), &mut rng);
        attachments.push(sealed.attachment.clone());
        blobs.push(sealed);
        body = String::new();
    }
    if body_html
        .as_ref()
        .is_some_and(|h| h.len() > opts.max_inline_body)
    {
        let h = body_html.take().unwrap_or_default();
        let sealed = FileAttachment::seal("body.html", "text/html", h.as_bytes(), &mut rng);
        attachments.push(sealed.attachment.clone());
        blobs.push(sealed);
    }

    // A calendar invite usually comes twice: as the text/calendar alternative a client
    // shows as the invite, and as an .ics attachment with the same bytes. Keep one.
    let parts: Vec<_> = message.attachments().collect();
    // Each body decoded once: the duplicate check below compares them pairwise.
    let bodies: Vec<std::borrow::Cow<'_, [u8]>> =
        parts.iter().map(|p| contents_of(p, raw)).collect();
    let is_attachment = |p: &mail_parser::MessagePart<'_>| {
        p.content_disposition().is_some_and(|d| d.is_attachment())
    };
    for (n, part) in parts.iter().enumerate() {
        let mime = mime_of(part);
        let duplicate_invite = mime == "text/calendar"
            && !is_attachment(part)
            && parts
                .iter()
                .enumerate()
                .any(|(m, other)| m != n && is_attachment(other) && bodies[m] == bodies[n]);
        if duplicate_invite {
            continue;
        }
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .unwrap_or_else(|| fallback_name(n + 1, &mime));
        let sealed = FileAttachment::seal(&name, &mime, &bodies[n], &mut rng);
        attachments.push(sealed.attachment.clone());
        blobs.push(sealed);
    }

    let own_id = message.message_id();
    let in_reply_to = message
        .in_reply_to()
        .as_text_list()
        .and_then(|l| l.first().map(|s| s.as_ref()));
    let references: Vec<&str> = message
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| s.as_ref()).collect())
        .unwrap_or_default();
    let (thread_id, reply_to) = threading::thread_of(own_id, in_reply_to, &references);

    let email = match origin {
        Origin::Native => None,
        Origin::Bridged {
            authentication_results,
            mail_from,
        } => {
            let raw_email = if raw.len() <= opts.max_inline_raw {
                RawEmail::Inline(raw.to_vec())
            } else {
                let sealed = FileAttachment::seal("message.eml", "message/rfc822", raw, &mut rng);
                let a = sealed.attachment.clone();
                blobs.push(sealed);
                RawEmail::Blob(a)
            };
            Some(BridgedEmail {
                raw: raw_email,
                authentication_results,
                mail_from,
            })
        }
    };

    let summary = Summary {
        from: addresses(message.from()),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        message_id: own_id.map(str::to_owned),
        date: message.date().map(|d| d.to_timestamp()),
    };
    Ok(Converted {
        content: MessageContent {
            subject: message.subject().map(str::to_owned),
            body,
            body_html,
            thread_id,
            reply_to,
            attachments,
            email,
            ..MessageContent::default()
        },
        blobs,
        summary,
    })
}

/// The header values a rendered message carries that LNMP content does not hold.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// (display name, address)
    pub from: (String, String),
    pub to: Vec<(String, String)>,
    pub date: i64,
    /// The Message-ID without brackets.
    pub message_id: String,
    /// Extra header fields, written as given (e.g. X-LNMP-*).
    pub extra_headers: Vec<(String, String)>,
}

/// Renders native LNMP content as MIME: From/To/Date/Message-ID from `envelope`,
/// threading from the content, text and HTML bodies, and each attachment with its
/// decrypted bytes (`files`, in the order of `content.attachments`; an attachment
/// without bytes is left out). Bridged mail should be shown from its raw copy instead
/// (see [`raw_inline`]).
///
/// The output is a pure function of the inputs: the Date is the envelope's, and the
/// multipart boundaries are derived from the Message-ID (see `boundary`). IMAP
/// serves a message in pieces and announces its RFC822.SIZE up front, so every render
/// of the same message must be the same bytes.
pub fn to_mime(
    content: &MessageContent,
    envelope: &Envelope,
    files: &[Option<Vec<u8>>],
) -> Result<Vec<u8>, ConvertError> {
    use mail_builder::MessageBuilder;
    use mail_builder::headers::address::Address;
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::headers::raw::Raw;
    use mail_builder::mime::{BodyPart, MimePart};

    // Ids come from LNMP content someone else wrote: keep only what a msg-id may hold,
    // so no value can end the header line or start another.
    let strip = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>'))
            .collect()
    };
    // mail-builder writes an address as given: nothing that ends the line, closes the
    // angle brackets or starts the next address of a list.
    let addr_spec = |s: &str| -> String {
        s.chars()
            .filter(|c| {
                !c.is_control() && !c.is_whitespace() && !matches!(c, '<' | '>' | ',' | ';' | '"')
            })
            .collect()
    };
    let address = |(name, addr): &(String, String)| {
        let name = one_line(name);
        Address::new_address(Some(name).filter(|n| !n.is_empty()), addr_spec(addr))
    };
    let message_id = strip(&envelope.message_id);
    let mut b = MessageBuilder::new()
        .from(address(&envelope.from))
        .date(envelope.date)
        .message_id(message_id.clone());
    if !envelope.to.is_empty() {
        b = b.to(envelope.to.iter().map(address).collect::<Vec<_>>());
    }
    if let Some(s) = &content.subject {
        b = b.subject(s.clone());
    }
    if let Some(r) = &content.reply_to {
        b = b.in_reply_to(strip(&threading::to_message_id(r)));
    }
    let mut refs = Vec::new();
    for v in [&content.thread_id, &content.reply_to]
        .into_iter()
        .flatten()
    {
        let id = strip(&threading::to_message_id(v));
        if !refs.contains(&id) {
            refs.push(id);
        }
    }
    if !refs.is_empty() {
        b = b.references(refs);
    }
    for (name, value) in &envelope.extra_headers {
        // A field name is printable ASCII without a colon (RFC 5322 §3.6.8).
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != ':')
            .collect();
        if !name.is_empty() {
            b = b.header(name, Raw::new(one_line(value)));
        }
    }

    // The body tree, built here rather than by mail-builder so each multipart carries
    // a boundary of ours: text and HTML as alternatives, attachments mixed after them.
    let text = MimePart::new("text/plain", content.body.as_str());
    let html = content
        .body_html
        .as_deref()
        .map(|h| MimePart::new("text/html", h));
    let mut attachments = Vec::new();
    // What mail-builder may write verbatim (7bit): every text/* leaf. Base64 and
    // quoted-printable output never hold "=_", which every boundary starts with.
    let mut verbatim: Vec<&[u8]> = vec![content.body.as_bytes()];
    verbatim.extend(content.body_html.as_deref().map(str::as_bytes));
    for (a, bytes) in content.attachments.iter().zip(files) {
        if let Some(bytes) = bytes {
            let mime =
                if a.mime_type.contains('/') && a.mime_type.chars().all(|c| c.is_ascii_graphic()) {
                    a.mime_type.clone()
                } else {
                    "application/octet-stream".to_owned()
                };
            if mime.starts_with("text/") {
                verbatim.push(bytes);
            }
            attachments
                .push(MimePart::new(mime, bytes.as_slice()).attachment(one_line(&a.filename)));
        }
    }
    let mut chosen: Vec<String> = Vec::new();
    let mut next_boundary = || {
        let depth = chosen.len();
        let found = (0..=u32::MAX)
            .map(|attempt| boundary(&message_id, depth, attempt))
            .find(|b| {
                // RFC 2046 §5.1.1: no boundary may occur in what it encloses, nor be a
                // prefix of another in the same message.
                !verbatim.iter().any(|v| contains(v, b.as_bytes()))
                    && !chosen
                        .iter()
                        .any(|c| c.starts_with(b.as_str()) || b.starts_with(c.as_str()))
            })
            .unwrap_or_default();
        chosen.push(found.clone());
        found
    };
    let multipart = |subtype: &str, boundary: String, parts| {
        MimePart::new(
            ContentType::new(format!("multipart/{subtype}")).attribute("boundary", boundary),
            BodyPart::Multipart(parts),
        )
    };
    let mut body = match html {
        Some(html) => multipart("alternative", next_boundary(), vec![text, html]),
        None => text,
    };
    if !attachments.is_empty() {
        let mut parts = Vec::with_capacity(attachments.len() + 1);
        parts.push(body);
        parts.extend(attachments);
        body = multipart("mixed", next_boundary(), parts);
    }
    Ok(b.body(body).write_to_vec()?)
}

/// The multipart boundary of the part at `depth` (counted in the order parts are
/// built) of the message `message_id`: `=_` and 32 hex digits of a SHA-256 over both.
/// `attempt` counts up while the candidate occurs in the content it would enclose, so
/// the result stays a function of the message alone. The `=_` prefix cannot occur in
/// base64 or quoted-printable text, the encodings mail-builder picks for other parts.
fn boundary(message_id: &str, depth: usize, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"lnmp-bridge/mime-boundary\0");
    h.update((message_id.len() as u64).to_be_bytes());
    h.update(message_id.as_bytes());
    h.update((depth as u64).to_be_bytes());
    h.update(attempt.to_be_bytes());
    let digest = h.finalize();
    format!("=_{}", hex::encode(&digest[..16]))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .any(|(i, _)| {
            haystack
                .get(i + 1..)
                .is_some_and(|tail| tail.starts_with(rest))
        })
}

/// A header value from someone else's content on one line: control characters
/// (CR and LF among them) are dropped, so the value can neither end the field nor
/// start another.
fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// The raw bytes of bridged mail when they travel inline.
pub fn raw_inline(content: &MessageContent) -> Option<&[u8]> {
    match content.email.as_ref().map(|e| &e.raw) {
        Some(RawEmail::Inline(b)) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn envelope() -> Envelope {
        Envelope {
            from: ("Bob".into(), "bob#abcdef@relay.example.org".into()),
            to: vec![("".into(), "alice@bridge.test".into())],
            date: 1_700_000_000,
            message_id: format!("{}@lnmp.invalid", "ab".repeat(32)),
            extra_headers: vec![("X-LNMP-Id".into(), "ab".repeat(32))],
        }
    }

    fn content_with_files() -> (MessageContent, Vec<Option<Vec<u8>>>) {
        let mut rng = rand_core::OsRng;
        let pdf = FileAttachment::seal("report.pdf", "application/pdf", &[0, 1, 2, 255], &mut rng);
        let notes = FileAttachment::seal("notes.txt", "text/plain", b"line one\n", &mut rng);
        let missing = FileAttachment::seal("gone.bin", "application/octet-stream", b"", &mut rng);
        let content = MessageContent {
            subject: Some("Quarterly r\u{e9}sum\u{e9}".into()),
            body: "Hello Alice,\nthe report is attached.\n".into(),
            body_html: Some("<p>Hello Alice,</p><p>the report is attached.</p>".into()),
            thread_id: Some("<root@example.org>".into()),
            reply_to: Some("cd".repeat(32)),
            attachments: vec![
                pdf.attachment.clone(),
                missing.attachment.clone(),
                notes.attachment.clone(),
            ],
            ..MessageContent::default()
        };
        let files = vec![Some(vec![0, 1, 2, 255]), None, Some(b"line one\n".to_vec())];
        (content, files)
    }

    #[test]
    fn rendering_is_deterministic_and_reads_back() {
        let (content, files) = content_with_files();
        let first = to_mime(&content, &envelope(), &files).unwrap();
        let second = to_mime(&content, &envelope(), &files).unwrap();
        assert_eq!(first, second, "two renders differ");
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("boundary=\"=_"), "{text}");
        assert!(
            text.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"),
            "{text}"
        );

        let back = MessageParser::default().parse(&first).unwrap();
        assert_eq!(back.subject(), content.subject.as_deref());
        // Mail has CRLF line ends; from_mime turns them back into the content's.
        assert_eq!(
            back.body_text(0).map(|t| lf_lines(t.into_owned())),
            Some(content.body.clone())
        );
        assert!(back.body_html(0).unwrap().contains("<p>Hello Alice,</p>"));
        let attachments: Vec<(String, Vec<u8>)> = back
            .attachments()
            .map(|p| {
                (
                    p.attachment_name().unwrap_or("").to_owned(),
                    p.contents().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            attachments,
            vec![
                ("report.pdf".to_owned(), vec![0, 1, 2, 255]),
                ("notes.txt".to_owned(), b"line one\n".to_vec()),
            ]
        );
        assert_eq!(back.date().map(|d| d.to_timestamp()), Some(1_700_000_000));
        let irt = back
            .in_reply_to()
            .as_text_list()
            .unwrap_or_default()
            .to_vec();
        assert_eq!(irt, vec![format!("{}@lnmp.invalid", "cd".repeat(32))]);
    }

    #[test]
    fn every_shape_of_body_is_deterministic() {
        let (full, files) = content_with_files();
        let shapes = [
            MessageContent {
                body_html: None,
                attachments: vec![],
                ..full.clone()
            },
            MessageContent {
                attachments: vec![],
                ..full.clone()
            },
            MessageContent {
                body_html: None,
                ..full.clone()
            },
            full,
        ];
        for c in &shapes {
            let files = if c.attachments.is_empty() {
                &[][..]
            } else {
                &files[..]
            };
            let a = to_mime(c, &envelope(), files).unwrap();
            assert_eq!(a, to_mime(c, &envelope(), files).unwrap());
            assert!(MessageParser::default().parse(&a).is_some());
        }
    }

    #[test]
    fn a_body_holding_the_boundary_gets_another() {
        let env = envelope();
        let taken = boundary(&env.message_id, 0, 0);
        let content = MessageContent {
            body: format!("--{taken}\r\nContent-Type: text/html\r\n\r\n<b>forged</b>\r\n"),
            body_html: Some("<p>real</p>".into()),
            ..MessageContent::default()
        };
        let mime = to_mime(&content, &env, &[]).unwrap();
        let text = String::from_utf8_lossy(&mime);
        assert!(!text.contains(&format!("boundary=\"{taken}\"")), "{text}");
        assert!(text.contains(&boundary(&env.message_id, 0, 1)), "{text}");
        let back = MessageParser::default().parse(&mime).unwrap();
        assert_eq!(back.body_html(0).as_deref(), Some("<p>real</p>"));
    }

    #[test]
    fn foreign_values_cannot_add_header_lines() {
        let mut env = envelope();
        env.from = (
            "Eve\r\nBcc: x@example.org".into(),
            "eve@example.org\r\nX-A: 1".into(),
        );
        env.message_id = "id@x\r\nX-B: 1".into();
        env.extra_headers = vec![
            ("X-C\r\nX-D".into(), "v\r\nX-E: 1".into()),
            (":".into(), "dropped".into()),
        ];
        let content = MessageContent {
            subject: Some("s\r\nX-F: 1".into()),
            reply_to: Some("a@b>\r\nX-G: 1".into()),
            ..MessageContent::default()
        };
        let mime = to_mime(&content, &env, &[]).unwrap();
        let text = String::from_utf8_lossy(&mime);
        for bad in [
            "\nBcc", "\nX-A", "\nX-B", "\nX-D", "\nX-E", "\nX-F", "\nX-G", "dropped",
        ] {
            assert!(!text.contains(bad), "{bad:?} in {text}");
        }
        assert!(text.contains("X-CX-D: vX-E: 1\r\n"), "{text}");
    }
}
