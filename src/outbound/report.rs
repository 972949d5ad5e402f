//! Telling a sender that mail could not be delivered. A user who wrote (or whose
//! forward failed) finds an RFC 3464 DSN in their INBOX; an LNMP sender whose message
//! was to go out as email gets the same DSN over LNMP, in answer to their message. The
//! report is committed in the transaction that marks the failures reported, so each
//! is sent once. Nobody is told about a report that failed.

use super::Settings;
use super::dsn::{self, Action, RecipientStatus, Report};
use crate::delivery::{BridgedMail, Courier, DeliveryError, ReportTo, Reported};
use crate::store::{self, outbound};
use std::collections::BTreeMap;

/// Sends the reports that are due. Errors are for the caller to log; what failed stays
/// pending and is tried again on the next round.
pub async fn send_due(courier: &Courier, settings: &Settings) -> Result<(), DeliveryError> {
    let store = courier.custody().store().clone();
    let pending = outbound::unreported(&store, 200).await?;
    let mut by_message: BTreeMap<i64, Vec<outbound::Unreported>> = BTreeMap::new();
    for p in pending {
        by_message.entry(p.message_id).or_default().push(p);
    }
    for (message_id, rows) in by_message {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let Some(message) = outbound::message(&store, message_id).await? else {
            outbound::mark_reported(&store, ids).await?;
            continue;
        };
        let statuses: Vec<RecipientStatus> = rows
            .iter()
            .map(|r| {
                let reply = r.last_error.clone().unwrap_or_default();
                // An expired message's record ends with the last answer it got.
                let last = reply
                    .rsplit_once("last: ")
                    .map_or(reply.as_str(), |(_, l)| l);
                let code = last.get(..3).and_then(|c| c.parse::<u16>().ok());
                RecipientStatus {
                    recipient: r.recipient.clone(),
                    action: Action::Failed,
                    status: dsn::status_of(code, last),
                    remote_mta: r.remote_mta.clone(),
                    diagnostic: (!reply.is_empty()).then_some(reply),
                    last_attempt: r.settled_at.unwrap_or_else(store::now),
                }
            })
            .collect();
        let daemon = format!("MAILER-DAEMON@{}", settings.domain);
        let report_id = format!("dsn.{message_id}.{}@{}", ids[0], settings.hostname);
        let bytes = dsn::render(&Report {
            reporting_mta: &settings.hostname,
            from: &daemon,
            to: &message.mail_from,
            arrival_date: message.created_at,
            now: store::now(),
            message_id: &report_id,
            original: &message.raw,
            recipients: &statuses,
        });
        let to = match message.origin() {
            outbound::Origin::Submission | outbound::Origin::Forward => match message.user_id {
                Some(id) => ReportTo::User(id),
                None => ReportTo::Nobody,
            },
            outbound::Origin::Lnmp { sender, relays, .. } => ReportTo::Key {
                key: sender,
                relays,
            },
            outbound::Origin::Report => ReportTo::Nobody,
        };
        let mail = BridgedMail::report(
            &bytes,
            &daemon,
            ids.iter().map(|id| Reported::Outbound(*id)).collect(),
        );
        // One report that cannot be made must not hold up the others.
        match courier.deliver_report(mail, to).await {
            Ok(true) => {
                tracing::info!(to = %message.mail_from, failed = ids.len(), "delivery status notification sent")
            }
            Ok(false) => outbound::mark_reported(&store, ids).await?,
            Err(DeliveryError::Convert(e)) => {
                tracing::error!(error = %e, "a delivery report cannot be made; dropped");
                outbound::mark_reported(&store, ids).await?;
            }
            Err(e) => {
                tracing::warn!(error = %e, to = %message.mail_from, "cannot deliver a delivery report yet")
            }
        }
    }
    send_outbox_due(courier, settings).await
}

/// Reports for mail that came in as email and that no relay would take: a user's
/// submission to an LNMP address (a DSN in their INBOX), an email sender's answer
/// through a reply address (a DSN by email, from the null sender).
async fn send_outbox_due(courier: &Courier, settings: &Settings) -> Result<(), DeliveryError> {
    use crate::store::outbox::{self, Sender};
    let store = courier.custody().store().clone();
    for row in outbox::unreported(&store, 100).await? {
        let reply = row.last_error.clone().unwrap_or_default();
        let mut recipients = row.report.recipients.clone();
        if recipients.is_empty() {
            // An answer through a reply address: the address it was written to.
            recipients = crate::convert::parse_mail(&row.report.headers)
                .and_then(|m| {
                    m.to().map(|to| {
                        to.iter()
                            .filter_map(|a| a.address().map(str::to_owned))
                            .collect()
                    })
                })
                .unwrap_or_default();
        }
        let status = if reply.contains("expired") {
            "4.4.7"
        } else {
            "5.0.0"
        };
        let statuses: Vec<RecipientStatus> = recipients
            .iter()
            .map(|r| RecipientStatus {
                recipient: r.clone(),
                action: Action::Failed,
                status: status.to_owned(),
                remote_mta: None,
                diagnostic: Some(format!("lnmp; {reply}")),
                last_attempt: store::now(),
            })
            .collect();
        let to_address = match &row.report.sender {
            Sender::Email(a) => a.clone(),
            Sender::User(id) => match store::users::get_by_id(&store, *id).await? {
                Some(u) => format!("{}@{}", u.username, settings.domain),
                None => String::new(),
            },
        };
        if to_address.is_empty() {
            continue;
        }
        let daemon = format!("MAILER-DAEMON@{}", settings.domain);
        let report_id = format!("dsn.lnmp.{}@{}", row.id, settings.hostname);
        let bytes = dsn::render(&Report {
            reporting_mta: &settings.hostname,
            from: &daemon,
            to: &to_address,
            arrival_date: row.created_at,
            now: store::now(),
            message_id: &report_id,
            original: &row.report.headers,
            recipients: &statuses,
        });
        let result = match &row.report.sender {
            Sender::User(id) => courier
                .deliver_report(
                    BridgedMail::report(&bytes, &daemon, vec![Reported::Outbox(row.id)]),
                    ReportTo::User(*id),
                )
                .await
                .map(|_| ()),
            Sender::Email(address) => {
                let now = store::now();
                let queued = outbound::NewOutbound {
                    user_id: None,
                    mail_from: String::new(),
                    recipients: vec![address.clone()],
                    raw: bytes,
                    created_at: now,
                    expires_at: now.saturating_add(settings.timing.lifetime.as_secs() as i64),
                    origin: outbound::Origin::Report,
                };
                let id = row.id;
                let r = store
                    .write(Box::new(move |c| {
                        Box::pin(async move {
                            outbound::enqueue_in(c, &queued).await?;
                            outbox::mark_reported_in(c, id).await
                        })
                    }))
                    .await;
                store.work_queued();
                r.map_err(DeliveryError::from)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(to = %to_address, message = %row.message_id, "reported a message no relay took")
            }
            Err(e) => tracing::warn!(error = %e, "cannot report a message no relay took yet"),
        }
    }
    Ok(())
}
