//! What each fuzz target checks, one public function per target (named like it).
//!
//! Shared by the targets in fuzz/fuzz_targets/ and by tests/fuzz_regressions.rs, which
//! includes this file as a module, so a saved input replays through exactly the calls
//! that found it. Every function must never panic on any input; the assertions are the
//! properties that must hold beyond "no panic".

use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use lnmp_bridge::lnmp::blob::BlobId;
use lnmp_bridge::lnmp::seal::{envelope_aad, pad};
use lnmp_bridge::lnmp::{
    Address, Algorithm, ClientFrame, Draft, Identity, Kind, Limits, LookupDocument, Message,
    MessageContent, Priority, PublicKey, RelayFrame, SealSecrets,
};
use std::sync::LazyLock;
use zeroize::Zeroizing;

/// The recipient `message` opens as, and that `open_sealed`'s message is sealed to.
const RECIPIENT_SECRET: [u8; 32] = [2; 32];
/// The sender of `open_sealed`'s message.
const SENDER_SECRET: [u8; 32] = [1; 32];
/// The content key of `open_sealed`'s message.
const CONTENT_KEY: [u8; 32] = [0x11; 32];

/// Fixed identities and the two valid sealed messages `open_sealed` starts from.
struct Fixture {
    sender: Identity,
    recipient: Identity,
    content: MessageContent,
    chacha: Message,
    aes: Message,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let sender = Identity::from_secret_bytes(&SENDER_SECRET).expect("valid secret");
    let recipient = Identity::from_secret_bytes(&RECIPIENT_SECRET).expect("valid secret");
    let content = MessageContent {
        subject: Some("fuzz".into()),
        body: "sealed for the fuzzer".into(),
        ..MessageContent::default()
    };
    let draft = Draft {
        to: vec![recipient.public_key()],
        kind: Kind::Text,
        timestamp: 1_767_225_600,
        content: content.clone(),
        relays: vec!["wss://example.com".into()],
        expiry: None,
        priority: Priority::Normal,
    };
    let seal = |algorithm| {
        let secrets = SealSecrets {
            content_key: Zeroizing::new(CONTENT_KEY),
            nonce: [0x22; 12],
            ephemeral: Zeroizing::new([0x33; 32]),
            aux: [0x44; 32],
            algorithm,
        };
        Message::seal_with(&sender, &draft, &secrets).expect("the fixture seals")
    };
    let chacha = seal(Algorithm::ChaCha20Poly1305);
    let aes = seal(Algorithm::Aes256Gcm);
    Fixture {
        sender,
        recipient,
        content,
        chacha,
        aes,
    }
});

/// `ClientFrame::from_json`; what parses must serialize and parse back equal.
pub fn client_frame(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(frame) = ClientFrame::from_json(data, &limits) {
        let json = frame.to_json();
        let back = ClientFrame::from_json(json.as_bytes(), &limits)
            .unwrap_or_else(|e| panic!("re-parse failed: {e}\n{json}"));
        assert_eq!(back, frame, "round trip changed the frame\n{json}");
    }
}

/// `RelayFrame::from_json`; what parses must serialize and parse back equal.
pub fn relay_frame(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(frame) = RelayFrame::from_json(data, &limits) {
        let json = frame.to_json();
        let back = RelayFrame::from_json(json.as_bytes(), &limits)
            .unwrap_or_else(|e| panic!("re-parse failed: {e}\n{json}"));
        assert_eq!(back, frame, "round trip changed the frame\n{json}");
    }
}

/// `Message::from_json`, then `verify` and `open` as a fixed recipient (which can only
/// succeed for a verified message), and the JSON round trip.
pub fn message(data: &[u8]) {
    let limits = Limits::default();
    let Ok(m) = Message::from_json(data, &limits) else {
        return;
    };
    let verified = m.verify();
    if m.open(&FIXTURE.recipient, &limits).is_ok() {
        assert!(verified.is_ok(), "opened a message that does not verify");
    }
    let json = m.to_json();
    let back = Message::from_json(json.as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("re-parse failed: {e}\n{json}"));
    assert_eq!(back, m, "round trip changed the message\n{json}");
}

