//! Mail and LNMP content, each turned into the other: MIME -> [`MessageContent`]
//! (mail-parser) for mail arriving by SMTP, and [`MessageContent`] -> MIME
//! (mail-builder) for LNMP messages shown to mail clients.
//!
//! Attachments leave the content as encrypted blobs ([`FileAttachment`]): conversion
//! returns the sealed bytes beside the content, and the caller stores them in the blob
//! store before committing the message that names them. Conversion itself does no I/O.

pub mod threading;

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
pub fn to_mime(
    content: &MessageContent,
    envelope: &Envelope,
    files: &[Option<Vec<u8>>],
) -> Result<Vec<u8>, ConvertError> {
    use mail_builder::MessageBuilder;
    use mail_builder::headers::address::Address;
    use mail_builder::headers::raw::Raw;

    // Ids come from LNMP content someone else wrote: keep only what a msg-id may hold,
    // so no value can end the header line or start another.
    let strip = |s: String| -> String {
        s.chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>'))
            .collect()
    };
    let one_line = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).collect() };
    let mut b = MessageBuilder::new()
        .from(Address::new_address(
            Some(envelope.from.0.clone()).filter(|n| !n.is_empty()),
            envelope.from.1.clone(),
        ))
        .date(envelope.date)
        .message_id(envelope.message_id.clone());
    if !envelope.to.is_empty() {
        b = b.to(envelope
            .to
            .iter()
            .map(|(n, a)| {
                Address::new_address(Some(n.clone()).filter(|n| !n.is_empty()), a.clone())
            })
            .collect::<Vec<_>>());
    }
    if let Some(s) = &content.subject {
        b = b.subject(s.clone());
    }
    if let Some(r) = &content.reply_to {
        b = b.in_reply_to(strip(threading::to_message_id(r)));
    }
    let mut refs = Vec::new();
    for v in [&content.thread_id, &content.reply_to]
        .into_iter()
        .flatten()
    {
        let id = strip(threading::to_message_id(v));
        if !refs.contains(&id) {
            refs.push(id);
        }
    }
    if !refs.is_empty() {
        b = b.references(refs);
    }
    for (name, value) in &envelope.extra_headers {
        b = b.header(name.clone(), Raw::new(value.clone()));
    }
    b = b.text_body(content.body.clone());
    if let Some(h) = &content.body_html {
        b = b.html_body(h.clone());
    }
    for (a, bytes) in content.attachments.iter().zip(files) {
        if let Some(bytes) = bytes {
            let mime =
                if a.mime_type.contains('/') && a.mime_type.chars().all(|c| c.is_ascii_graphic()) {
                    a.mime_type.clone()
                } else {
                    "application/octet-stream".to_owned()
                };
            b = b.attachment(mime, one_line(&a.filename), bytes.clone());
        }
    }
    Ok(b.write_to_vec()?)
}

/// The raw bytes of bridged mail when they travel inline.
pub fn raw_inline(content: &MessageContent) -> Option<&[u8]> {
    match content.email.as_ref().map(|e| &e.raw) {
        Some(RawEmail::Inline(b)) => Some(b),
        _ => None,
    }
}
