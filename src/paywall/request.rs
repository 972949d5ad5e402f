//! The payment request by email (the bounce with invoice): an RFC 3834 auto-reply
//! to the sender of held mail with the amount, the BOLT11 invoice, a lightning: link
//! and the pay page. It goes only where it cannot become backscatter or a loop: to
//! senders that SPF or DKIM authenticated aligned with their From domain, never to
//! the null sender, automatic or list mail, or no-reply addresses, and at most once
//! per sender per window. It never echoes anything of the message but its Message-ID.

use super::Paywall;
use crate::delivery::Hold;
use crate::outbound::headers;
use crate::smtp::InboundMail;
use crate::store::{self, outbound};

/// Local parts that never read what they are sent (RFC 3834 section 2 names the
/// -request and owner- conventions of list software).
fn is_no_reply(address: &str) -> bool {
    let local = address
        .rsplit_once('@')
        .map_or(address, |(l, _)| l)
        .to_ascii_lowercase();
    let base = local.split('+').next().unwrap_or("");
    [
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
        "mailer-daemon",
        "postmaster",
        "bounce",
        "bounces",
        "listserv",
        "majordomo",
    ]
    .contains(&base)
        || base.ends_with("-request")
        || base.starts_with("owner-")
        || base.ends_with("-owner")
        || base.starts_with("bounce-")
}

/// Where a payment request for `mail` goes, if anywhere: the envelope sender when SPF
/// passed for it aligned with the From domain (RFC 3834 answers the Return-Path), else
/// the From address when a DKIM signature aligned with it vouches for it. An address
/// nothing authenticated never gets one, so the bridge cannot be made to mail a victim.
pub fn recipient(mail: &InboundMail<'_>) -> Option<String> {
    let from = mail.header_from?;
    if mail.mail_from.is_empty() || !eligible(mail) {
        return None;
    }
    let domain = |a: &str| a.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
    let from_domain = domain(from);
    if mail.verdict.spf == mail_auth::SpfResult::Pass
        && crate::smtp::verify::aligned(&domain(mail.mail_from), &from_domain)
    {
        return Some(mail.mail_from.to_ascii_lowercase());
    }
    mail.verdict
        .dkim_domains
        .iter()
        .any(|d| crate::smtp::verify::aligned(d, &from_domain))
        .then(|| from.to_ascii_lowercase())
}

/// Whether the sender of `mail` may be sent a payment request at all.
fn eligible(mail: &InboundMail<'_>) -> bool {
    let Some(from) = mail.header_from else {
        return false;
    };
    !mail.mail_from.is_empty()
        && mail.verdict.authenticates(mail.mail_from, from)
        && !headers::is_automatic(mail.raw)
        && !headers::is_report(mail.raw)
        && ["List-Id", "List-Unsubscribe", "List-Post", "Feedback-ID"]
            .iter()
            .all(|f| headers::field_values(mail.raw, f).is_empty())
        && !is_no_reply(mail.mail_from)
        && !is_no_reply(from)
}

/// What one request says.
pub struct Request<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub message_id: &'a str,
    /// The held message's Message-ID, to thread on.
    pub in_reply_to: Option<&'a str>,
    pub date: i64,
    /// (recipient, sats, BOLT11, pay link, deleted-unpaid-at).
    pub items: Vec<(&'a str, u64, &'a str, String, i64)>,
}

fn date(ts: i64) -> String {
    mail_builder::headers::date::Date::new(ts.clamp(0, 253_402_300_799)).to_rfc822()
}

/// Only printable ASCII in what we write: the values come from our own config and
/// the sender's address, but a header must never be split by them.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

/// The request as a complete message: 7-bit text/plain, CRLF line ends.
pub fn render(r: &Request<'_>) -> Vec<u8> {
    let mut out = String::new();
    let mut field = |line: &str| {
        out.push_str(line);
        out.push_str("\r\n");
    };
    let names: Vec<String> = r.items.iter().map(|i| clean(i.0)).collect();
    field(&headers::address_field(
        "From",
        "Payment request",
        &clean(r.from),
    ));
    field(&headers::address_field("To", "", &clean(r.to)));
    // One recipient named, or a count: the Subject stays one short line.
    let whom = match names.as_slice() {
        [one] => one.clone(),
        many => format!("{} recipients", many.len()),
    };
    field(&format!(
        "Subject: Payment required to deliver your message to {whom}"
    ));
    field(&format!("Date: {}", date(r.date)));
    field(&format!("Message-ID: <{}>", clean(r.message_id)));
    if let Some(id) = r.in_reply_to.map(clean).filter(|i| !i.is_empty()) {
        field(&format!("In-Reply-To: <{id}>"));
        field(&format!("References: <{id}>"));
    }
    field("Auto-Submitted: auto-replied");
    field("Precedence: bulk");
    field("MIME-Version: 1.0");
    field("Content-Type: text/plain; charset=us-ascii");
    field("Content-Transfer-Encoding: 7bit");
    field("");
    for (to, sats, bolt11, url, deleted_at) in &r.items {
        let bolt11 = clean(bolt11);
        field(&format!(
            "Your message to {} is held until it is paid for: {sats} sats.",
            clean(to)
        ));
        field("");
        field("Pay in your browser:");
        field(&clean(url));
        field("");
        field("Or with a Lightning wallet:");
        field(&format!("lightning:{bolt11}"));
        field("");
        field("The invoice (BOLT11):");
        field(&bolt11);
        field("");
        field(&format!(
            "Once paid, the message is delivered. Unpaid, it is deleted on {}.",
            date(*deleted_at)
        ));
        field("");
    }
    field("If you did not send this message, ignore this email: nothing more will be sent.");
    out.into_bytes()
}