/// `open` of a valid sealed message after the fuzzer changed it. The first byte picks
/// the algorithm (bit 2) and the attack (low two bits); the rest drives the attack:
///
/// 0. XOR edits (see [`xor_edits`]) to nonce, ephemeral key, wrapped keys and
///    ciphertext, nothing recomputed: opens only if nothing changed.
/// 1. The same edits, then id and signature recomputed by the sender: the recipient
///    and the sender each open the original content or fail, exactly as their own
///    wrapped key and the shared fields were left alone or not.
/// 2. The rest replaces the ciphertext, re-signed: opens only if it is the original.
/// 3. A malicious sender: the rest is the padded plaintext, encrypted correctly and
///    signed. Opens exactly when it is `pad` of content JSON that parses.
pub fn open_sealed(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let f = &*FIXTURE;
    let limits = Limits::default();
    let original = if selector & 4 == 0 { &f.chacha } else { &f.aes };
    let mut m = original.clone();
    match selector & 3 {
        0 => {
            xor_edits(&mut m, rest);
            let opened = m.open(&f.recipient, &limits);
            if m == *original {
                assert_eq!(opened.as_ref(), Ok(&f.content));
            } else {
                assert!(opened.is_err(), "opened an altered, unsigned message");
            }
        }
        1 => {
            xor_edits(&mut m, rest);
            resign(&mut m, &f.sender);
            let (e, o) = (&m.encrypted, &original.encrypted);
            let shared_intact =
                e.nonce == o.nonce && e.ephemeral == o.ephemeral && e.ciphertext == o.ciphertext;
            for (who, key) in [(&f.recipient, 0), (&f.sender, 1)] {
                let opened = m.open(who, &limits);
                if shared_intact && e.keys[key] == o.keys[key] {
                    assert_eq!(opened.as_ref(), Ok(&f.content));
                } else {
                    assert!(opened.is_err(), "opened altered ciphertext or key");
                }
            }
        }
        2 => {
            m.encrypted.ciphertext = rest.to_vec();
            resign(&mut m, &f.sender);
            let opened = m.open(&f.recipient, &limits);
            if rest == original.encrypted.ciphertext {
                assert_eq!(opened.as_ref(), Ok(&f.content));
            } else {
                assert!(opened.is_err(), "opened a replaced ciphertext");
            }
        }
        _ => {
            let aad = envelope_aad(&m.from, &m.to, m.timestamp, m.kind, m.encrypted.algorithm);
            let payload = Payload {
                msg: rest,
                aad: &aad,
            };
            let nonce = (&m.encrypted.nonce).into();
            m.encrypted.ciphertext = match m.encrypted.algorithm {
                Algorithm::ChaCha20Poly1305 => {
                    ChaCha20Poly1305::new(&CONTENT_KEY.into()).encrypt(nonce, payload)
                }
                Algorithm::Aes256Gcm => Aes256Gcm::new(&CONTENT_KEY.into()).encrypt(nonce, payload),
            }
            .expect("small plaintexts encrypt");
            resign(&mut m, &f.sender);
            let opened = m.open(&f.recipient, &limits).ok();
            assert_eq!(opened, expected_content(rest), "open disagrees with pad");
        }
    }
}

/// Applies `edits`, read as 3-byte records (little-endian u16 offset, XOR byte), to
/// `nonce || ephemeral || keys[..].key || ciphertext`, offsets taken modulo its length.
/// An ephemeral key edited off the curve keeps its old value.
fn xor_edits(m: &mut Message, edits: &[u8]) {
    let e = &mut m.encrypted;
    let mut buf = Vec::new();
    buf.extend_from_slice(&e.nonce);
    buf.extend_from_slice(&e.ephemeral.to_bytes());
    for k in &e.keys {
        buf.extend_from_slice(&k.key);
    }
    buf.extend_from_slice(&e.ciphertext);
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % buf.len();
        buf[at] ^= edit[2];
    }
    let (nonce, rest) = buf.split_at(12);
    let (ephemeral, mut rest) = rest.split_at(32);
    e.nonce.copy_from_slice(nonce);
    if let Ok(k) = PublicKey::from_bytes(ephemeral.try_into().expect("32 bytes")) {
        e.ephemeral = k;
    }
    for k in &mut e.keys {
        let (key, tail) = rest.split_at(48);
        k.key.copy_from_slice(key);
        rest = tail;
    }
    e.ciphertext = rest.to_vec();
}

