//! The paywall end to end, in process: the whole daemon with its embedded dev wallet,
//! strangers writing over SMTP and publishing over LNMP, payments made the way
//! `lnmp-bridge dev pay` makes them (the dev wallet in the same database), and what
//! the user ends up with read from the mail store.

mod common;

use common::raw_smtp::{Raw, raw};
use common::{DOMAIN, HOST};
use lnmp_bridge::config::{Config, PaywallMode};
use lnmp_bridge::daemon::Running;
use lnmp_bridge::lightning::dev::{DevWallet, Presented};
use lnmp_bridge::lightning::{Description, decode};
use lnmp_bridge::lnmp::{
    Draft, Identity, Kind, Limits, Message, MessageContent, PaymentProof, Priority, RelayFrame,
};
use lnmp_bridge::relay::client::{ClientOptions, Connection, PublishOutcome};
use lnmp_bridge::relay::tls::{Trust, client_config};
use lnmp_bridge::smtp::Listener;
use lnmp_bridge::store::{self, Store, held::HeldState, ledger};
use lnmp_bridge::testing::dns::{self, DnsServer, Zone};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::net::TcpStream;

const ZONE: &str = "
remote.test TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.remote.test TXT \"v=DMARC1; p=none\"
strict.test TXT \"v=spf1 ip4:192.0.2.1 -all\"
";

struct Bridge {
    running: Running,
    _dns: DnsServer,
    _dir: tempfile::TempDir,
}

impl Bridge {
    fn store(&self) -> &Store {
        self.running.custody.store()
    }

    async fn mx(&self) -> Raw<TcpStream> {
        raw(common::smtp_port(&self.running, Listener::Mx)).await
    }

    async fn wallet(&self) -> DevWallet {
        DevWallet::open(self.store().clone(), self.running.custody.master_key())
            .await
            .unwrap()
    }

    /// A paywall on the daemon's store and dev wallet, as the `wallet` commands open one.
    async fn paywall(&self) -> lnmp_bridge::paywall::Paywall {
        let backend = lnmp_bridge::lightning::open(
            &Config::default(),
            self.store().clone(),
            self.running.custody.master_key(),
        )
        .await
        .unwrap();
        let mut config = Config::default();
        config.server.hostname = HOST.into();
        lnmp_bridge::paywall::Paywall::new(
            self.running.custody.clone(),
            backend,
            lnmp_bridge::paywall::PaywallSettings::from_config(&config),
        )
    }

    async fn user_id(&self, name: &str) -> i64 {
        self.running.custody.user(name).await.unwrap().id
    }

    /// The message ids filed in a user's mailbox.
    async fn mailbox(&self, user: &str, mailbox: &str) -> Vec<store::mail::MailRow> {
        store::mail::list(self.store(), self.user_id(user).await, mailbox)
            .await
            .unwrap()
    }
}

