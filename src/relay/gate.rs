//! The gate every PUBLISH passes before it is stored: whether this relay takes the
//! message at all, for which of the domain's users, and — with the payments part —
//! whether the sender must pay first (an INVOICE).

use crate::config::RelayAccept;
use crate::lnmp::frame::{Reason, ReasonCode};
use crate::lnmp::{Message, RelayFrame};
use crate::store::{Store, legacy, users};
use futures_util::future::BoxFuture;

pub enum GateVerdict {
    /// Store it; these local users (by id) get it in their inbox, and it leaves as
    /// email for these derived keys of email senders. With `payment`, its proof is
    /// redeemed in the commit that stores it and shown for `amount` sats; without, any
    /// proof it carries was not checked here and is dropped, so nobody is shown a
    /// payment nobody vouched for.
    Accept {
        local_recipients: Vec<i64>,
        legacy_recipients: Vec<String>,
        payment: Option<Box<Redeemed>>,
    },
    Refuse(Reason),
    /// The sender must pay this INVOICE first.
    Invoice(Box<RelayFrame>),
}

/// A payment proof that checks against an invoice this relay issued.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub redemption: crate::store::invoices::Redemption,
    /// The invoiced sats, which is what the message is shown to have paid.
    pub amount: u64,
}

pub trait Gate: Send + Sync {
    fn check<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, GateVerdict>;
}

/// Takes messages by the relay's `accept` setting and finds the local recipients.
pub struct AcceptGate {
    store: Store,
    accept: RelayAccept,
}

impl AcceptGate {
    pub fn new(store: Store, accept: RelayAccept) -> AcceptGate {
        AcceptGate { store, accept }
    }
}

impl Gate for AcceptGate {
    fn check<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, GateVerdict> {
        Box::pin(async move {
            let mut keys: Vec<String> = m.to.iter().map(|k| k.to_hex()).collect();
            keys.push(m.from.to_hex());
            let local = match users::ids_by_pubkeys(&self.store, &keys).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up local users");
                    return GateVerdict::Refuse(Reason::new(
                        ReasonCode::Error,
                        "storage unavailable; try again",
                    ));
                }
            };
            let sender = m.from.to_hex();
            let to: Vec<String> = m.to.iter().map(|k| k.to_hex()).collect();
            let legacy_recipients = match legacy::known_keys(&self.store, &to).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up email senders");
                    return GateVerdict::Refuse(Reason::new(
                        ReasonCode::Error,
                        "storage unavailable; try again",
                    ));
                }
            };
            let local_recipients: Vec<i64> = local
                .iter()
                .filter(|(_, k)| m.to.iter().any(|t| t.to_hex() == *k))
                .map(|(id, _)| *id)
                .collect();
            // The bridge's own senders (email senders' derived keys) count as local: what
            // they publish is mail this domain accepted from the email world.
            let sender_is_local = local.iter().any(|(_, k)| *k == sender)
                || matches!(legacy::known_keys(&self.store, std::slice::from_ref(&sender)).await, Ok(k) if !k.is_empty());
            if self.accept == RelayAccept::Local
                && local_recipients.is_empty()
                && legacy_recipients.is_empty()
                && !sender_is_local
            {
                return GateVerdict::Refuse(Reason::new(
                    ReasonCode::Restricted,
                    "this relay only takes mail from or to its own users",
                ));
            }
            GateVerdict::Accept {
                local_recipients,
                legacy_recipients,
                payment: None,
            }
        })
    }
}
