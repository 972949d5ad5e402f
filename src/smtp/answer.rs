//! Mail to a reply address (`reply+<token>@domain`): an answer from the email world
//! to someone on LNMP. The route says who may answer and as whom:
//!
//! - a user answering from their forward address goes out as the user (their key,
//!   their address), to wherever the person they answer is: a user here, an LNMP
//!   address elsewhere, or an email sender (as email);
//! - an email sender answering an LNMP sender who wrote to them is bridged as their
//!   own mail, to that LNMP sender. Bounces of what we sent them go the same way, so
//!   the LNMP sender learns of them.
//!
//! Either way the From address must be the one the route names, authenticated by SPF
//! or DKIM aligned with its domain (what DMARC checks, whatever the domain's policy);
//! anyone else is refused. Automatic mail (Auto-Submitted, Precedence: bulk) to a
//! forward route is refused too, so vacation replies do not loop.

use super::{Reply, SmtpServer, verify::Verdict};
use crate::delivery::{BridgedMail, Route};
use crate::outbound::headers;
use crate::store::reply_routes::{Replier, ReplyRoute};
use crate::store::users;

fn refuse(text: impl Into<String>) -> Reply {
    Reply::new(550, "5.7.1", text)
}

fn temp(e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "answer through a reply address failed");
    Reply::new(451, "4.3.0", "local error in processing; try again later")
}

/// The SMTP session's facts about one answer.
pub(super) struct Answer<'a> {
    pub peer: std::net::IpAddr,
    pub helo: &'a str,
    pub mail_from: &'a str,
    /// The one From address.
    pub from: &'a str,
    /// The message as stored (our Received field first).
    pub raw: &'a [u8],
    pub verdict: &'a Verdict,
}

/// Whether the message names `address` in To or Cc: DKIM binds the header, not the
/// envelope, so a signed message someone holds cannot be sent on to another reply
/// address than the one it was written to.
fn addressed_to(raw: &[u8], address: &str) -> bool {
    let Some(m) = crate::convert::parse_mail(raw) else {
        return false;
    };
    [m.to(), m.cc()].into_iter().flatten().any(|list| {
        list.iter()
            .filter_map(|a| a.address())
            .any(|a| a.eq_ignore_ascii_case(address))
    })
}

/// Takes an answer to `route`.
pub(super) async fn take(server: &SmtpServer, route: &ReplyRoute, a: Answer<'_>) -> Reply {
    let Answer {
        peer,
        helo,
        mail_from,
        from,
        raw,
        verdict,
    } = a;
    let store = server.custody.store();
    let reply_address = format!(
        "{}+{}@{}",
        server.custody.reply_local_part(),
        route.token,
        server.custody.domain()
    );
    match &route.replier {
        Replier::User(user_id) => {
            let row = match users::get_by_id(store, *user_id).await {
                Ok(Some(r)) => r,
                Ok(None) => return Reply::new(550, "5.1.1", "no such recipient"),
                Err(e) => return temp(e),
            };
            let forward = row.forward_to.clone().unwrap_or_default();
            if forward.is_empty() || !from.eq_ignore_ascii_case(&forward) {
                return refuse("this reply address takes mail from its owner only");
            }
            if !verdict.authenticates(mail_from, from) {
                return refuse(format!(
                    "{from} is not authenticated: neither SPF nor DKIM passed aligned with its domain"
                ));
            }
            if mail_from.is_empty() || headers::is_automatic(raw) {
                return refuse("automatic mail is not passed on");
            }
            if !addressed_to(raw, &reply_address) {
                return refuse("the message is not addressed to this reply address");
            }
            let user = match server.custody.user(&row.username).await {
                Ok(u) => u,
                Err(e) => return temp(e),
            };
            let (to, target) = match peer_route(server, route).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            // The answer leaves as the user's own mail: their address, our hop.
            let body = headers::remove_fields(
                raw,
                &[
                    "From",
                    "Sender",
                    "Reply-To",
                    "To",
                    "Cc",
                    "Bcc",
                    "Return-Path",
                    "Received",
                    "DKIM-Signature",
                    "ARC-Seal",
                    "ARC-Message-Signature",
                    "ARC-Authentication-Results",
                    "Authentication-Results",
                    "X-LNMP-Hops",
                    "X-Original-From",
                ],
            );
            // The trip so far still counts: a forward that comes back round is a loop.
            let fields = vec![
                headers::address_field("From", "", &user.email),
                headers::address_field("To", "", &to),
                format!("X-LNMP-Hops: {}", headers::hop_count(raw) + 1),
            ];
            let out = headers::prepend_fields(&body, &fields);
            match server
                .courier
                .submit(&user, &user.email, &out, &[(to, target)])
                .await
            {
                Ok(()) => Reply::new(250, "2.0.0", "ok: sent on"),
                Err(crate::delivery::DeliveryError::Convert(e)) => {
                    Reply::new(554, "5.6.0", format!("message refused: {e}"))
                }
                Err(e) => temp(e),
            }
        }
        Replier::Legacy(address) => {
            let bounce = mail_from.is_empty();
            if bounce && !headers::is_report(raw) {
                return refuse("mail from the null sender must be a delivery report");
            }
            if !bounce && !from.eq_ignore_ascii_case(address) {
                return refuse("this reply address takes mail from its owner only");
            }
            if !verdict.authenticates(mail_from, from) {
                return refuse(format!(
                    "{from} is not authenticated: neither SPF nor DKIM passed aligned with its domain"
                ));
            }
            let (mut recipients, remote) = match peer_key(server, route).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            // A user here gets the answer as any mail from the email world: past the
            // admission seam (the paywall), into Junk when the checks say so.
            let mut holds = Vec::new();
            let mut answer = None;
            if !recipients.is_empty() {
                let users: Vec<_> = recipients.iter().map(|(u, _)| u.clone()).collect();
                let decision = server
                    .admission
                    .admit(&super::InboundMail {
                        peer,
                        helo,
                        mail_from,
                        recipients: &users,
                        raw,
                        header_from: Some(from),
                        verdict,
                    })
                    .await;
                match decision {
                    super::Admit::Deliver => {}
                    super::Admit::Refuse(r) => return r,
                    super::Admit::Partial {
                        deliver,
                        holds: held,
                        answer: a,
                    } => {
                        recipients.retain(|(u, _)| deliver.iter().any(|d| d.id == u.id));
                        if recipients.is_empty() && held.is_empty() && remote.is_empty() {
                            return a.unwrap_or_else(|| Reply::new(250, "2.0.0", "ok"));
                        }
                        holds = held;
                        answer = a;
                    }
                }
                if verdict.action == super::verify::Action::Junk {
                    for r in &mut recipients {
                        r.1 = "Junk";
                    }
                }
            }
            let sender = if bounce { from } else { address.as_str() };
            match server
                .courier
                .deliver_bridged(BridgedMail {
                    raw,
                    mail_from,
                    sender,
                    authentication_results: Some(verdict.authentication_results.clone()),
                    recipients,
                    remote,
                    reported: Vec::new(),
                    holds: holds.clone(),
                })
                .await
            {
                Ok(_) => match answer {
                    Some(answer) => {
                        let inbound = super::InboundMail {
                            peer,
                            helo,
                            mail_from,
                            recipients: &[],
                            raw,
                            header_from: Some(from),
                            verdict,
                        };
                        server.admission.committed(&inbound, &holds, &answer).await;
                        answer
                    }
                    None => Reply::new(250, "2.0.0", "ok: sent on"),
                },
                Err(crate::delivery::DeliveryError::Convert(e)) => {
                    Reply::new(554, "5.6.0", format!("message refused: {e}"))
                }
                Err(e) => temp(e),
            }
        }
    }
}

