//! Regenerates the protocol test vectors in fixtures/vectors/.
//!
//! Run `cargo run --example vectors` after a deliberate change to the wire format; the
//! test suite checks the committed files byte for byte against what this produces, and
//! separately checks that the library reads each vector back.

use base64::Engine as _;
use lnmp_bridge::lnmp::content::{BridgedEmail, Edit, Formatting, RawEmail, Reaction};
use lnmp_bridge::lnmp::frame::{ErrorCode, Reason, ReasonCode, Severity};
use lnmp_bridge::lnmp::lookup::{Prices, Surge};
use lnmp_bridge::lnmp::seal::{envelope_aad, pad, wrap_key};
use lnmp_bridge::lnmp::{
    Address, Algorithm, AuthProof, ClientFrame, Draft, FileAttachment, Filter, Identity, Kind,
    Limits, LookupDocument, Message, MessageContent, PaymentProof, Priority, RelayFrame,
    SealSecrets, Seed,
};
use serde_json::{Value, json};
use std::path::Path;
use zeroize::Zeroizing;

/// The seeds of the identity vectors; the first two are also Alice and Bob.
const SEEDS: [&str; 4] = [
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
];
const USERNAMES: [&str; 4] = ["alice", "bob", "carol.smith", "d_e-f"];
const RELAY_HOST: &str = "example.com";
const RELAY_URL: &str = "wss://example.com:7138";

fn seed(i: usize) -> Seed {
    Seed::from_bytes(hex::decode(SEEDS[i]).unwrap().try_into().unwrap())
}

fn identity_vectors() -> Value {
    let cases: Vec<Value> = (0..SEEDS.len())
        .map(|i| {
            let s = seed(i);
            let id = Identity::from_seed(&s);
            let address = Address::new(&id.public_key(), USERNAMES[i], Some(RELAY_HOST)).unwrap();
            json!({
                "seed": SEEDS[i],
                "mnemonic": s.to_mnemonic().as_str(),
                "bip39_seed": hex::encode(*s.bip39_seed()),
                "secret_key": hex::encode(*id.secret_bytes()),
                "public_key": id.public_key().to_hex(),
                "username": USERNAMES[i],
                "relay": RELAY_HOST,
                "address": address.to_string(),
            })
        })
        .collect();
    json!({
        "description": "seed -> BIP39 mnemonic -> BIP39 seed -> BIP32 m/138'/0'/0' -> x-only key -> address",
        "cases": cases,
    })
}

/// The fixed randomness of the message vector.
fn secrets() -> SealSecrets {
    SealSecrets {
        content_key: Zeroizing::new([0x11; 32]),
        nonce: [0x22; 12],
        ephemeral: Zeroizing::new([0x33; 32]),
        aux: [0x44; 32],
        algorithm: Algorithm::ChaCha20Poly1305,
    }
}

fn attachment() -> (FileAttachment, Vec<u8>) {
    let sealed = FileAttachment::seal_with(
        "hello.txt",
        "text/plain",
        b"Hello, LNMP!\n",
        &[0x55; 32],
        &[0x66; 12],
        Algorithm::ChaCha20Poly1305,
    );
    (sealed.attachment, sealed.bytes)
}

fn content() -> MessageContent {
    MessageContent {
        subject: Some("Lunch?".into()),
        body: "Are you free at *noon*?".into(),
        formatting: Formatting::Markdown,
        thread_id: Some("<thread-1@example.com>".into()),
        attachments: vec![attachment().0],
        email: Some(BridgedEmail {
            raw: RawEmail::Inline(b"Subject: Lunch?\r\n\r\nAre you free at *noon*?\r\n".to_vec()),
            authentication_results: Some("example.com; dkim=pass header.d=example.org".into()),
            mail_from: Some("carol@example.org".into()),
        }),
        ..MessageContent::default()
    }
}

fn sealed_message() -> Message {
    let alice = Identity::from_seed(&seed(0));
    let bob = Identity::from_seed(&seed(1));
    let draft = Draft {
        to: vec![bob.public_key()],
        kind: Kind::Text,
        timestamp: 1_767_225_600,
        content: content(),
        relays: vec![RELAY_URL.into()],
        expiry: Some(1_769_817_600),
        priority: Priority::Normal,
    };
    Message::seal_with(&alice, &draft, &secrets()).unwrap()
}

