//! The reader's view of a native LNMP message: what IMAP serves for it. Owns the
//! X-LNMP-* header fields, the X-Priority mapping, and the rule that a rendering is
//! a pure function of the message, so that every FETCH of it returns the same bytes.
//!
//! Header fields written here:
//!
//! - `X-LNMP-Id`: the message id, 64 hex digits.
//! - `X-LNMP-Sender`: the sender's public key, 64 hex digits.
//! - `X-LNMP-Signature`: `valid` or `invalid`, the verdict of the BIP340 check.
//! - `X-LNMP-Payment`: `<n> sat`, only when the caller vouches for a payment.
//! - `X-Priority`: see [`x_priority`]; left out for normal priority and for messages
//!   whose signature fails (their priority field is then nobody's word).

use super::{ConvertError, Envelope, threading, to_mime};
use crate::lnmp::{Message, MessageContent, Priority};

/// What a mail client is shown of a native message.
pub struct NativeView<'a> {
    /// Id, sender key, timestamp and priority come from here.
    pub message: &'a Message,
    pub content: &'a MessageContent,
    /// Decrypted attachment bytes, in the order of `content.attachments`.
    pub files: &'a [Option<Vec<u8>>],
    /// The sender's LNMP address as the caller resolved it; shown in From so that a
    /// reply goes back to the sender.
    pub from_address: String,
    /// (display name, address) of the recipients as the caller resolved them.
    pub to: Vec<(String, String)>,
    /// Whether the Schnorr signature over the id verified.
    pub signature_ok: bool,
    /// Satoshis paid, when the message carries a payment the caller checked.
    pub paid_sats: Option<u64>,
}

/// Least payment that shows a message as X-Priority 2 (High).
pub const HIGH_MIN_SATS: u64 = 1;
/// Least payment that shows a message as X-Priority 1 (Highest).
pub const HIGHEST_MIN_SATS: u64 = 1_000;

/// Latest Date a rendering shows: 9999-12-31T23:59:59Z. The timestamp is the sender's
/// word, and a four-digit year is what every mail client reads.
const MAX_DATE: u64 = 253_402_300_799;

/// The X-Priority (1 highest .. 5 lowest) of a message, or None for normal (3), which
/// needs no header field.
///
/// Paid mail stands out in the client's priority column: a payment of at least
/// [`HIGHEST_MIN_SATS`] shows as 1 (Highest), any smaller payment of at least
/// [`HIGH_MIN_SATS`] as 2 (High). The sender's priority field costs nothing to set, so
/// it never raises a message above Normal by itself; only its Low (4) is kept, for an
/// unpaid message, since asking for less attention needs no proof. 5 (Lowest) is not
/// produced: LNMP has no level below Low.
pub fn x_priority(paid_sats: Option<u64>, priority: Priority) -> Option<u8> {
    match paid_sats.unwrap_or(0) {
        n if n >= HIGHEST_MIN_SATS => Some(1),
        n if n >= HIGH_MIN_SATS => Some(2),
        _ if priority == Priority::Low => Some(4),
        _ => None,
    }
}

/// The X-Priority field value in the form Thunderbird writes and shows.
pub fn x_priority_value(level: u8) -> Option<&'static str> {
    Some(match level {
        1 => "1 (Highest)",
        2 => "2 (High)",
        3 => "3 (Normal)",
        4 => "4 (Low)",
        5 => "5 (Lowest)",
        _ => return None,
    })
}

/// Bridged mail as a mail client sees it: the email as it arrived, with the payment
/// the bridge accepted for it shown as for native mail (X-LNMP-Payment, X-Priority).
/// An X-LNMP-Payment the sender wrote is dropped whatever happens: only the bridge
/// vouches for payments. Paid mail's own X-Priority gives way to the payment's.
pub fn render_bridged(raw: &[u8], paid_sats: Option<u64>) -> Vec<u8> {
    use crate::outbound::headers;
    let Some(sats) = paid_sats else {
        return headers::remove_fields(raw, &["X-LNMP-Payment"]);
    };
    let raw = headers::remove_fields(raw, &["X-LNMP-Payment", "X-Priority"]);
    let mut fields = vec![format!("X-LNMP-Payment: {sats} sat")];
    if let Some(value) = x_priority(Some(sats), Priority::Normal).and_then(x_priority_value) {
        fields.push(format!("X-Priority: {value}"));
    }
    headers::prepend_fields(&raw, &fields)
}