async fn bridge(tune: impl FnOnce(&mut Config)) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    let dns = dns::serve(Zone::parse(ZONE).unwrap(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = common::loopback_config(dir.path());
    config.pricing.stranger = 100;
    config.relay.tls = false;
    config.smtp.submissions_listen = String::new();
    config.imap.listen = String::new();
    config.imap.tls_listen = String::new();
    config.dns.nameservers = vec![dns.addr().to_string()];
    config.dns.timeout_seconds = 2;
    config.lightning.poll_seconds = 1;
    tune(&mut config);
    let running = common::start_with_users(&config).await;
    Bridge {
        running,
        _dns: dns,
        _dir: dir,
    }
}

/// One SMTP transaction on the MX; the reply to the end of DATA.
async fn send(b: &Bridge, from: &str, to: &str, raw_mail: &str) -> (u16, String) {
    let mut s = b.mx().await;
    assert_eq!(s.cmd("EHLO mail.remote.test").await.0, 250);
    assert_eq!(s.cmd(&format!("MAIL FROM:<{from}>")).await.0, 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<{to}>")).await.0, 250);
    assert_eq!(s.cmd("DATA").await.0, 354);
    s.send(raw_mail.as_bytes()).await;
    s.cmd(".").await
}

fn mail_from(from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: alice@{DOMAIN}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@remote.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
}

/// The pay link's token in an SMTP reply.
fn token_in(reply: &str) -> String {
    let at = reply.find("/pay/").expect("a pay link in the reply");
    reply[at + 5..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

async fn bolt11_of(b: &Bridge, token: &str) -> String {
    let held = store::held::by_token(b.store(), token)
        .await
        .unwrap()
        .expect("a held message for the token");
    store::invoices::latest_for_held(b.store(), held.id)
        .await
        .unwrap()
        .unwrap()
        .bolt11
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_stranger_pays_and_a_retry_is_not_delivered_twice() {
    let b = bridge(|_| {}).await;
    let alice = format!("alice@{DOMAIN}");
    let raw_mail = mail_from("dan@remote.test", "hello", "Can we talk about the offer?");
    let (code, reply) = send(&b, "dan@remote.test", &alice, &raw_mail).await;
    assert_eq!(code, 450, "{reply}");
    assert!(reply.contains("4.7.0"), "{reply}");
    assert!(reply.contains("100 sats"), "{reply}");
    assert!(reply.lines().all(|l| l.len() + 2 <= 512), "{reply}");
    let token = token_in(&reply);
    assert!(reply.contains(&format!("https://{HOST}:")), "{reply}");
    assert_eq!(b.mailbox("alice", "Requests").await.len(), 1);
    assert!(b.mailbox("alice", "INBOX").await.is_empty());

    // The sender's server retries before anything is paid: the same answer, one copy.
    let (code, again) = send(&b, "dan@remote.test", &alice, &raw_mail).await;
    assert_eq!(code, 450);
    assert_eq!(token_in(&again), token, "one held copy, one pay link");
    assert_eq!(b.mailbox("alice", "Requests").await.len(), 1);

    let bolt11 = bolt11_of(&b, &token).await;
    let decoded = decode(&bolt11).unwrap();
    assert_eq!(decoded.amount_msat, Some(100_000));
    assert!(bolt11.starts_with("lnbcrt"), "a regtest invoice: {bolt11}");
    let Presented::Settled { preimage, .. } = b.wallet().await.present(&bolt11).await.unwrap()
    else {
        panic!("an ordinary invoice settles at once");
    };
    wait_until("the paid message in INBOX", || async {
        b.mailbox("alice", "INBOX").await.len() == 1
    })
    .await;
    assert!(b.mailbox("alice", "Requests").await.is_empty());
    let row = &b.mailbox("alice", "INBOX").await[0];
    assert!(row.flags.contains("$Paid"), "{}", row.flags);
    // It carries its payment proof, which the IMAP view shows as X-LNMP-Payment.
    let uid = b.user_id("alice").await;
    let body = store::inbox::list(b.store(), uid, 0).await.unwrap();
    let m = Message::from_json(body[0].as_bytes(), &Limits::default()).unwrap();
    let proof = m.payment.expect("a payment proof");
    assert_eq!((proof.preimage, proof.amount), (preimage, 100));
    // The user earned it; the sender is an acquaintance now.
    assert_eq!(
        ledger::balance(b.store(), ledger::Account::User(uid))
            .await
            .unwrap(),
        100_000
    );
    assert_eq!(ledger::total(b.store()).await.unwrap(), 0);
    let alice_info = b.running.custody.user("alice").await.unwrap();
    let contacts = b.running.custody.contacts(&alice_info).await.unwrap();
    assert!(contacts.iter().any(|c| c.address == "dan@remote.test"));

    // The retry after payment is answered 250 and dropped: still one copy.
    let (code, reply) = send(&b, "dan@remote.test", &alice, &raw_mail).await;
    assert_eq!(code, 250, "{reply}");
    assert_eq!(b.mailbox("alice", "INBOX").await.len(), 1);
    // Paying twice is refused by the wallet; nothing changes.
    assert!(b.wallet().await.present(&bolt11).await.is_err());
    let held = store::held::by_token(b.store(), &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.state, HeldState::Paid);
    // Dan is a contact now: his next message is free.
    let next = mail_from("dan@remote.test", "again", "One more thing.");
    assert_eq!(send(&b, "dan@remote.test", &alice, &next).await.0, 250);
    assert_eq!(b.mailbox("alice", "INBOX").await.len(), 2);
    // The same words from a stranger under another Message-ID are another message.
    let erin = mail_from("erin@remote.test", "thanks", "Thanks!");
    let (code, first) = send(&b, "erin@remote.test", &alice, &erin).await;
    assert_eq!(code, 450, "{first}");
    let erin2 = erin.replace("<thanks@remote.test>", "<thanks-2@remote.test>");
    let (code, second) = send(&b, "erin@remote.test", &alice, &erin2).await;
    assert_eq!(code, 450, "{second}");
    assert_ne!(
        token_in(&first),
        token_in(&second),
        "a new message gets a pay link of its own"
    );

    // A contact's address is worth nothing to whom the checks do not vouch for.
    b.running
        .custody
        .add_contact(
            &alice_info,
            "boss@strict.test",
            store::contacts::Level::Friend,
        )
        .await
        .unwrap();
    let forged = mail_from("boss@strict.test", "urgent", "Wire the money today.");
    let (code, reply) = send(&b, "boss@strict.test", &alice, &forged).await;
    assert_eq!(code, 450, "SPF fails for the envelope sender: {reply}");
    let (code, reply) = send(&b, "", &alice, &forged).await;
    assert_eq!(code, 450, "the null sender with a forged From: {reply}");
    // A sender's own claim to have paid never shows.
    let claim = mail_from("dan@remote.test", "claim", "Paid, see?")
        .replace("Subject:", "X-LNMP-Payment: 99999 sat\r\nSubject:");
    assert_eq!(send(&b, "dan@remote.test", &alice, &claim).await.0, 250);
    let uid = b.user_id("alice").await;
    let rows = b.mailbox("alice", "INBOX").await;
    let last = rows.last().unwrap();
    let body = store::mail::body(b.store(), uid, &last.message_id)
        .await
        .unwrap()
        .unwrap();
    let store::mail::Body::Lnmp(json) = body else {
        panic!("bridged mail is an LNMP message");
    };
    let m = Message::from_json(json.as_bytes(), &Limits::default()).unwrap();
    assert!(m.payment.is_none());
    let identity = b.running.custody.identity("alice").await.unwrap();
    let content = m.open(&identity, &Limits::default()).unwrap();
    let Some(lnmp_bridge::lnmp::content::RawEmail::Inline(kept)) = content.email.map(|e| e.raw)
    else {
        panic!("a small bridged email keeps its bytes inline");
    };
    let kept = String::from_utf8(kept).unwrap();
    assert!(!kept.contains("X-LNMP-Payment"), "{kept}");
    assert!(kept.contains("Paid, see?"));
}

#[tokio::test]
async fn held_mail_expires_and_moving_it_to_inbox_lets_it_in() {
    let b = bridge(|c| c.paywall.mode = PaywallMode::Reject).await;
    let alice = format!("alice@{DOMAIN}");
    let (code, first) = send(
        &b,
        "eve@remote.test",
        &alice,
        &mail_from("eve@remote.test", "first", "Buy now."),
    )
    .await;
    assert_eq!(code, 550, "{first}");
    assert!(first.contains("5.7.0"), "{first}");
    let (_, second) = send(
        &b,
        "frank@remote.test",
        &alice,
        &mail_from("frank@remote.test", "second", "It's Frank, from the club."),
    )
    .await;
    let (expiring, accepted) = (token_in(&first), token_in(&second));
    assert_eq!(b.mailbox("alice", "Requests").await.len(), 2);

    // Time passes for the first: its hold window ends unpaid.
    sqlx::query("UPDATE held_messages SET expires_at = 0 WHERE token = $1")
        .bind(&expiring)
        .execute(b.store().pool())
        .await
        .unwrap();
    wait_until("the expired message gone", || async {
        b.mailbox("alice", "Requests").await.len() == 1
    })
    .await;
    let gone = store::held::by_token(b.store(), &expiring)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.state, HeldState::Expired);
    assert!(
        store::inbox::any_body(b.store(), &gone.message_id)
            .await
            .unwrap()
            .is_none(),
        "the sealed body is deleted too"
    );
    // Its invoice can no longer be paid for it.
    let stale = bolt11_of(&b, &expiring).await;
    let _ = b.wallet().await.present(&stale).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.mailbox("alice", "INBOX").await.is_empty());

    // Alice moves Frank's message to INBOX (what IMAP MOVE does): let in for free.
    let uid = b.user_id("alice").await;
    let requests = store::mailboxes::get(b.store(), uid, "Requests")
        .await
        .unwrap()
        .unwrap()
        .id;
    let inbox = store::mailboxes::get(b.store(), uid, "INBOX")
        .await
        .unwrap()
        .unwrap()
        .id;
    let uids: Vec<i64> = b
        .mailbox("alice", "Requests")
        .await
        .iter()
        .map(|r| r.uid)
        .collect();
    b.store()
        .write(Box::new(move |c| {
            Box::pin(async move {
                store::mail::copy_in(c, requests, &uids, inbox).await?;
                store::mail::expunge_in(c, uid, requests, &uids, false).await?;
                Ok(())
            })
        }))
        .await
        .unwrap();
    let h = store::held::by_token(b.store(), &accepted)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.state, HeldState::Accepted);
    let alice_info = b.running.custody.user("alice").await.unwrap();
    let contacts = b.running.custody.contacts(&alice_info).await.unwrap();
    assert!(contacts.iter().any(|c| c.address == "frank@remote.test"));
    assert!(!contacts.iter().any(|c| c.address == "eve@remote.test"));
    // Deleting a held message refuses it: its sender's retry is refused for good.
    let (_, third) = send(
        &b,
        "gina@remote.test",
        &alice,
        &mail_from("gina@remote.test", "third", "Hi."),
    )
    .await;
    let refused = token_in(&third);
    let uids: Vec<i64> = b
        .mailbox("alice", "Requests")
        .await
        .iter()
        .map(|r| r.uid)
        .collect();
    b.store()
        .write(Box::new(move |c| {
            Box::pin(async move {
                store::mail::expunge_in(c, uid, requests, &uids, false).await?;
                Ok(())
            })
        }))
        .await
        .unwrap();
    let h = store::held::by_token(b.store(), &refused)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.state, HeldState::Refused);
    let (code, reply) = send(
        &b,
        "gina@remote.test",
        &alice,
        &mail_from("gina@remote.test", "third", "Hi."),
    )
    .await;
    assert_eq!(code, 550, "{reply}");
    assert!(reply.contains("declined"), "{reply}");
}

fn message_to(from: &Identity, to: &Identity, body: &str) -> Message {
    let d = Draft {
        to: vec![to.public_key()],
        kind: Kind::Text,
        timestamp: store::unix_now(),
        content: MessageContent {
            body: body.into(),
            ..MessageContent::default()
        },
        relays: vec![],
        expiry: None,
        priority: Priority::Normal,
    };
    Message::seal(from, &d, &mut rand_core::OsRng).unwrap()
}

#[tokio::test]
async fn the_relay_invoices_strangers_and_takes_each_proof_once() {
    let b = bridge(|_| {}).await;
    let url = format!("ws://{}", b.running.relay.unwrap());
    let opts = ClientOptions {
        tls: client_config(Trust::Insecure).unwrap(),
        connect_timeout: Duration::from_secs(5),
        limits: Limits::default(),
    };
    let conn = Connection::connect(&url, None, &opts).await.unwrap();
    let alice = b.running.custody.identity("alice").await.unwrap();
    let stranger = Identity::from_secret_bytes(&[9; 32]).unwrap();
    let m = message_to(&stranger, &alice, "hello from a stranger");
    let PublishOutcome::PaymentRequired {
        invoice: Some(invoice),
        ..
    } = conn.publish(&m, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("a stranger is asked to pay");
    };
    let RelayFrame::Invoice {
        id, amount, bolt11, ..
    } = *invoice
    else {
        panic!("an INVOICE frame");
    };
    assert_eq!((id, amount), (m.id, 100));
    let decoded = decode(&bolt11).unwrap();
    assert_eq!(decoded.amount_msat, Some(100_000));
    assert_eq!(
        decoded.description,
        Description::Hash(Sha256::digest(m.id.0).into()),
        "the description hash commits to the message id"
    );
    // Asking again gives the same invoice, not a new one per attempt.
    let PublishOutcome::PaymentRequired {
        invoice: Some(again),
        ..
    } = conn.publish(&m, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("still unpaid");
    };
    assert!(matches!(*again, RelayFrame::Invoice { bolt11: ref b2, .. } if *b2 == bolt11));

    let Presented::Settled { preimage, .. } = b.wallet().await.present(&bolt11).await.unwrap()
    else {
        panic!("settled");
    };
    let mut paid = m.clone();
    // Claiming more than was paid shows only what was invoiced.
    paid.payment = Some(PaymentProof {
        preimage,
        amount: 100_000,
        route: None,
    });
    let outcome = conn.publish(&paid, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(outcome, PublishOutcome::Accepted), "{outcome:?}");
    let uid = b.user_id("alice").await;
    wait_until("the paid message filed", || async {
        b.mailbox("alice", "INBOX").await.len() == 1
    })
    .await;
    assert!(b.mailbox("alice", "INBOX").await[0].flags.contains("$Paid"));
    let stored = store::inbox::list(b.store(), uid, 0).await.unwrap();
    let stored = Message::from_json(stored[0].as_bytes(), &Limits::default()).unwrap();
    assert_eq!(stored.payment.map(|p| p.amount), Some(100));

    // The same preimage on another message pays for nothing.
    let mut replay = message_to(&stranger, &alice, "a second message, same proof");
    replay.payment = Some(PaymentProof {
        preimage,
        amount: 100,
        route: None,
    });
    let outcome = conn.publish(&replay, Duration::from_secs(5)).await.unwrap();
    assert!(
        matches!(outcome, PublishOutcome::PaymentRequired { .. }),
        "a replayed preimage is refused: {outcome:?}"
    );
    // A made-up preimage too.
    let mut forged = message_to(&stranger, &alice, "forged proof");
    forged.payment = Some(PaymentProof {
        preimage: [7; 32],
        amount: 100,
        route: None,
    });
    assert!(matches!(
        conn.publish(&forged, Duration::from_secs(5)).await.unwrap(),
        PublishOutcome::PaymentRequired { .. }
    ));
    assert_eq!(b.mailbox("alice", "INBOX").await.len(), 1);
    // Alice was paid once (the worker's settlement and the redeemed proof are one).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ledger::balance(b.store(), ledger::Account::User(uid))
            .await
            .unwrap(),
        100_000
    );
    // Her contacts write for their price: a friend's message is free.
    let friend = Identity::from_secret_bytes(&[10; 32]).unwrap();
    let friend_address =
        lnmp_bridge::lnmp::Address::new(&friend.public_key(), "fred", Some("elsewhere.test"))
            .unwrap();
    let alice_info = b.running.custody.user("alice").await.unwrap();
    b.running
        .custody
        .add_contact(
            &alice_info,
            &friend_address.to_string(),
            store::contacts::Level::Friend,
        )
        .await
        .unwrap();
    let from_friend = message_to(&friend, &alice, "no charge between friends");
    assert!(matches!(
        conn.publish(&from_friend, Duration::from_secs(5))
            .await
            .unwrap(),
        PublishOutcome::Accepted
    ));
}