/// Recomputes the id and signs it as `sender`, as a sender altering its own message can.
fn resign(m: &mut Message, sender: &Identity) {
    m.id = m.compute_id();
    m.signature = sender.sign(&m.id.0, &[0x44; 32]);
}

/// What opening must give for the padded plaintext `padded`: the content its length
/// prefix points at, if `padded` is exactly `pad` of it and it parses.
fn expected_content(padded: &[u8]) -> Option<MessageContent> {
    let (len, rest) = padded.split_first_chunk::<4>()?;
    let plaintext = rest.get(..usize::try_from(u32::from_be_bytes(*len)).ok()?)?;
    if *pad(plaintext) != *padded || plaintext.len() > Limits::default().max_content_bytes {
        return None;
    }
    MessageContent::from_json_bytes(plaintext).ok()
}

/// `MessageContent::from_json_bytes` and its round trip; `FileAttachment::open` of each
/// attachment on the same bytes (which never hash to its cid, so must fail cleanly).
pub fn content(data: &[u8]) {
    let Ok(content) = MessageContent::from_json_bytes(data) else {
        return;
    };
    let json = content.to_json_bytes();
    let back = MessageContent::from_json_bytes(&json)
        .unwrap_or_else(|e| panic!("re-parse failed: {e}\n{}", String::from_utf8_lossy(&json)));
    assert_eq!(back, content, "round trip changed the content");
    for a in &content.attachments {
        assert!(
            a.open(data).is_err(),
            "opened its own description as a blob"
        );
    }
}

/// `Address` and `BlobId` parsing of the bytes as UTF-8 and `LookupDocument::from_json`,
/// each with its round trip; a parsed document must verify against its own address.
pub fn address_and_lookup(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        Address::looks_like(s);
        if let Ok(a) = s.parse::<Address>() {
            assert_eq!(a.to_string().parse::<Address>().as_ref(), Ok(&a), "{a}");
        }
        if let Ok(id) = s.parse::<BlobId>() {
            assert_eq!(
                id.to_string().parse::<BlobId>(),
                Ok(id),
                "BlobId round trip"
            );
        }
    }
    let limits = Limits::default();
    if let Ok(doc) = LookupDocument::from_json(data, &limits) {
        let json = doc.to_json();
        let back = LookupDocument::from_json(json.as_bytes(), &limits)
            .unwrap_or_else(|e| panic!("re-parse failed: {e}\n{json}"));
        assert_eq!(back, doc, "round trip changed the document\n{json}");
        let own = Address::new(&doc.pubkey, &doc.name, None).expect("a valid name");
        assert_eq!(doc.verify(&own), Ok(()), "rejects its own address");
    }
}

/// Every line ends in CRLF, and no CR or LF stands alone.
fn crlf_only(m: &[u8]) -> bool {
    m.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => m.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && m[i - 1] == b'\r',
        _ => true,
    })
}

