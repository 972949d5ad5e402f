//! Sealing, opening and verifying messages, and every way a tampered or malformed
//! message must fail.

use lnmp_bridge::lnmp::content::{BridgedEmail, Edit, RawEmail, Reaction};
use lnmp_bridge::lnmp::message::WrappedKey;
use lnmp_bridge::lnmp::{
    Algorithm, Draft, Error, FileAttachment, Identity, Kind, Limits, Message, MessageContent,
    PaymentProof, Priority, SealSecrets,
};
use rand_core::OsRng;
use zeroize::Zeroizing;

fn id(n: u8) -> Identity {
    Identity::from_secret_bytes(&[n; 32]).unwrap()
}

fn full_content() -> MessageContent {
    let blob = FileAttachment::seal_with(
        "r.pdf",
        "application/pdf",
        b"%PDF-1.4",
        &[8; 32],
        &[9; 12],
        Algorithm::default(),
    );
    MessageContent {
        subject: Some("Quarterly report".into()),
        body: "See attached.\n".into(),
        body_html: Some("<p>See attached.</p>".into()),
        formatting: lnmp_bridge::lnmp::content::Formatting::Markdown,
        thread_id: Some("<t1@example.com>".into()),
        reply_to: Some("<p1@example.com>".into()),
        mentions: vec![id(2).public_key()],
        reactions: vec![Reaction {
            target: "ab".repeat(32),
            emoji: "👍".into(),
            remove: false,
        }],
        edit_history: vec![Edit {
            timestamp: 1,
            subject: None,
            body: "draft".into(),
        }],
        delete_after: Some(2_000_000_000),
        read_receipts: true,
        attachments: vec![blob.attachment],
        email: Some(BridgedEmail {
            raw: RawEmail::Inline(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
            authentication_results: Some("mx.example.com; spf=pass".into()),
            mail_from: Some("a@example.org".into()),
        }),
    }
}

fn draft(to: Vec<&Identity>) -> Draft {
    Draft {
        to: to.iter().map(|i| i.public_key()).collect(),
        kind: Kind::Text,
        timestamp: 1_767_225_600,
        content: full_content(),
        relays: vec!["wss://relay.example.com:7138".into()],
        expiry: Some(1_767_225_600 + 86_400),
        priority: Priority::High,
    }
}

fn sealed() -> (Identity, Identity, Message) {
    let (alice, bob) = (id(1), id(2));
    let m = Message::seal(&alice, &draft(vec![&bob]), &mut OsRng).unwrap();
    (alice, bob, m)
}

#[test]
fn recipients_and_the_sender_open_what_others_cannot() {
    let (alice, bob, m) = sealed();
    let l = Limits::default();
    m.verify().unwrap();
    assert_eq!(m.open(&bob, &l).unwrap(), full_content());
    assert_eq!(
        m.open(&alice, &l).unwrap(),
        full_content(),
        "the Sent copy opens"
    );
    assert_eq!(m.open(&id(3), &l), Err(Error::NotARecipient));
    assert_eq!(m.encrypted.keys.len(), 2);
}

#[test]
fn ten_recipients_each_open() {
    let sender = id(1);
    let rcpts: Vec<Identity> = (10..20).map(id).collect();
    let m = Message::seal(&sender, &draft(rcpts.iter().collect()), &mut OsRng).unwrap();
    for r in &rcpts {
        assert_eq!(
            m.open(r, &Limits::default()).unwrap().subject.as_deref(),
            Some("Quarterly report")
        );
    }
    assert_eq!(m.encrypted.keys.len(), 11);
}

#[test]
fn sender_among_recipients_gets_one_key() {
    let alice = id(1);
    let m = Message::seal(&alice, &draft(vec![&alice, &id(2)]), &mut OsRng).unwrap();
    assert_eq!(m.encrypted.keys.len(), 2);
    m.open(&alice, &Limits::default()).unwrap();
}

#[test]
fn json_round_trip_is_lossless() {
    let (_, bob, mut m) = sealed();
    m.payment = Some(PaymentProof {
        preimage: [7; 32],
        amount: 100,
        route: None,
    });
    let back = Message::from_json(m.to_json().as_bytes(), &Limits::default()).unwrap();
    assert_eq!(back, m);
    back.verify().unwrap();
    back.open(&bob, &Limits::default()).unwrap();
}

#[test]
fn aes_gcm_messages_open() {
    let (alice, bob) = (id(1), id(2));
    let mut secrets = SealSecrets::generate(&mut OsRng);
    secrets.algorithm = Algorithm::Aes256Gcm;
    let m = Message::seal_with(&alice, &draft(vec![&bob]), &secrets).unwrap();
    assert!(m.to_json().contains("\"AES-256-GCM\""));
    assert_eq!(m.open(&bob, &Limits::default()).unwrap(), full_content());
}

/// Applies `tamper` to a fresh message and expects verification or opening by the
/// recipient to fail.
fn assert_tamper_fails(field: &str, tamper: impl Fn(&mut Message)) {
    let (_, bob, mut m) = sealed();
    tamper(&mut m);
    let verdict = m
        .verify()
        .and_then(|_| m.open(&bob, &Limits::default()).map(|_| ()));
    assert!(verdict.is_err(), "tampering with {field} went unnoticed");
}

/// Tampers and then re-computes the id, as a relay that knows the format would: the
/// signature must still catch it.
fn assert_tamper_fails_resigned_id(field: &str, tamper: impl Fn(&mut Message)) {
    let (_, _, mut m) = sealed();
    tamper(&mut m);
    m.id = m.compute_id();
    assert_eq!(m.verify(), Err(Error::BadSignature), "{field}");
}

#[test]
fn each_signed_field_tampered_alone_fails() {
    let other = id(9).public_key();
    type Tamper = Box<dyn Fn(&mut Message)>;
    let cases: Vec<(&str, Tamper)> = vec![
        ("v", Box::new(|m| m.v = 2)),
        ("id", Box::new(|m| m.id.0[0] ^= 1)),
        ("from", Box::new(move |m| m.from = other)),
        ("to", Box::new(move |m| m.to[0] = other)),
        ("to (added)", Box::new(move |m| m.to.push(other))),
        ("timestamp", Box::new(|m| m.timestamp += 1)),
        ("kind", Box::new(|m| m.kind = Kind::File)),
        (
            "encrypted.algorithm",
            Box::new(|m| m.encrypted.algorithm = Algorithm::Aes256Gcm),
        ),
        (
            "encrypted.ephemeral",
            Box::new(move |m| m.encrypted.ephemeral = other),
        ),
        ("encrypted.nonce", Box::new(|m| m.encrypted.nonce[0] ^= 1)),
        (
            "encrypted.keys[].to",
            Box::new(move |m| m.encrypted.keys[0].to = other),
        ),
        (
            "encrypted.keys[].key",
            Box::new(|m| m.encrypted.keys[0].key[0] ^= 1),
        ),
        (
            "encrypted.keys (dropped)",
            Box::new(|m| {
                m.encrypted.keys.pop();
            }),
        ),
        (
            "encrypted.ciphertext",
            Box::new(|m| m.encrypted.ciphertext[0] ^= 1),
        ),
        (
            "encrypted.ciphertext (cut)",
            Box::new(|m| {
                m.encrypted.ciphertext.pop();
            }),
        ),
        ("relays", Box::new(|m| m.relays[0].push('x'))),
        ("relays (removed)", Box::new(|m| m.relays.clear())),
        (
            "expiry",
            Box::new(|m| m.expiry = Some(m.expiry.unwrap() + 1)),
        ),
        ("expiry (removed)", Box::new(|m| m.expiry = None)),
        ("priority", Box::new(|m| m.priority = Priority::Urgent)),
        ("signature", Box::new(|m| m.signature[10] ^= 1)),
    ];
    for (field, tamper) in &cases {
        assert_tamper_fails(field, tamper);
        if !["id", "signature"].contains(field) && !field.starts_with("v") {
            assert_tamper_fails_resigned_id(field, tamper);
        }
    }
}

#[test]
fn payment_proof_is_checked_against_its_invoice() {
    let preimage = [5u8; 32];
    let proof = PaymentProof {
        preimage,
        amount: 100,
        route: None,
    };
    let hash = proof.payment_hash();
    proof.check(&hash, 100).unwrap();
    let mut wrong_preimage = proof.clone();
    wrong_preimage.preimage[0] ^= 1;
    assert!(matches!(
        wrong_preimage.check(&hash, 100),
        Err(Error::Payment(_))
    ));
    let mut wrong_amount = proof.clone();
    wrong_amount.amount = 1000;
    assert!(matches!(
        wrong_amount.check(&hash, 100),
        Err(Error::Payment(_))
    ));
    // The proof is outside the signature by design: attaching one keeps the message valid.
    let (_, bob, mut m) = sealed();
    m.payment = Some(proof);
    m.verify().unwrap();
    m.open(&bob, &Limits::default()).unwrap();
}

#[test]
fn a_relay_cannot_move_a_ciphertext_into_another_envelope() {
    // Mallory takes Alice's ciphertext and key wraps and sends them to Bob as her own,
    // correctly signed: Bob's client must refuse to open it.
    let (_, bob, m) = sealed();
    let mallory = id(7);
    let mut forged = m.clone();
    forged.from = mallory.public_key();
    forged.encrypted.keys[1] = WrappedKey {
        to: mallory.public_key(),
        key: m.encrypted.keys[1].key,
    };
    // Mallory signs the forged envelope with her own key, so it verifies.
    forged.id = forged.compute_id();
    forged.signature = mallory.sign(&forged.id.0, &[0; 32]);
    forged.verify().unwrap();
    assert_eq!(
        forged.open(&bob, &Limits::default()),
        Err(Error::Decrypt("ciphertext or envelope"))
    );
    // Moving it in time is caught the same way.
    let (alice, bob2, m2) = sealed();
    let mut moved = m2.clone();
    moved.timestamp += 3600;
    moved.id = moved.compute_id();
    moved.signature = alice.sign(&moved.id.0, &[0; 32]);
    assert_eq!(
        moved.open(&bob2, &Limits::default()),
        Err(Error::Decrypt("ciphertext or envelope"))
    );
}

#[test]
fn expiry() {
    let (_, _, m) = sealed();
    assert!(!m.is_expired(m.timestamp));
    assert!(m.is_expired(m.expiry.unwrap()));
    let mut d = draft(vec![&id(2)]);
    d.expiry = Some(d.timestamp);
    assert!(matches!(
        Message::seal(&id(1), &d, &mut OsRng),
        Err(Error::Invalid {
            field: "expiry",
            ..
        })
    ));
}

#[test]
fn seal_refuses_bad_drafts() {
    let alice = id(1);
    let mut d = draft(vec![]);
    assert!(
        Message::seal(&alice, &d, &mut OsRng).is_err(),
        "no recipient"
    );
    d = draft(vec![&id(2), &id(2)]);
    assert!(
        Message::seal(&alice, &d, &mut OsRng).is_err(),
        "duplicate recipient"
    );
    d = draft(vec![&id(2)]);
    d.relays = vec!["https://not-a-relay".into()];
    assert!(
        Message::seal(&alice, &d, &mut OsRng).is_err(),
        "bad relay URL"
    );
    d = draft(vec![&id(2)]);
    d.content.body = "x".repeat(Limits::default().max_content_bytes + 1);
    assert!(matches!(
        Message::seal(&alice, &d, &mut OsRng),
        Err(Error::TooLarge { .. })
    ));
}

fn json_of(m: &Message) -> serde_json::Value {
    serde_json::from_str(&m.to_json()).unwrap()
}

fn parse(v: &serde_json::Value) -> Result<Message, Error> {
    Message::from_json(v.to_string().as_bytes(), &Limits::default())
}

#[test]
fn malformed_json_gets_a_typed_error() {
    let (_, _, m) = sealed();
    let good = json_of(&m);
    parse(&good).unwrap();

    let mut cases: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut set = |name: &'static str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        cases.push((name, v));
    };
    set("bad hex", &|v| v["from"] = "zz".repeat(32).into());
    set("uppercase hex", &|v| {
        v["from"] = v["from"].as_str().unwrap().to_uppercase().into()
    });
    set("short key", &|v| v["from"] = "ab".into());
    set("off-curve key", &|v| {
        v["from"] = format!("{:064x}", 5).into()
    });
    set("short signature", &|v| {
        v["signature"] = "00".repeat(63).into()
    });
    set("bad base64", &|v| {
        v["encrypted"]["ciphertext"] = "***".into()
    });
    set("short ciphertext", &|v| {
        v["encrypted"]["ciphertext"] = "AAAA".into()
    });
    set("unknown field", &|v| v["extra"] = 1.into());
    set("unknown nested field", &|v| {
        v["encrypted"]["extra"] = 1.into()
    });
    set("unknown kind", &|v| v["kind"] = 99.into());
    set("unknown algorithm", &|v| {
        v["encrypted"]["algorithm"] = "ROT13".into()
    });
    set("negative timestamp", &|v| v["timestamp"] = (-1).into());
    set("missing to", &|v| {
        v.as_object_mut().unwrap().remove("to");
    });
    set("empty to", &|v| v["to"] = serde_json::json!([]));
    set("string instead of list", &|v| v["to"] = "x".into());
    set("bad relay", &|v| {
        v["relays"] = serde_json::json!(["http://x"])
    });
    set("priority", &|v| v["priority"] = "whenever".into());
    set("null optional member", &|v| {
        v["expiry"] = serde_json::Value::Null
    });
    set("null payment", &|v| v["payment"] = serde_json::Value::Null);
    for (name, v) in &cases {
        assert!(parse(v).is_err(), "{name} accepted");
    }

    let mut v = good.clone();
    v["from"] = format!("{:064x}", 5).into();
    match parse(&v) {
        Err(Error::Malformed { path, reason, .. }) => {
            assert_eq!(path, "from");
            assert!(reason.contains("secp256k1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_versions_are_named() {
    let (_, _, m) = sealed();
    let mut v = json_of(&m);
    v["v"] = 2.into();
    assert_eq!(parse(&v), Err(Error::UnsupportedVersion(2)));
    v["v"] = 300.into();
    v["new_v2_field"] = true.into();
    assert_eq!(parse(&v), Err(Error::UnsupportedVersion(300)));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let (_, _, m) = sealed();
    let json = m.to_json();
    let tight = Limits {
        max_message_bytes: json.len() - 1,
        ..Limits::default()
    };
    assert!(matches!(
        Message::from_json(json.as_bytes(), &tight),
        Err(Error::TooLarge {
            field: "message",
            ..
        })
    ));
    let few = Limits {
        max_recipients: 0,
        ..Limits::default()
    };
    assert!(matches!(
        Message::from_json(json.as_bytes(), &few),
        Err(Error::TooLarge { field: "to", .. })
    ));
    for junk in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\"x\"",
        b"{\"v\":1}",
        &[0xff; 40],
    ] {
        assert!(Message::from_json(junk, &Limits::default()).is_err());
    }
}

#[test]
fn content_over_the_readers_limit_fails_cleanly() {
    let alice = id(1);
    let bob = id(2);
    let secrets = SealSecrets {
        content_key: Zeroizing::new([1; 32]),
        nonce: [2; 12],
        ephemeral: Zeroizing::new([3; 32]),
        aux: [4; 32],
        algorithm: Algorithm::ChaCha20Poly1305,
    };
    let m = Message::seal_with(&alice, &draft(vec![&bob]), &secrets).unwrap();
    assert!(
        m.open(
            &bob,
            &Limits {
                max_content_bytes: 10,
                ..Limits::default()
            }
        )
        .is_err()
    );
}
