//! The MX's paywall decision, per recipient, after DATA and before anything is
//! committed: deliver free, hold until paid, drop a retry of something already
//! delivered, or refuse what the user declined. Everything held is committed with the
//! delivery in one transaction before the session answers, so no unpaid mail is ever
//! accepted and then bounced.
//!
//! Free: the user's contacts, people the user wrote to, answers to the user's own
//! Message-IDs, mail DKIM-signed by a domain the user lets through or carrying a
//! List-Id they chose, a price of zero, and a message already paid for (the same
//! sender, recipient and body).

use super::{Paywall, memo_for, new_token, request};
use crate::config::PaywallMode;
use crate::custody::UserInfo;
use crate::custody::pricing::Standing;
use crate::delivery::Hold;
use crate::lightning::Description;
use crate::outbound::headers;
use crate::smtp::{Admission, Admit, InboundMail, Reply};
use crate::store::{self, held::HeldState};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

/// What one recipient's copy becomes.
enum Decision {
    Free,
    /// Held before, unpaid: answer again with its pay link.
    Waiting {
        token: String,
        amount_msat: i64,
    },
    /// Paid for or let in already: a retry, dropped.
    Delivered,
    /// The user deleted it from Requests.
    Declined,
    /// Hold it for this many sats.
    Charge(u64),
}

/// The key a payment is kept under for this message: its sender and the SHA-256 of
/// its Message-ID and body. A retrying server sends both unchanged (it may add header
/// fields, which are not in the key); another message with the same text has another
/// Message-ID.
pub fn payment_key(mail: &InboundMail<'_>) -> (String, String) {
    let sender = if mail.mail_from.is_empty() {
        mail.header_from.unwrap_or("").to_ascii_lowercase()
    } else {
        mail.mail_from.to_ascii_lowercase()
    };
    let mut h = Sha256::new();
    for id in headers::field_values(mail.raw, "Message-ID") {
        h.update(id.trim().as_bytes());
    }
    h.update([0]);
    h.update(&mail.raw[headers::body_start(mail.raw)..]);
    (sender, hex::encode(h.finalize()))
}

/// The sender's addresses the checks vouch for: the envelope sender when SPF passed
/// for it, the From address when SPF or DKIM passed aligned with its domain. Only these
/// can be matched against contacts, so forging a contact's address gets nothing.
fn authenticated_senders(mail: &InboundMail<'_>) -> Vec<String> {
    let mut senders = Vec::new();
    if !mail.mail_from.is_empty() && mail.verdict.spf == mail_auth::SpfResult::Pass {
        senders.push(mail.mail_from.to_ascii_lowercase());
    }
    if let Some(from) = mail.header_from
        && (mail.verdict.dmarc_pass || mail.verdict.authenticates(mail.mail_from, from))
    {
        let from = from.to_ascii_lowercase();
        if !senders.contains(&from) {
            senders.push(from);
        }
    }
    senders
}

/// The List-Id, when a DKIM signature vouches for it: signed by the list's domain or
/// one above it (a bare List-Id header is anyone's to write).
fn signed_list_id(mail: &InboundMail<'_>) -> Option<String> {
    let id = list_id(mail.raw)?.to_ascii_lowercase();
    mail.verdict
        .dkim_domains
        .iter()
        .any(|d| {
            let d = d.to_ascii_lowercase();
            id == d || id.ends_with(&format!(".{d}"))
        })
        .then_some(id)
}

/// Message-IDs the message answers (In-Reply-To and References), without brackets.
fn answered_ids(raw: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    for field in ["In-Reply-To", "References"] {
        for v in headers::field_values(raw, field) {
            for part in v.split('<').skip(1) {
                if let Some((id, _)) = part.split_once('>') {
                    let id = id.trim();
                    if !id.is_empty() && !ids.iter().any(|x| x == id) {
                        ids.push(id.to_owned());
                    }
                }
            }
        }
    }
    ids
}

/// The Message-IDs a delivery report's body quotes (its returned header section),
/// without brackets; at most a few, from the first 64 KiB.
fn reported_ids(raw: &[u8]) -> Vec<String> {
    let body = &raw[headers::body_start(raw)..];
    let body = &body[..body.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(body);
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("Message-ID") {
                return None;
            }
            let v = value.trim();
            let v = v
                .strip_prefix('<')
                .and_then(|v| v.split_once('>'))
                .map(|(id, _)| id)?;
            (!v.is_empty()).then(|| v.to_owned())
        })
        .take(8)
        .collect()
}

