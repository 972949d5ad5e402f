//! The MIME corpus of fixtures/mime, each message converted MIME -> LNMP content ->
//! sealed -> opened -> MIME again: subject, bodies, attachments and threading intact,
//! attachments checked against their blobs, and the raw bytes back byte for byte.
//! Expected values come from fixtures/mime/manifest.json, written by hand.

use lnmp_bridge::convert::{self, ConvertOptions, Envelope, Origin};
use lnmp_bridge::lnmp::{Draft, Identity, Kind, Limits, Message, Priority, Seed};
use mail_parser::{MessageParser, MimeHeaders};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Expected {
    file: String,
    subject: Option<String>,
    message_id: Option<String>,
    in_reply_to: Option<String>,
    references: Vec<String>,
    text_contains: Option<String>,
    html_contains: Option<String>,
    attachments: Vec<ExpectedFile>,
    #[allow(dead_code)]
    notes: String,
}

#[derive(Deserialize)]
struct ExpectedFile {
    name: Option<String>,
    content_type: String,
    size: u64,
}

fn corpus() -> Vec<(Expected, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mime");
    let manifest: Vec<Expected> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.len() >= 14, "the corpus is there");
    manifest
        .into_iter()
        .map(|e| {
            let raw = std::fs::read(dir.join(&e.file)).unwrap();
            (e, raw)
        })
        .collect()
}

fn bracketed(id: &str) -> String {
    format!("<{id}>")
}

#[test]
fn every_corpus_message_converts_with_everything_intact() {
    let mut rng = rand_core::OsRng;
    let alice = Identity::from_seed(&Seed::generate(&mut rng));
    let sender = Identity::from_seed(&Seed::generate(&mut rng));
    for (e, raw) in corpus() {
        let f = &e.file;
        let converted = convert::from_mime(
            &raw,
            Origin::Bridged {
                authentication_results: Some("mx.test; spf=pass".into()),
                mail_from: Some("sender@example.org".into()),
            },
            &ConvertOptions::default(),
        )
        .unwrap_or_else(|err| panic!("{f}: {err}"));
        let c = &converted.content;

        assert_eq!(c.subject, e.subject, "{f}: subject");
        if let Some(t) = &e.text_contains {
            assert!(
                c.body.contains(t.as_str()),
                "{f}: body lacks {t:?}:\n{}",
                c.body
            );
        }
        if let Some(h) = &e.html_contains {
            let html = c
                .body_html
                .as_deref()
                .unwrap_or_else(|| panic!("{f}: no HTML body"));
            assert!(html.contains(h.as_str()), "{f}: HTML lacks {h:?}");
        }

        // Threading follows docs/PROTOCOL.md 6.7.
        let reply_to = e.in_reply_to.clone().or(e.references.last().cloned());
        let thread = e
            .references
            .first()
            .cloned()
            .or(reply_to.clone())
            .or(e.message_id.clone());
        assert_eq!(
            c.reply_to,
            reply_to.as_deref().map(bracketed),
            "{f}: reply_to"
        );
        assert_eq!(
            c.thread_id,
            thread.as_deref().map(bracketed),
            "{f}: thread_id"
        );

        // Attachments: names, types and sizes, and each blob opens to its bytes.
        assert_eq!(
            c.attachments.len(),
            e.attachments.len(),
            "{f}: attachments {:?}",
            c.attachments
        );
        for (got, want) in c.attachments.iter().zip(&e.attachments) {
            if let Some(n) = &want.name {
                assert_eq!(&got.filename, n, "{f}: file name");
            }
            assert_eq!(got.mime_type, want.content_type, "{f}: {}", got.filename);
            assert_eq!(got.size, want.size, "{f}: size of {}", got.filename);
            let blob = converted
                .blobs
                .iter()
                .find(|b| b.attachment.cid == got.cid)
                .unwrap_or_else(|| panic!("{f}: no blob for {}", got.filename));
            assert_eq!(got.open(&blob.bytes).unwrap().len() as u64, want.size);
        }

        // Sealed to a recipient and opened again, the content is the same.
        let draft = Draft {
            to: vec![alice.public_key()],
            kind: Kind::Text,
            timestamp: 1_700_000_000,
            content: c.clone(),
            relays: vec![],
            expiry: None,
            priority: Priority::Normal,
        };
        let sealed = Message::seal(&sender, &draft, &mut rng).unwrap();
        let json = sealed.to_json();
        let opened = Message::from_json(json.as_bytes(), &Limits::default())
            .unwrap()
            .open(&alice, &Limits::default())
            .unwrap();
        assert_eq!(&opened, c, "{f}: content survives sealing");

        // Back to MIME: bridged mail is its raw bytes, byte for byte.
        assert_eq!(
            convert::raw_inline(&opened),
            Some(&raw[..]),
            "{f}: raw bytes"
        );

        // And rendered as native mail, it reads back the same.
        let files: Vec<Option<Vec<u8>>> = opened
            .attachments
            .iter()
            .map(|a| {
                let blob = converted
                    .blobs
                    .iter()
                    .find(|b| b.attachment.cid == a.cid)
                    .unwrap();
                Some(a.open(&blob.bytes).unwrap().to_vec())
            })
            .collect();
        let envelope = Envelope {
            from: ("Sender".into(), "sender@example.org".into()),
            to: vec![("".into(), "alice@bridge.test".into())],
            date: 1_700_000_000,
            message_id: "rendered@lnmp.invalid".into(),
            extra_headers: vec![],
        };
        let mime = convert::to_mime(&opened, &envelope, &files).unwrap();
        let back = MessageParser::default().parse(&mime).unwrap();
        assert_eq!(
            back.subject().map(str::to_owned),
            c.subject,
            "{f}: rendered subject"
        );
        if let Some(t) = &e.text_contains {
            assert!(
                back.body_text(0).unwrap().contains(t.as_str()),
                "{f}: rendered text"
            );
        }
        if let Some(h) = &e.html_contains {
            assert!(
                back.body_html(0).unwrap().contains(h.as_str()),
                "{f}: rendered HTML"
            );
        }
        let rendered: Vec<(String, usize)> = back
            .attachments()
            .map(|p| {
                (
                    p.attachment_name().unwrap_or("").to_owned(),
                    p.contents().len(),
                )
            })
            .collect();
        let want: Vec<(String, usize)> = c
            .attachments
            .iter()
            .map(|a| (a.filename.clone(), a.size as usize))
            .collect();
        assert_eq!(rendered, want, "{f}: rendered attachments");
        if let Some(r) = &reply_to {
            let irt = back
                .in_reply_to()
                .as_text_list()
                .unwrap_or_default()
                .to_vec();
            assert_eq!(
                irt.first().map(|s| s.to_string()).as_deref(),
                Some(r.as_str()),
                "{f}: In-Reply-To"
            );
        }
        if let Some(t) = &thread
            && reply_to.is_some()
        {
            let refs = back
                .references()
                .as_text_list()
                .unwrap_or_default()
                .to_vec();
            assert!(
                refs.iter().any(|x| x == t),
                "{f}: References lacks the thread root"
            );
        }
    }
}