/// The values every sealed-message vector shows: the inputs (secrets, content JSON)
/// and every intermediate value down to the message itself.
fn sealing_values(m: &Message, s: &SealSecrets, content: &MessageContent) -> Value {
    let ephemeral = Identity::from_secret_bytes(&s.ephemeral).unwrap();
    let wraps: Vec<Value> = m
        .encrypted
        .keys
        .iter()
        .map(|k| {
            let shared = ephemeral.shared_x(&k.to);
            let (kek, info) = wrap_key(&shared, &ephemeral.public_key(), &k.to);
            json!({
                "to": k.to.to_hex(),
                "shared_x": hex::encode(*shared),
                "kek": hex::encode(*kek),
                "associated_data": hex::encode(info),
                "wrapped": hex::encode(k.key),
            })
        })
        .collect();
    let content_json = String::from_utf8(content.to_json_bytes()).unwrap();
    json!({
        "content_json": content_json,
        "padded_plaintext": hex::encode(&*pad(content_json.as_bytes())),
        "content_key": hex::encode(*s.content_key),
        "nonce": hex::encode(s.nonce),
        "ephemeral_secret_key": hex::encode(*s.ephemeral),
        "ephemeral_public_key": ephemeral.public_key().to_hex(),
        "aux_rand": hex::encode(s.aux),
        "envelope_aad": hex::encode(envelope_aad(&m.from, &m.to, m.timestamp, m.kind, m.encrypted.algorithm)),
        "key_wraps": wraps,
        "id": m.id.to_hex(),
        "signature": hex::encode(m.signature),
        "message": serde_json::from_str::<Value>(&m.to_json()).unwrap(),
    })
}

/// One of the further messages: who sends it to whom, what, and the fixed randomness.
struct MoreMessage {
    description: &'static str,
    sender: usize,
    recipients: Vec<usize>,
    draft: Draft,
    secrets: SealSecrets,
}

/// Fixed randomness whose bytes differ from every other vector's by `n`.
fn more_secrets(n: u8, algorithm: Algorithm) -> SealSecrets {
    SealSecrets {
        content_key: Zeroizing::new([0x11 + n; 32]),
        nonce: [0x22 + n; 12],
        ephemeral: Zeroizing::new([0x33 + n; 32]),
        aux: [0x44 + n; 32],
        algorithm,
    }
}

fn more_messages() -> Vec<MoreMessage> {
    let key = |i: usize| Identity::from_seed(&seed(i)).public_key();
    let main_id = sealed_message().id.to_hex();
    vec![
        MoreMessage {
            description: "Bob answers Alice with AES-256-GCM (content and key wraps), reacting to her message",
            sender: 1,
            recipients: vec![0],
            draft: Draft {
                to: vec![key(0)],
                kind: Kind::Text,
                timestamp: 1_767_225_660,
                content: MessageContent {
                    subject: Some("Re: Lunch?".into()),
                    body: "Yes, noon works.".into(),
                    thread_id: Some("<thread-1@example.com>".into()),
                    reply_to: Some(main_id.clone()),
                    reactions: vec![
                        Reaction {
                            target: main_id,
                            emoji: "\u{1f44d}".into(),
                            remove: false,
                        },
                        Reaction {
                            target: "<lunch-1@example.org>".into(),
                            emoji: "\u{1f35c}".into(),
                            remove: true,
                        },
                    ],
                    ..MessageContent::default()
                },
                relays: vec![RELAY_URL.into()],
                expiry: None,
                priority: Priority::High,
            },
            secrets: more_secrets(1, Algorithm::Aes256Gcm),
        },
        MoreMessage {
            description: "Alice writes to Bob, herself and Carol: the sender is among the recipients, so keys has exactly the three entries of to",
            sender: 0,
            recipients: vec![1, 0, 2],
            draft: Draft {
                to: vec![key(1), key(0), key(2)],
                kind: Kind::Text,
                timestamp: 1_767_225_720,
                content: MessageContent {
                    subject: Some("Friday".into()),
                    body: "Dinner on Friday at 8?".into(),
                    body_html: Some("<p>Dinner on Friday at <b>8</b>?</p>".into()),
                    mentions: vec![key(2)],
                    edit_history: vec![
                        Edit {
                            timestamp: 1_767_225_700,
                            subject: Some("Thursday".into()),
                            body: "Dinner on Thursday at 7?".into(),
                        },
                        Edit {
                            timestamp: 1_767_225_710,
                            subject: None,
                            body: "Dinner on Friday at 7?".into(),
                        },
                    ],
                    delete_after: Some(1_767_830_400),
                    read_receipts: true,
                    ..MessageContent::default()
                },
                relays: vec![RELAY_URL.into(), "wss://relay.example.org/lnmp".into()],
                expiry: Some(1_767_312_000),
                priority: Priority::Urgent,
            },
            secrets: more_secrets(2, Algorithm::ChaCha20Poly1305),
        },
        MoreMessage {
            description: "a minimal message: kind REACTION, content {\"body\":\"hi\"}, no relays, no expiry, priority low",
            sender: 2,
            recipients: vec![3],
            draft: Draft {
                to: vec![key(3)],
                kind: Kind::Reaction,
                timestamp: 1_767_225_780,
                content: MessageContent {
                    body: "hi".into(),
                    ..MessageContent::default()
                },
                relays: vec![],
                expiry: None,
                priority: Priority::Low,
            },
            secrets: more_secrets(3, Algorithm::ChaCha20Poly1305),
        },
    ]
}