/// The List-Id's identifier (the part in angle brackets, or the whole value).
fn list_id(raw: &[u8]) -> Option<String> {
    let v = headers::field_values(raw, "List-Id").into_iter().next()?;
    let id = match v.rsplit_once('<') {
        Some((_, rest)) => rest.split('>').next().unwrap_or("").trim().to_owned(),
        None => v.trim().to_owned(),
    };
    (!id.is_empty()).then_some(id)
}

impl Paywall {
    async fn decide(
        &self,
        user: &UserInfo,
        mail: &InboundMail<'_>,
        key: &(String, String),
    ) -> super::Result<Decision> {
        let store = self.store();
        if let Some(h) = store::held::find(store, user.id, &key.0, &key.1).await? {
            match h.state {
                HeldState::Held => {
                    return Ok(Decision::Waiting {
                        token: h.token,
                        amount_msat: h.amount_msat,
                    });
                }
                HeldState::Paid | HeldState::Accepted => return Ok(Decision::Delivered),
                HeldState::Refused => return Ok(Decision::Declined),
                HeldState::Expired => {}
            }
        }
        for s in authenticated_senders(mail) {
            if store::contacts::get(store, user.id, &s).await?.is_some()
                || store::correspondents::wrote_to(store, user.id, &s).await?
            {
                return Ok(Decision::Free);
            }
        }
        let mut answered = answered_ids(mail.raw);
        if headers::is_report(mail.raw) {
            // A bounce of the user's own mail names it in its returned header section,
            // rarely in In-Reply-To.
            answered.extend(reported_ids(mail.raw));
        }
        if store::correspondents::sent_any(store, user.id, &answered).await? {
            return Ok(Decision::Free);
        }
        let policy = self.custody.policy(user).await?;
        let dkim: Vec<&str> = mail
            .verdict
            .dkim_domains
            .iter()
            .map(String::as_str)
            .collect();
        if policy.is_free(&dkim, signed_list_id(mail).as_deref()) {
            return Ok(Decision::Free);
        }
        let unread = match store::mailboxes::get(store, user.id, "INBOX").await? {
            Some(inbox) => store::mailboxes::counts(store, inbox.id).await?.1,
            None => 0,
        };
        let price = policy.price(Standing::Stranger, u64::try_from(unread).unwrap_or(0));
        if price == 0 {
            return Ok(Decision::Free);
        }
        Ok(Decision::Charge(price))
    }

