//! Telling a sender that mail could not be delivered. A user who wrote (or whose
//! forward failed) finds an RFC 3464 DSN in their INBOX; an LNMP sender whose message
//! was to go out as email gets the same DSN over LNMP, in answer to their message. The
//! report is committed in the transaction that marks the failures reported, so each
//! is sent once. Nobody is told about a report that failed.

use super::Settings;
use super::dsn::{self, Action, RecipientStatus, Report};
use crate::delivery::{BridgedMail, Courier, DeliveryError, ReportTo};
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
        let mail = BridgedMail {
            raw: &bytes,
            mail_from: "",
            sender: &daemon,
            authentication_results: None,
            recipients: Vec::new(),
            remote: Vec::new(),
            reported: ids.clone(),
        };
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
    Ok(())
}