/// What an SMTP client can send: each LF-terminated line parsed as a command, the
/// whole input read as DATA (in pieces as the line reader cuts them, with and without
/// normalizing) and as BDAT chunks, and echoed in a reply. A message that is accepted
/// has only CRLF line ends; a reply is one line within 512 octets.
pub fn smtp_input(data: &[u8]) {
    use lnmp_bridge::smtp::Reply;
    use lnmp_bridge::smtp::data::{DataReader, check_chunked};
    for line in data.split_inclusive(|&b| b == b'\n') {
        let _ = smtp_proto::Request::parse(&mut line.iter());
    }
    for normalize in [false, true] {
        let mut reader = DataReader::new(64 * 1024, normalize);
        let mut ended = false;
        for line in data.split_inclusive(|&b| b == b'\n') {
            // The line reader hands over at most 64 bytes at a time here.
            for (i, piece) in line.chunks(64).enumerate() {
                let complete = line.ends_with(b"\n") && (i + 1) * 64 >= line.len();
                if reader.push(piece, complete) {
                    ended = true;
                    break;
                }
            }
            if ended {
                break;
            }
        }
        if let Ok(m) = reader.finish() {
            assert!(crlf_only(&m), "DATA accepted a bare CR or LF");
        }
        if let Ok(m) = check_chunked(data.to_vec(), normalize) {
            assert!(crlf_only(&m), "BDAT accepted a bare CR or LF");
        }
    }
    let mut out = Vec::new();
    Reply::new(550, "5.1.1", String::from_utf8_lossy(data)).write_to(&mut out);
    assert!(out.len() <= 512, "reply line of {} octets", out.len());
    assert_eq!(
        out.iter().filter(|&&b| b == b'\n').count(),
        1,
        "one reply line"
    );
    assert!(out.ends_with(b"\r\n"));
}

/// Mail as it comes off the MX: converted to content, whose JSON round-trips, whose
/// raw copy is the input when small, whose blobs open to their attachments' sizes, and
/// which renders as MIME again.
/// The header edits and the DSN on any bytes: line ends all CRLF after normalizing,
/// removed fields gone, and a report that is 7-bit with CRLF line ends only.
pub fn outbound(data: &[u8]) {
    use lnmp_bridge::outbound::{dsn, headers};
    let normal = headers::normalize_line_endings(data);
    for (i, b) in normal.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(normal.get(i + 1), Some(&b'\n'), "bare CR after normalizing"),
            b'\n' => assert!(i > 0 && normal[i - 1] == b'\r', "bare LF after normalizing"),
            _ => {}
        }
    }
    let stripped = headers::remove_fields(&normal, &["From", "Received"]);
    assert!(
        headers::field_values(&stripped, "From").is_empty(),
        "From removed"
    );
    let _ = (
        headers::hop_count(data),
        headers::is_automatic(data),
        headers::is_report(data),
    );
    let text = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
    let field = headers::address_field("From", &text, "a@example.org");
    assert!(
        !field.contains('\n') || field.contains("\r\n "),
        "one field, folded at most"
    );
    let report = dsn::render(&dsn::Report {
        reporting_mta: "mx.example.org",
        from: "MAILER-DAEMON@example.org",
        to: &text,
        arrival_date: 0,
        now: 0,
        message_id: "r@example.org",
        original: data,
        recipients: &[dsn::RecipientStatus {
            recipient: text.clone(),
            action: dsn::Action::Failed,
            status: dsn::status_of(Some(550), &text),
            remote_mta: Some(text.clone()),
            diagnostic: Some(text.clone()),
            last_attempt: 0,
        }],
    });
    assert!(report.is_ascii(), "a DSN is 7-bit");
    assert_eq!(
        headers::normalize_line_endings(&report).len(),
        report.len(),
        "a DSN has CRLF line ends only"
    );
}

pub fn mime(data: &[u8]) {
    use lnmp_bridge::convert::{self, ConvertOptions, Envelope, Origin};
    outbound(data);
    let opts = ConvertOptions {
        max_inline_raw: 4096,
        max_inline_body: 4096,
        ..ConvertOptions::default()
    };
    let origin = Origin::Bridged {
        authentication_results: None,
        mail_from: Some(String::new()),
    };
    let Ok(converted) = convert::from_mime(data, origin, &opts) else {
        return;
    };
    let c = &converted.content;
    let json = c.to_json_bytes();
    let back = MessageContent::from_json_bytes(&json)
        .unwrap_or_else(|e| panic!("converted content does not re-parse: {e}"));
    assert_eq!(&back, c, "content round trip");
    if data.len() <= opts.max_inline_raw {
        assert_eq!(convert::raw_inline(c), Some(data), "raw copy");
    }
    let mut files = Vec::new();
    for a in &c.attachments {
        let blob = converted
            .blobs
            .iter()
            .find(|b| b.attachment.cid == a.cid)
            .expect("a blob for every attachment");
        let file = a.open(&blob.bytes).expect("the blob opens");
        assert_eq!(file.len() as u64, a.size);
        files.push(Some(file.to_vec()));
    }
    let envelope = Envelope {
        from: (String::new(), "a@example.org".into()),
        to: vec![],
        date: 0,
        message_id: "x@lnmp.invalid".into(),
        extra_headers: vec![],
    };
    convert::to_mime(c, &envelope, &files).expect("renders");
}