fn message_vectors() -> Value {
    let alice = Identity::from_seed(&seed(0));
    let bob = Identity::from_seed(&seed(1));
    let m = sealed_message();
    let mut paid = m.clone();
    paid.payment = Some(PaymentProof {
        preimage: [0x77; 32],
        amount: 100,
        route: None,
    });
    let mut v = sealing_values(&m, &secrets(), &content());
    let main = v.as_object_mut().unwrap();
    main.insert(
        "description".into(),
        "Alice seals a message to Bob with fixed randomness; every intermediate value".into(),
    );
    main.insert(
        "sender_secret_key".into(),
        hex::encode(*alice.secret_bytes()).into(),
    );
    main.insert(
        "recipient_secret_key".into(),
        hex::encode(*bob.secret_bytes()).into(),
    );
    main.insert(
        "message_with_payment".into(),
        serde_json::from_str::<Value>(&paid.to_json()).unwrap(),
    );
    main.insert(
        "payment_hash".into(),
        hex::encode(paid.payment.as_ref().unwrap().payment_hash()).into(),
    );
    let more: Vec<Value> = more_messages()
        .iter()
        .map(|c| {
            let sender = Identity::from_seed(&seed(c.sender));
            let m = Message::seal_with(&sender, &c.draft, &c.secrets).unwrap();
            let mut v = sealing_values(&m, &c.secrets, &c.draft.content);
            let o = v.as_object_mut().unwrap();
            o.insert("description".into(), c.description.into());
            o.insert(
                "sender_secret_key".into(),
                hex::encode(*sender.secret_bytes()).into(),
            );
            let recipients: Vec<String> = c
                .recipients
                .iter()
                .map(|&i| hex::encode(*Identity::from_seed(&seed(i)).secret_bytes()))
                .collect();
            o.insert("recipient_secret_keys".into(), recipients.into());
            v
        })
        .collect();
    main.insert("more_messages".into(), more.into());
    v
}

fn blob_vectors() -> Value {
    let (a, bytes) = attachment();
    json!({
        "description": "an attachment sealed with a fixed key and nonce",
        "plaintext": hex::encode(b"Hello, LNMP!\n"),
        "key": hex::encode(a.key),
        "nonce": hex::encode([0x66u8; 12]),
        "blob": base64::engine::general_purpose::STANDARD.encode(&bytes),
        "cid": a.cid.to_string(),
        "attachment": serde_json::to_value(&a).unwrap(),
    })
}

fn lookup_vectors() -> Value {
    let alice = Identity::from_seed(&seed(0));
    let doc = LookupDocument {
        v: 1,
        name: "alice".into(),
        pubkey: alice.public_key(),
        relays: vec![RELAY_URL.into()],
        prices: Prices {
            stranger: 100,
            acquaintance: 10,
            friend: 0,
            priority: 1000,
            surge: Some(Surge {
                multiplier: 2,
                threshold: 100,
            }),
        },
    };
    let address = Address::new(&alice.public_key(), "alice", Some(RELAY_HOST)).unwrap();
    json!({
        "description": "GET https://example.com/.well-known/lnmp.json?name=alice",
        "address": address.to_string(),
        "document": serde_json::from_str::<Value>(&doc.to_json()).unwrap(),
    })
}