    async fn admit_mail(&self, mail: &InboundMail<'_>) -> Admit {
        let key = payment_key(mail);
        let mut deliver = Vec::new();
        let mut holds = Vec::new();
        // (recipient, sats, pay link) for the answer; held now or before.
        let mut waiting: Vec<(String, u64, String)> = Vec::new();
        let mut delivered_before = false;
        let mut declined = Vec::new();
        let now = store::now();
        for user in mail.recipients {
            let decision = match self.decide(user, mail, &key).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, user = %user.username, "paywall decision failed");
                    return Admit::Refuse(Reply::new(
                        451,
                        "4.3.0",
                        "local error in processing; try again later",
                    ));
                }
            };
            match decision {
                Decision::Free => deliver.push(user.clone()),
                Decision::Delivered => delivered_before = true,
                Decision::Declined => declined.push(user.email.clone()),
                Decision::Waiting { token, amount_msat } => waiting.push((
                    user.email.clone(),
                    u64::try_from(amount_msat).unwrap_or(0) / 1000,
                    self.pay_url(&token),
                )),
                Decision::Charge(sats) => {
                    let invoice = match self
                        .invoice(sats.saturating_mul(1000), Description::Memo(memo_for(user)))
                        .await
                    {
                        Ok(i) => i,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot make an invoice");
                            return Admit::Refuse(Reply::new(
                                451,
                                "4.3.0",
                                "the payment system is unavailable; try again later",
                            ));
                        }
                    };
                    let token = new_token();
                    waiting.push((user.email.clone(), sats, self.pay_url(&token)));
                    holds.push(Hold {
                        user: user.clone(),
                        sender: key.0.clone(),
                        body_hash: key.1.clone(),
                        amount_msat: i64::try_from(sats.saturating_mul(1000)).unwrap_or(i64::MAX),
                        token,
                        expires_at: now.saturating_add(self.settings.hold.as_secs() as i64),
                        invoice,
                    });
                }
            }
        }
        if deliver.is_empty() && holds.is_empty() && waiting.is_empty() {
            if !declined.is_empty() {
                return Admit::Refuse(Reply::new(
                    550,
                    "5.7.1",
                    format!("{} declined this message", declined.join(", ")),
                ));
            }
            if delivered_before {
                return Admit::Partial {
                    deliver,
                    holds,
                    answer: Some(Reply::new(250, "2.0.0", "ok: delivered already")),
                };
            }
        }
        if waiting.is_empty() {
            return if declined.is_empty() && !delivered_before {
                Admit::Deliver
            } else {
                Admit::Partial {
                    deliver,
                    holds,
                    answer: None,
                }
            };
        }
        let answer = self.answer(&waiting, !deliver.is_empty() || delivered_before, mail);
        Admit::Partial {
            deliver,
            holds,
            answer: Some(answer),
        }
    }

    /// The session's answer for mail held until paid. Mail that also reached someone
    /// now is answered 250 (a 4xx would make the sender's server send it again to
    /// everyone), and so is everything in `accept` mode; the sender hears of the
    /// payment by email then.
    fn answer(
        &self,
        waiting: &[(String, u64, String)],
        some_delivered: bool,
        mail: &InboundMail<'_>,
    ) -> Reply {
        // One line per recipient, at most five: each well within 512 octets.
        let mut lines: Vec<String> = waiting
            .iter()
            .take(5)
            .map(|(to, sats, url)| {
                format!("payment required: {sats} sats to reach {to}; pay at {url}")
            })
            .collect();
        let mode = if some_delivered {
            PaywallMode::Accept
        } else {
            self.settings.mode
        };
        let (code, status, last) = match mode {
            PaywallMode::Retry => (
                450,
                "4.7.0",
                "once paid, your server's next try is delivered",
            ),
            PaywallMode::Reject => (550, "5.7.0", "once paid, the message is delivered"),
            PaywallMode::Accept => (
                250,
                "2.0.0",
                if request::recipient(mail).is_some() {
                    "held until paid; a payment request is on its way to you"
                } else {
                    "held until paid"
                },
            ),
        };
        lines.push(last.to_owned());
        Reply {
            code,
            status,
            lines,
        }
    }
}

impl Admission for Paywall {
    fn admit<'a>(&'a self, mail: &'a InboundMail<'a>) -> BoxFuture<'a, Admit> {
        Box::pin(self.admit_mail(mail))
    }

    fn committed<'a>(
        &'a self,
        mail: &'a InboundMail<'a>,
        holds: &'a [Hold],
        answer: &'a Reply,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The payment request goes wherever the sender does not learn of the link
            // from their own server at once: after a 250, and after a 450 (their
            // server may wait days before it tells them). A 550 carries the link in
            // the bounce their server sends them now.
            if holds.is_empty() || answer.code >= 500 {
                return;
            }
            if let Err(e) = request::send(self, mail, holds).await {
                tracing::warn!(error = %e, "cannot queue a payment request");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_ids_and_list_id() {
        let raw = b"In-Reply-To: <a@x>\r\nReferences: <b@y> <a@x>\r\n\tList-Id: no\r\nList-Id: News <news.example.org>\r\n\r\nbody";
        assert_eq!(answered_ids(raw), ["a@x", "b@y"]);
        assert_eq!(list_id(raw).as_deref(), Some("news.example.org"));
        assert_eq!(
            list_id(b"List-Id: plain.id\r\n\r\n").as_deref(),
            Some("plain.id")
        );
        assert_eq!(list_id(b"Subject: x\r\n\r\n"), None);
    }

    #[test]
    fn a_bounce_names_the_message_it_returns() {
        let raw = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: alice@bridge.test\r\nMessage-ID: <abc@bridge.test>\r\n--b--\r\n";
        assert_eq!(reported_ids(raw), ["abc@bridge.test"]);
        assert!(reported_ids(b"Subject: x\r\n\r\nno ids here\r\n").is_empty());
    }

    #[test]
    fn tokens_are_short_and_lowercase() {
        let a = new_token();
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_ne!(a, new_token());
    }
}