/// IMAP input: the bytes as a client's stream (framed by the fragmentizer the server
/// uses, each message parsed as a command), and as a message the server renders for
/// FETCH and SEARCH. Everything rendered must parse back as an IMAP response.
pub fn imap_input(data: &[u8]) {
    use imap_codec::decode::Decoder;
    use imap_codec::fragmentizer::Fragmentizer;
    use imap_codec::imap_types::fetch::{Part, Section};
    use imap_codec::{CommandCodec, ResponseCodec};
    use lnmp_bridge::imap::search;
    use lnmp_bridge::imap::structure::ParsedMessage;

    let mut frag = Fragmentizer::new(64 * 1024);
    frag.enqueue_bytes(data);
    while frag.progress().is_some() {
        if frag.is_message_complete() {
            let _ = CommandCodec::default().decode(frag.message_bytes());
            let _ = frag.decode_tag();
        }
    }

    let parsed = ParsedMessage::parse(data);
    let mut out = b"* 1 FETCH (ENVELOPE ".to_vec();
    parsed.envelope(&mut out);
    out.extend_from_slice(b" BODYSTRUCTURE ");
    parsed.body_structure(&mut out, true);
    out.extend_from_slice(b" BODY ");
    parsed.body_structure(&mut out, false);
    out.extend_from_slice(b")\r\n");
    // imap-codec's parser stops at a nesting depth well below what mail (and Dovecot)
    // can have, so deep answers are checked by the token walk alone.
    assert!(
        out.strip_suffix(b"\r\n")
            .is_some_and(lnmp_bridge::imap::wire::well_formed)
            && (out.len() > 4096
                || ResponseCodec::default().decode(&out).is_ok()
                || depth(&out) > 8),
        "not a valid FETCH response: {}",
        String::from_utf8_lossy(&out)
    );
    let one = Part(imap_codec::imap_types::core::Vec1::from(
        std::num::NonZeroU32::MIN,
    ));
    for section in [
        None,
        Some(Section::Header(None)),
        Some(Section::Text(None)),
        Some(Section::Part(one.clone())),
        Some(Section::Mime(one.clone())),
        Some(Section::Text(Some(one))),
    ] {
        let _ = parsed.section(section.as_ref());
    }
    let _ = parsed.rfc822_size();
    let flags = vec!["\\Seen".to_owned()];
    let candidate = search::Candidate {
        seq: 1,
        uid: 1,
        flags: &flags,
        recent: false,
        internal_date: 0,
        size: data.len() as u64,
        modseq: 1,
        raw: Some(data),
    };
    let ctx = search::Context {
        max_seq: 1,
        max_uid: 1,
    };
    for program in [
        "TEXT a",
        "BODY x",
        "FROM b",
        "HEADER Subject c",
        "SENTSINCE 1-Jan-2000",
    ] {
        let line = format!("t SEARCH {program}\r\n");
        if let Ok((_, cmd)) = CommandCodec::default().decode(line.as_bytes())
            && let imap_codec::imap_types::command::CommandBody::Search { criteria, .. } = cmd.body
        {
            for key in criteria.as_ref() {
                let _ = search::matches(key, &candidate, &ctx);
            }
        }
    }
}

/// The deepest parenthesis nesting of a line (outside strings, roughly).
fn depth(line: &[u8]) -> usize {
    let (mut d, mut max) = (0usize, 0usize);
    for &b in line {
        match b {
            b'(' => {
                d += 1;
                max = max.max(d);
            }
            b')' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}