/// Queues a payment request for held mail, unless the sender may not have one or had
/// one within the window.
pub async fn send(paywall: &Paywall, mail: &InboundMail<'_>, holds: &[Hold]) -> super::Result<()> {
    let Some(to) = recipient(mail) else {
        tracing::info!(sender = %mail.mail_from, "no payment request: the sender is not eligible");
        return Ok(());
    };
    let now = store::now();
    let domain = paywall.custody.domain().to_owned();
    let from = format!("postmaster@{domain}");
    let message_id = format!(
        "pay.{}@{domain}",
        holds.first().map_or("", |h| h.token.as_str())
    );
    let original = headers::field_values(mail.raw, "Message-ID")
        .into_iter()
        .next()
        .map(|v| {
            v.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        });
    let urls: Vec<String> = holds.iter().map(|h| paywall.pay_url(&h.token)).collect();
    let raw = render(&Request {
        from: &from,
        to: &to,
        message_id: &message_id,
        in_reply_to: original.as_deref(),
        date: now,
        items: holds
            .iter()
            .zip(&urls)
            .map(|(h, url)| {
                (
                    h.user.email.as_str(),
                    u64::try_from(h.amount_msat).unwrap_or(0) / 1000,
                    h.invoice.bolt11.as_str(),
                    url.clone(),
                    h.expires_at,
                )
            })
            .collect(),
    });
    let cutoff = now.saturating_sub(paywall.settings.request_window.as_secs() as i64);
    let queued = outbound::NewOutbound {
        user_id: None,
        // A null envelope sender: nothing answers an auto-reply's bounce (RFC 3834).
        mail_from: String::new(),
        recipients: vec![to.clone()],
        raw,
        created_at: now,
        expires_at: now.saturating_add(paywall.settings.request_lifetime.as_secs() as i64),
        origin: outbound::Origin::Report,
    };
    let sent = paywall
        .store()
        .write(Box::new(move |c| {
            Box::pin(async move {
                if !store::held::claim_request_in(c, &to, now, cutoff).await? {
                    return Ok(false);
                }
                outbound::enqueue_in(c, &queued).await?;
                Ok(true)
            })
        }))
        .await?;
    if sent {
        paywall.store().work_queued();
        tracing::info!(to = %mail.mail_from, "payment request queued");
    } else {
        tracing::info!(to = %mail.mail_from, "no payment request: one was sent within the window");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reply_addresses() {
        for a in [
            "noreply@x.org",
            "No-Reply@x.org",
            "owner-list@x.org",
            "list-request@x.org",
            "bounce-123@x.org",
            "MAILER-DAEMON@x.org",
            "noreply+tag@x.org",
        ] {
            assert!(is_no_reply(a), "{a}");
        }
        for a in ["dan@x.org", "replyguy@x.org", "bouncer@x.org"] {
            assert!(!is_no_reply(a), "{a}");
        }
    }

    #[test]
    fn renders_a_seven_bit_auto_reply_without_the_body() {
        let raw = render(&Request {
            from: "postmaster@example.com",
            to: "dan@example.org",
            message_id: "pay.abc@example.com",
            in_reply_to: Some("orig@example.org"),
            date: 1_700_000_000,
            items: vec![(
                "alice@example.com",
                100,
                "lnbcrt1u1xyz",
                "https://mail.example.com/pay/abc".into(),
                1_700_600_000,
            )],
        });
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(raw.iter().all(|b| *b < 128));
        assert!(text.lines().all(|l| l.len() < 998));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("In-Reply-To: <orig@example.org>\r\n"));
        assert!(text.contains("100 sats"));
        assert!(text.contains("\r\nlightning:lnbcrt1u1xyz\r\n"));
        assert!(text.contains("\r\nlnbcrt1u1xyz\r\n"));
        assert!(text.contains("https://mail.example.com/pay/abc"));
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Payment required to deliver your message to alice@example.com")
        );
    }
}