#[test]
fn large_mail_travels_as_blobs_and_big_bodies_as_files() {
    let body = "word ".repeat(50_000);
    let raw = format!("From: a@example.org\r\nSubject: big\r\n\r\n{body}\r\n");
    let opts = ConvertOptions {
        max_inline_raw: 1024,
        max_inline_body: 100_000,
        ..ConvertOptions::default()
    };
    let converted = convert::from_mime(
        raw.as_bytes(),
        Origin::Bridged {
            authentication_results: None,
            mail_from: Some(String::new()),
        },
        &opts,
    )
    .unwrap();
    let c = &converted.content;
    assert!(c.body.is_empty());
    assert_eq!(c.attachments.len(), 1);
    assert_eq!(c.attachments[0].filename, "body.txt");
    let email = c.email.as_ref().unwrap();
    let lnmp_bridge::lnmp::content::RawEmail::Blob(a) = &email.raw else {
        panic!("raw mail over the threshold is a blob");
    };
    let blob = converted
        .blobs
        .iter()
        .find(|b| b.attachment.cid == a.cid)
        .unwrap();
    assert_eq!(&*a.open(&blob.bytes).unwrap(), raw.as_bytes());
    assert_eq!(convert::raw_inline(c), None);
}

#[test]
fn a_message_with_too_many_parts_is_refused() {
    let mut raw =
        String::from("From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
    for n in 0..50 {
        raw.push_str(&format!(
            "--b\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n"
        ));
    }
    raw.push_str("--b--\r\n");
    let opts = ConvertOptions {
        max_parts: 20,
        ..ConvertOptions::default()
    };
    assert!(matches!(
        convert::from_mime(raw.as_bytes(), Origin::Native, &opts),
        Err(convert::ConvertError::TooManyParts(51, 20))
    ));
    assert!(convert::from_mime(raw.as_bytes(), Origin::Native, &ConvertOptions::default()).is_ok());
}

#[test]
fn garbage_is_a_typed_error_not_a_panic() {
    for input in [&b""[..], b"\xff\xfe", b"\r\n\r\n", b"no colon here"] {
        // mail-parser reads almost anything as a header section; whatever it
        // makes of these, conversion returns, and never panics.
        let _ = convert::from_mime(input, Origin::Native, &ConvertOptions::default());
    }
    assert!(matches!(
        convert::from_mime(b"", Origin::Native, &ConvertOptions::default()),
        Err(convert::ConvertError::Unparsable)
    ));
}