#[tokio::test]
async fn deposits_credit_the_balance_and_withdrawals_never_overdraw() {
    let b = bridge(|_| {}).await;
    let alice = b.running.custody.user("alice").await.unwrap();
    let store = b.store().clone();
    let paywall = b.paywall().await;
    let deposit = paywall
        .deposit_invoice(&alice, 5_000_000, Description::Memo("top up".into()))
        .await
        .unwrap();
    b.wallet().await.present(&deposit.bolt11).await.unwrap();
    wait_until("the deposit credited", || async {
        paywall.balance(&alice).await.unwrap() == 5_000_000
    })
    .await;
    // Withdrawing to an invoice of the same wallet (what LNbits calls an internal
    // payment); the unused fee reserve comes back.
    let bob = b.running.custody.user("bob").await.unwrap();
    let bobs = paywall
        .deposit_invoice(&bob, 2_000_000, Description::Memo("to bob".into()))
        .await
        .unwrap();
    let paid = paywall
        .pay_from_balance(
            &alice,
            &bobs.bolt11,
            ledger::Kind::Withdrawal,
            "to bob".into(),
        )
        .await
        .unwrap();
    assert_eq!(paid.amount_msat, 2_000_000);
    assert_eq!(paywall.balance(&alice).await.unwrap(), 3_000_000);
    wait_until("bob credited", || async {
        paywall.balance(&bob).await.unwrap() == 2_000_000
    })
    .await;
    // More than she has: refused, and nothing moves.
    let big = paywall
        .deposit_invoice(&bob, 3_001_000, Description::Memo("too much".into()))
        .await
        .unwrap();
    assert!(
        paywall
            .pay_from_balance(&alice, &big.bolt11, ledger::Kind::Withdrawal, "x".into())
            .await
            .is_err()
    );
    assert_eq!(paywall.balance(&alice).await.unwrap(), 3_000_000);
    // All she has, when the fee limit no longer fits, still pays (with no fee room).
    let all = paywall
        .deposit_invoice(&bob, 3_000_000, Description::Memo("everything".into()))
        .await
        .unwrap();
    paywall
        .pay_from_balance(&alice, &all.bolt11, ledger::Kind::Withdrawal, "all".into())
        .await
        .unwrap();
    assert_eq!(paywall.balance(&alice).await.unwrap(), 0);
    assert_eq!(ledger::total(&store).await.unwrap(), 0);
}

#[tokio::test]
async fn a_payment_is_seen_however_many_invoices_are_open() {
    let b = bridge(|_| {}).await;
    let alice = b.running.custody.user("alice").await.unwrap();
    let paywall = b.paywall().await;
    // More open invoices than one sweep looks at; the oldest and the newest get paid.
    let mut made = Vec::new();
    for _ in 0..700 {
        made.push(
            paywall
                .deposit_invoice(&alice, 1000, Description::Memo("one of many".into()))
                .await
                .unwrap(),
        );
    }
    let wallet = b.wallet().await;
    wallet.present(&made[0].bolt11).await.unwrap();
    wallet.present(&made[699].bolt11).await.unwrap();
    wait_until("both payments credited", || async {
        paywall.balance(&alice).await.unwrap() == 2000
    })
    .await;
}
