//! The committed test vectors: byte for byte what the generator makes, and readable by
//! the library the way a second implementation would read them.

#[path = "../examples/vectors.rs"]
mod generator;

use base64::Engine as _;
use lnmp_bridge::lnmp::{
    Address, AuthProof, ClientFrame, Identity, Limits, LookupDocument, Message, MessageContent,
    RelayFrame, Seed,
};
use serde_json::Value;
use std::path::Path;

fn file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/vectors")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&file(name)).unwrap()
}

fn hex32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn parse_message(v: &Value) -> Message {
    Message::from_json(v.to_string().as_bytes(), &Limits::default()).unwrap()
}

#[test]
fn committed_vectors_match_the_generator_byte_for_byte() {
    for (name, text) in generator::all() {
        assert!(
            file(name) == text,
            "fixtures/vectors/{name} differs from what the code produces; if the wire \
             format changed on purpose, run `cargo run --example vectors` and update docs/PROTOCOL.md"
        );
    }
}

#[test]
fn identity_vectors_read_back() {
    for case in json("identity.json")["cases"].as_array().unwrap() {
        let seed = Seed::from_mnemonic(case["mnemonic"].as_str().unwrap()).unwrap();
        assert_eq!(hex::encode(seed.as_bytes()), case["seed"].as_str().unwrap());
        assert_eq!(
            hex::encode(*seed.bip39_seed()),
            case["bip39_seed"].as_str().unwrap()
        );
        let id = Identity::from_seed(&seed);
        assert_eq!(
            hex::encode(*id.secret_bytes()),
            case["secret_key"].as_str().unwrap()
        );
        assert_eq!(
            id.public_key().to_hex(),
            case["public_key"].as_str().unwrap()
        );
        let address: Address = case["address"].as_str().unwrap().parse().unwrap();
        address.verify(&id.public_key()).unwrap();
        assert_eq!(address.username(), case["username"].as_str().unwrap());
    }
}

#[test]
fn message_vector_verifies_and_opens() {
    let v = json("message.json");
    let bob = Identity::from_secret_bytes(&hex32(&v["recipient_secret_key"])).unwrap();
    let alice = Identity::from_secret_bytes(&hex32(&v["sender_secret_key"])).unwrap();
    let expected =
        MessageContent::from_json_bytes(v["content_json"].as_str().unwrap().as_bytes()).unwrap();
    for key in ["message", "message_with_payment"] {
        let m = parse_message(&v[key]);
        m.verify().unwrap();
        assert_eq!(m.id.to_hex(), v["id"].as_str().unwrap());
        assert_eq!(m.open(&bob, &Limits::default()).unwrap(), expected);
        assert_eq!(m.open(&alice, &Limits::default()).unwrap(), expected);
    }
}

#[test]
fn more_message_vectors_verify_and_open_for_every_key_holder() {
    let more = json("message.json")["more_messages"].clone();
    let more = more.as_array().unwrap();
    assert_eq!(more.len(), 3);
    for v in more {
        let m = parse_message(&v["message"]);
        m.verify().unwrap();
        assert_eq!(m.id.to_hex(), v["id"].as_str().unwrap());
        assert_eq!(hex::encode(m.signature), v["signature"].as_str().unwrap());
        let expected =
            MessageContent::from_json_bytes(v["content_json"].as_str().unwrap().as_bytes())
                .unwrap();
        let sender = Identity::from_secret_bytes(&hex32(&v["sender_secret_key"])).unwrap();
        assert_eq!(sender.public_key(), m.from);
        let mut openers = vec![sender];
        for k in v["recipient_secret_keys"].as_array().unwrap() {
            openers.push(Identity::from_secret_bytes(&hex32(k)).unwrap());
        }
        let recipients: Vec<_> = openers[1..].iter().map(Identity::public_key).collect();
        assert_eq!(recipients, m.to);
        // Every entry of keys is a key holder whose secret is in the vector, and each opens.
        assert_eq!(
            m.encrypted.keys.len(),
            v["key_wraps"].as_array().unwrap().len()
        );
        for k in &m.encrypted.keys {
            let holder = openers.iter().find(|o| o.public_key() == k.to).unwrap();
            assert_eq!(m.open(holder, &Limits::default()).unwrap(), expected);
        }
        for o in &openers {
            assert_eq!(m.open(o, &Limits::default()).unwrap(), expected);
        }
    }
    // (a) AES-256-GCM; (b) the sender among three recipients, so no extra key entry;
    // (c) no relays, no expiry, priority low, a kind other than TEXT.
    let a = parse_message(&more[0]["message"]);
    assert_eq!(
        a.encrypted.algorithm,
        lnmp_bridge::lnmp::Algorithm::Aes256Gcm
    );
    let b = parse_message(&more[1]["message"]);
    assert_eq!((b.to.len(), b.encrypted.keys.len()), (3, 3));
    assert!(b.to.contains(&b.from));
    let c = parse_message(&more[2]["message"]);
    assert!(c.relays.is_empty() && c.expiry.is_none());
    assert_eq!(c.priority, lnmp_bridge::lnmp::Priority::Low);
    assert_ne!(c.kind, lnmp_bridge::lnmp::Kind::Text);
    assert_eq!(more[2]["content_json"], "{\"body\":\"hi\"}");
}

