//! The committed test vectors: byte for byte what the generator makes, and readable by
//! the library the way a second implementation would read them.

#[path = "../examples/vectors.rs"]
mod generator;

use lnmp_bridge::lnmp::{
    Address, ClientFrame, Identity, Limits, LookupDocument, Message, MessageContent, RelayFrame,
    Seed,
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
        let id = Identity::from_seed(&seed);
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
    let secret = |k: &str| -> [u8; 32] {
        hex::decode(v[k].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let bob = Identity::from_secret_bytes(&secret("recipient_secret_key")).unwrap();
    let alice = Identity::from_secret_bytes(&secret("sender_secret_key")).unwrap();
    let expected =
        MessageContent::from_json_bytes(v["content_json"].as_str().unwrap().as_bytes()).unwrap();
    for key in ["message", "message_with_payment"] {
        let m = Message::from_json(v[key].to_string().as_bytes(), &Limits::default()).unwrap();
        m.verify().unwrap();
        assert_eq!(m.id.to_hex(), v["id"].as_str().unwrap());
        assert_eq!(m.open(&bob, &Limits::default()).unwrap(), expected);
        assert_eq!(m.open(&alice, &Limits::default()).unwrap(), expected);
    }
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
    let blob = hex::decode(v["blob"].as_str().unwrap()).unwrap();
    assert_eq!(
        &a.open(&blob).unwrap()[..],
        hex::decode(v["plaintext"].as_str().unwrap()).unwrap()
    );
    assert_eq!(a.cid.to_string(), v["cid"].as_str().unwrap());
}