fn frame_vectors() -> Value {
    let alice = Identity::from_seed(&seed(0));
    let bob = Identity::from_seed(&seed(1));
    let m = sealed_message();
    let challenge = "c0ffee".repeat(8);
    let auth_aux = [0x88; 32];
    let client = [
        ClientFrame::Auth(AuthProof::sign(
            &alice,
            RELAY_URL,
            &challenge,
            1_767_225_600,
            &auth_aux,
        )),
        ClientFrame::Sub {
            sub: "inbox".into(),
            filters: vec![Filter {
                to: Some(vec![bob.public_key()]),
                kinds: Some(vec![Kind::Text, Kind::File]),
                since: Some(1_767_000_000),
                limit: Some(500),
                ..Filter::default()
            }],
        },
        ClientFrame::Unsub {
            sub: "inbox".into(),
        },
        ClientFrame::Publish {
            message: Box::new(m.clone()),
        },
        ClientFrame::Query {
            sub: "q1".into(),
            filters: vec![Filter {
                ids: Some(vec![m.id]),
                ..Filter::default()
            }],
        },
    ];
    let relay = [
        RelayFrame::Auth {
            challenge: challenge.clone(),
        },
        RelayFrame::Msg {
            sub: "inbox".into(),
            message: Box::new(m.clone()),
        },
        RelayFrame::Eose {
            sub: "inbox".into(),
        },
        RelayFrame::Ok {
            id: m.id.to_hex(),
            accepted: true,
            reason: None,
        },
        RelayFrame::Ok {
            id: m.id.to_hex(),
            accepted: false,
            reason: Some(Reason::new(
                ReasonCode::PaymentRequired,
                "bob charges strangers 100 sats",
            )),
        },
        RelayFrame::Notice {
            severity: Severity::Warning,
            message: "retention is 30 days".into(),
        },
        RelayFrame::Error {
            code: ErrorCode::AuthRequired,
            message: "SUB needs AUTH first".into(),
            sub: Some("inbox".into()),
        },
        RelayFrame::Invoice {
            id: m.id,
            amount: 100,
            description: "LNMP message to bob".into(),
            bolt11: "lnbcrt1u1p...".into(),
            expires_at: Some(1_767_229_200),
        },
    ];
    let invalid = [
        r#"{"type":"SUB","sub":"s","filters":[]}"#,
        r#"{"type":"SUB","sub":"","filters":[{}]}"#,
        r#"{"type":"SUB","sub":"s","filters":[{"kinds":[0]}]}"#,
        r#"{"type":"SUB","sub":"s","filters":[{"since":2,"until":1}]}"#,
        r#"{"type":"UNSUB","sub":"s","extra":true}"#,
        r#"{"type":"HELLO"}"#,
        r#"["PUBLISH",{}]"#,
    ];
    let invalid: Vec<Value> = invalid
        .iter()
        .map(|f| {
            let err = ClientFrame::from_json(f.as_bytes(), &Limits::default()).unwrap_err();
            json!({ "frame": f, "error": err.to_string() })
        })
        .collect();
    json!({
        "description": "one of every frame, as a client and a relay write them",
        "client": client.iter().map(ClientFrame::to_json).collect::<Vec<_>>(),
        "relay": relay.iter().map(RelayFrame::to_json).collect::<Vec<_>>(),
        "invalid_client": invalid,
        "auth_secret_key": hex::encode(*alice.secret_bytes()),
        "auth_aux_rand": hex::encode(auth_aux),
    })
}

/// Every vector file: name and pretty JSON with a final newline.
pub fn all() -> Vec<(&'static str, String)> {
    [
        ("identity.json", identity_vectors()),
        ("message.json", message_vectors()),
        ("blob.json", blob_vectors()),
        ("lookup.json", lookup_vectors()),
        ("frames.json", frame_vectors()),
    ]
    .into_iter()
    .map(|(name, v)| (name, serde_json::to_string_pretty(&v).unwrap() + "\n"))
    .collect()
}

#[allow(dead_code)]
fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vectors");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in all() {
        std::fs::write(dir.join(name), text).unwrap();
        println!("wrote fixtures/vectors/{name}");
    }
}