#[test]
fn absent_priority_and_relays_are_their_defaults() {
    let v = json("message.json");
    // The main message has priority "normal": leaving it out is the same message.
    let mut m = v["message"].clone();
    assert_eq!(m["priority"], "normal");
    m.as_object_mut().unwrap().remove("priority");
    let parsed = parse_message(&m);
    parsed.verify().unwrap();
    assert_eq!(parsed.to_json(), parse_message(&v["message"]).to_json());
    // The minimal message has no relays: an empty array is the same message, and the
    // serializer leaves it out again.
    let mut m = v["more_messages"][2]["message"].clone();
    assert!(m.get("relays").is_none());
    m["relays"] = Value::Array(vec![]);
    let parsed = parse_message(&m);
    parsed.verify().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&parsed.to_json()).unwrap(),
        v["more_messages"][2]["message"]
    );
}

#[test]
fn frame_vectors_parse() {
    let v = json("frames.json");
    let l = Limits::default();
    for f in v["client"].as_array().unwrap() {
        let text = f.as_str().unwrap();
        assert_eq!(
            ClientFrame::from_json(text.as_bytes(), &l)
                .unwrap()
                .to_json(),
            text
        );
    }
    for f in v["relay"].as_array().unwrap() {
        let text = f.as_str().unwrap();
        assert_eq!(
            RelayFrame::from_json(text.as_bytes(), &l)
                .unwrap()
                .to_json(),
            text
        );
    }
    // The AUTH answer is reproducible from the signer's secret key and aux_rand.
    let ClientFrame::Auth(auth) =
        ClientFrame::from_json(v["client"][0].as_str().unwrap().as_bytes(), &l).unwrap()
    else {
        panic!("the first client frame is AUTH");
    };
    let signer = Identity::from_secret_bytes(&hex32(&v["auth_secret_key"])).unwrap();
    let again = AuthProof::sign(
        &signer,
        &auth.relay,
        &auth.challenge,
        auth.timestamp,
        &hex32(&v["auth_aux_rand"]),
    );
    assert_eq!(again, auth);
    auth.verify(&auth.relay, &auth.challenge, auth.timestamp, 0)
        .unwrap();
    for case in v["invalid_client"].as_array().unwrap() {
        let err =
            ClientFrame::from_json(case["frame"].as_str().unwrap().as_bytes(), &l).unwrap_err();
        assert_eq!(err.to_string(), case["error"].as_str().unwrap());
    }
}

#[test]
fn lookup_vector_verifies_against_the_address() {
    let v = json("lookup.json");
    let doc = LookupDocument::from_json(v["document"].to_string().as_bytes(), &Limits::default())
        .unwrap();
    let address: Address = v["address"].as_str().unwrap().parse().unwrap();
    doc.verify(&address).unwrap();
    let mut other = address.to_string();
    other.replace_range(6..7, if &other[6..7] == "A" { "B" } else { "A" });
    assert!(doc.verify(&other.parse().unwrap()).is_err());
}

#[test]
fn blob_vector_opens() {
    let v = json("blob.json");
    let a: lnmp_bridge::lnmp::FileAttachment =
        serde_json::from_value(v["attachment"].clone()).unwrap();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(v["blob"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        &a.open(&blob).unwrap()[..],
        hex::decode(v["plaintext"].as_str().unwrap()).unwrap()
    );
    assert_eq!(a.cid.to_string(), v["cid"].as_str().unwrap());
}