/// Who a route's answer goes to.
enum Peer {
    Local(crate::custody::UserInfo),
    /// An email sender, by address.
    Email(String),
    /// A key elsewhere, with the relays it named.
    Remote(crate::lnmp::PublicKey, Vec<String>),
}

async fn peer(server: &SmtpServer, route: &ReplyRoute) -> Result<Peer, Reply> {
    let store = server.custody.store();
    if let Some(row) = users::get_by_pubkey(store, &route.peer_key)
        .await
        .map_err(temp)?
    {
        return Ok(Peer::Local(
            server.custody.user(&row.username).await.map_err(temp)?,
        ));
    }
    if let Some(email) = crate::store::legacy::address_of(store, &route.peer_key)
        .await
        .map_err(temp)?
    {
        return Ok(Peer::Email(email));
    }
    let key = route
        .peer_key
        .parse()
        .map_err(|_| Reply::new(550, "5.1.1", "the reply address names no valid key"))?;
    if route.peer_relays.is_empty() {
        return Err(Reply::new(
            550,
            "5.1.2",
            "no relay is known for this conversation",
        ));
    }
    Ok(Peer::Remote(key, route.peer_relays.clone()))
}

type Recipients = (
    Vec<(crate::custody::UserInfo, &'static str)>,
    Vec<(crate::lnmp::PublicKey, Vec<String>)>,
);

/// The peer as a recipient of bridged mail: a local user, or a key elsewhere.
async fn peer_key(server: &SmtpServer, route: &ReplyRoute) -> Result<Recipients, Reply> {
    match peer(server, route).await? {
        Peer::Local(user) => Ok((vec![(user, "INBOX")], Vec::new())),
        Peer::Remote(key, relays) => Ok((Vec::new(), vec![(key, relays)])),
        // Email senders answer each other by email, not through us.
        Peer::Email(_) => Err(Reply::new(550, "5.1.1", "no such recipient")),
    }
}

/// The peer as a submission route, with the address shown in To.
async fn peer_route(server: &SmtpServer, route: &ReplyRoute) -> Result<(String, Route), Reply> {
    Ok(match peer(server, route).await? {
        Peer::Local(user) => (user.email.clone(), Route::Local(user)),
        Peer::Email(email) => (email.clone(), Route::Email(email)),
        Peer::Remote(pubkey, relays) => {
            let shown = if route.peer_address.is_empty() {
                format!(
                    "{}@{}",
                    route.peer_key,
                    crate::convert::threading::LNMP_ID_DOMAIN
                )
            } else {
                route.peer_address.clone()
            };
            (shown, Route::Lnmp { pubkey, relays })
        }
    })
}