/// Renders a native message as MIME for a mail client: From is the sender's address,
/// Date the message's timestamp, Message-ID `<id@lnmp.invalid>`, plus the X-LNMP-*
/// fields and X-Priority described in the module documentation. Byte for byte the same
/// for the same view.
pub fn render_native(view: &NativeView<'_>) -> Result<Vec<u8>, ConvertError> {
    let m = view.message;
    let id = m.id.to_hex();
    let mut extra = vec![
        ("X-LNMP-Id".to_owned(), id.clone()),
        ("X-LNMP-Sender".to_owned(), m.from.to_hex()),
        (
            "X-LNMP-Signature".to_owned(),
            if view.signature_ok {
                "valid"
            } else {
                "invalid"
            }
            .to_owned(),
        ),
    ];
    if let Some(sats) = view.paid_sats {
        extra.push(("X-LNMP-Payment".to_owned(), format!("{sats} sat")));
    }
    if view.signature_ok
        && let Some(value) = x_priority(view.paid_sats, m.priority).and_then(x_priority_value)
    {
        extra.push(("X-Priority".to_owned(), value.to_owned()));
    }
    let message_id = threading::to_message_id(&id);
    let envelope = Envelope {
        // No display name: the address itself, checksum included, is what identifies
        // the sender; a name would be the sender's own claim.
        from: (String::new(), view.from_address.clone()),
        to: view.to.clone(),
        date: i64::try_from(m.timestamp.min(MAX_DATE)).unwrap_or_default(),
        message_id: message_id
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
        extra_headers: extra,
    };
    to_mime(view.content, &envelope, view.files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lnmp::{Draft, FileAttachment, Identity, Kind, PaymentProof};
    use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

    fn message(priority: Priority, content: &MessageContent, timestamp: u64) -> Message {
        let sender = Identity::from_secret_bytes(&[1; 32]).unwrap();
        let alice = Identity::from_secret_bytes(&[2; 32]).unwrap();
        let draft = Draft {
            to: vec![alice.public_key()],
            kind: Kind::Text,
            timestamp,
            content: content.clone(),
            relays: vec![],
            expiry: None,
            priority,
        };
        Message::seal(&sender, &draft, &mut rand_core::OsRng).unwrap()
    }

    fn header(m: &mail_parser::Message<'_>, name: &str) -> Option<String> {
        m.headers()
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| match &h.value {
                HeaderValue::Text(t) => t.to_string(),
                _ => String::from_utf8_lossy(
                    &m.raw_message()[h.offset_start as usize..h.offset_end as usize],
                )
                .trim()
                .to_owned(),
            })
    }

    #[test]
    fn the_mapping_honours_priority_only_as_far_as_paid() {
        use Priority::*;
        assert_eq!(x_priority(None, Urgent), None);
        assert_eq!(x_priority(Some(0), High), None);
        assert_eq!(x_priority(Some(1), Urgent), Some(2));
        assert_eq!(x_priority(Some(999), Normal), Some(2));
        assert_eq!(x_priority(Some(1000), Urgent), Some(1));
        assert_eq!(x_priority(Some(1000), Normal), Some(1));
        assert_eq!(x_priority(Some(1_000_000), Low), Some(1));
        assert_eq!(x_priority(None, Low), Some(4));
        assert_eq!(x_priority(None, Normal), None);
        assert_eq!(x_priority_value(1), Some("1 (Highest)"));
        assert_eq!(x_priority_value(5), Some("5 (Lowest)"));
        assert_eq!(x_priority_value(0), None);
    }

    #[test]
    fn a_native_message_shows_its_lnmp_fields() {
        let content = MessageContent {
            subject: Some("Invoice\r\nBcc: eve@example.org".into()),
            body: "Hello".into(),
            ..MessageContent::default()
        };
        let mut m = message(Priority::Urgent, &content, 1_700_000_000);
        m.payment = Some(PaymentProof {
            preimage: [7; 32],
            amount: 2100,
            route: None,
        });
        let view = NativeView {
            message: &m,
            content: &content,
            files: &[],
            from_address: "bob#abcdef@relay.example.org".into(),
            to: vec![("Alice\r\nX-Evil: 1".into(), "alice@bridge.test".into())],
            signature_ok: true,
            paid_sats: Some(2100),
        };
        let mime = render_native(&view).unwrap();
        assert_eq!(mime, render_native(&view).unwrap(), "deterministic");
        let text = String::from_utf8_lossy(&mime);
        assert!(
            !text.contains("\nBcc:") && !text.contains("\nX-Evil:"),
            "{text}"
        );

        let back = MessageParser::default().parse(&mime).unwrap();
        let id = m.id.to_hex();
        assert_eq!(header(&back, "X-LNMP-Id").as_deref(), Some(id.as_str()));
        assert_eq!(
            header(&back, "X-LNMP-Sender"),
            Some(m.from.to_hex()),
            "sender key"
        );
        assert_eq!(header(&back, "X-LNMP-Signature").as_deref(), Some("valid"));
        assert_eq!(header(&back, "X-LNMP-Payment").as_deref(), Some("2100 sat"));
        assert_eq!(header(&back, "X-Priority").as_deref(), Some("1 (Highest)"));
        assert_eq!(
            back.message_id(),
            Some(format!("{id}@lnmp.invalid").as_str())
        );
        assert_eq!(back.date().map(|d| d.to_timestamp()), Some(1_700_000_000));
        let from = back.from().and_then(|a| a.first()).unwrap();
        assert_eq!(
            from.address.as_deref(),
            Some("bob#abcdef@relay.example.org")
        );
        assert_eq!(from.name, None);
        let to = back.to().and_then(|a| a.first()).unwrap();
        assert_eq!(to.address.as_deref(), Some("alice@bridge.test"));
        assert_eq!(to.name.as_deref(), Some("AliceX-Evil: 1"));
        assert_eq!(back.body_text(0).as_deref(), Some("Hello"));
    }

    #[test]
    fn an_invalid_signature_is_said_and_its_priority_ignored() {
        let content = MessageContent {
            body: "x".into(),
            ..MessageContent::default()
        };
        // A far-future timestamp still renders a four-digit year.
        let m = message(Priority::Low, &content, u64::MAX / 2);
        let view = NativeView {
            message: &m,
            content: &content,
            files: &[],
            from_address: "bob#abcdef@relay.example.org".into(),
            to: vec![],
            signature_ok: false,
            paid_sats: None,
        };
        let mime = render_native(&view).unwrap();
        let back = MessageParser::default().parse(&mime).unwrap();
        assert_eq!(
            header(&back, "X-LNMP-Signature").as_deref(),
            Some("invalid")
        );
        assert_eq!(header(&back, "X-Priority"), None);
        assert_eq!(header(&back, "X-LNMP-Payment"), None);
        assert_eq!(back.date().map(|d| d.year), Some(9999));
    }

    #[test]
    fn attachments_render_in_content_order() {
        let a = FileAttachment::seal("a.pdf", "application/pdf", b"%PDF", &mut rand_core::OsRng);
        let b = FileAttachment::seal("b.txt", "text/plain", b"notes", &mut rand_core::OsRng);
        let content = MessageContent {
            subject: Some("Files".into()),
            body: "see attached".into(),
            body_html: Some("<p>see attached</p>".into()),
            attachments: vec![a.attachment.clone(), b.attachment.clone()],
            ..MessageContent::default()
        };
        let m = message(Priority::Normal, &content, 1_700_000_000);
        let files = vec![Some(b"%PDF".to_vec()), Some(b"notes".to_vec())];
        let view = NativeView {
            message: &m,
            content: &content,
            files: &files,
            from_address: "bob#abcdef@relay.example.org".into(),
            to: vec![],
            signature_ok: true,
            paid_sats: None,
        };
        let mime = render_native(&view).unwrap();
        assert_eq!(mime, render_native(&view).unwrap());
        let back = MessageParser::default().parse(&mime).unwrap();
        let names: Vec<_> = back
            .attachments()
            .map(|p| {
                (
                    p.attachment_name().unwrap_or("").to_owned(),
                    p.contents().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("a.pdf".to_owned(), b"%PDF".to_vec()),
                ("b.txt".to_owned(), b"notes".to_vec())
            ]
        );
        assert_eq!(header(&back, "X-Priority"), None);
    }

    #[test]
    fn bridged_mail_shows_only_the_payment_the_bridge_vouches_for() {
        let raw = b"X-LNMP-Payment: 99999 sat\r\nX-Priority: 1\r\nSubject: hi\r\n\r\nX-Priority: body\r\n";
        let unpaid = super::render_bridged(raw, None);
        assert_eq!(
            unpaid,
            b"X-Priority: 1\r\nSubject: hi\r\n\r\nX-Priority: body\r\n".to_vec()
        );
        let paid = String::from_utf8(super::render_bridged(raw, Some(100))).unwrap();
        assert_eq!(
            paid,
            "X-LNMP-Payment: 100 sat\r\nX-Priority: 2 (High)\r\nSubject: hi\r\n\r\nX-Priority: body\r\n"
        );
    }
}
