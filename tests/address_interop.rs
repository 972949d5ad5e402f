//! LNMP addresses are email addresses: real mail libraries must parse them unchanged,
//! so a mail client can type one as a recipient.

use lnmp_bridge::lnmp::{Address, Identity};

fn addresses() -> Vec<Address> {
    (1u8..=20)
        .map(|n| {
            let key = Identity::from_secret_bytes(&[n; 32]).unwrap().public_key();
            let name = ["alice", "bob.smith", "c_d-e", "x1", "long.name.with.dots"][n as usize % 5];
            Address::new(&key, name, Some("relay.example.com")).unwrap()
        })
        .collect()
}

#[test]
fn lettre_accepts_lnmp_addresses() {
    for a in addresses() {
        let s = a.to_string();
        let parsed: lettre::Address = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(parsed.user(), a.local_part());
        assert_eq!(parsed.domain(), "relay.example.com");
        let mailbox: lettre::message::Mailbox = format!("Alice <{s}>").parse().unwrap();
        assert_eq!(mailbox.email.to_string(), s);
        // And lettre builds a message to it.
        let msg = lettre::Message::builder()
            .from("x@example.org".parse().unwrap())
            .to(mailbox)
            .subject("hi")
            .body(String::from("hello"))
            .unwrap();
        assert!(String::from_utf8(msg.formatted()).unwrap().contains(&s));
    }
}

#[test]
fn mail_parser_reads_lnmp_addresses_back() {
    for a in addresses() {
        let s = a.to_string();
        let raw =
            format!("From: Bob <{s}>\r\nTo: {s}, \"Carol\" <{s}>\r\nSubject: t\r\n\r\nbody\r\n");
        let msg = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        let from = msg.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some(s.as_str()));
        assert_eq!(from.name(), Some("Bob"));
        let to: Vec<&str> = msg
            .to()
            .unwrap()
            .iter()
            .filter_map(|a| a.address())
            .collect();
        assert_eq!(to, [s.as_str(), s.as_str()]);
        let back: Address = from.address().unwrap().parse().unwrap();
        assert_eq!(back, a);
    }
}
