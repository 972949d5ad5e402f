//! The embedded relay's price (docs/PROTOCOL.md §9.6 step 5). A PUBLISH to local users
//! who charge its sender is answered with an INVOICE (the sum of their prices; the
//! description hash is SHA-256 of the 32 id bytes) unless it carries a proof that
//! checks against an invoice this relay issued for that id: the preimage hashes to
//! the invoice's payment hash, the amount is at least the invoice's, and the preimage
//! was never redeemed before. The proof is redeemed, and the recipients credited, in
//! the commit that stores the message (store::relay), so a proof is never spent on a
//! message that was not stored.

use super::Paywall;
use crate::custody::pricing::Standing;
use crate::lightning::Description;
use crate::lnmp::frame::{Reason, ReasonCode};
use crate::lnmp::{Address, Message, RelayFrame};
use crate::relay::gate::{AcceptGate, Gate, GateVerdict, Redeemed};
use crate::store::contacts::Level;
use crate::store::{self, invoices, legacy, users};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub struct PaywallGate {
    inner: AcceptGate,
    paywall: Arc<Paywall>,
}

fn unavailable(e: impl std::fmt::Display) -> GateVerdict {
    tracing::error!(error = %e, "relay paywall unavailable");
    GateVerdict::Refuse(Reason::new(
        ReasonCode::Error,
        "payments unavailable; try again",
    ))
}

impl PaywallGate {
    pub fn new(inner: AcceptGate, paywall: Arc<Paywall>) -> PaywallGate {
        PaywallGate { inner, paywall }
    }

    /// What the sender of `m` pays each local recipient, in sats.
    async fn shares(&self, m: &Message, local: &[i64]) -> super::Result<Vec<(i64, u64)>> {
        let store = self.paywall.store();
        let sender = m.from.to_hex();
        // Our own users and the bridge's derived senders (mail the MX let in) are free.
        if users::get_by_pubkey(store, &sender).await?.is_some()
            || !legacy::known_keys(store, std::slice::from_ref(&sender))
                .await?
                .is_empty()
        {
            return Ok(Vec::new());
        }
        let mut shares = Vec::new();
        for id in local {
            let Some(row) = users::get_by_id(store, *id).await? else {
                continue;
            };
            let user = self.paywall.custody.user(&row.username).await?;
            let mut standing = Standing::Stranger;
            for c in self.paywall.custody.contacts(&user).await? {
                if let Ok(a) = c.address.parse::<Address>()
                    && a.verify(&m.from).is_ok()
                {
                    standing = match c.level {
                        Level::Friend => Standing::Friend,
                        Level::Acquaintance => Standing::Acquaintance,
                    };
                    break;
                }
            }
            let unread = match store::mailboxes::get(store, user.id, "INBOX").await? {
                Some(inbox) => store::mailboxes::counts(store, inbox.id).await?.1,
                None => 0,
            };
            let policy = self.paywall.custody.policy(&user).await?;
            let price = policy.price(standing, u64::try_from(unread).unwrap_or(0));
            if price > 0 {
                shares.push((user.id, price));
            }
        }
        Ok(shares)
    }

    /// The message's proof, when it pays for an invoice this relay issued for this id
    /// and was never redeemed: what to redeem in the commit that stores it. Any such
    /// invoice pays, even if the price has risen since (surge): it was the price asked.
    async fn proof(&self, m: &Message) -> super::Result<Option<Redeemed>> {
        let Some(proof) = &m.payment else {
            return Ok(None);
        };
        let hash = hex::encode(Sha256::digest(proof.preimage));
        let Some(invoice) = invoices::by_hash(self.paywall.store(), &hash).await? else {
            return Ok(None);
        };
        let id = m.id.to_hex();
        let invoiced_sats = u64::try_from(invoice.amount_msat).unwrap_or(0) / 1000;
        if invoice.purpose != invoices::Purpose::Relay
            || invoice.message_id.as_deref() != Some(id.as_str())
            || invoice.used_at.is_some()
            || proof.amount < invoiced_sats
        {
            return Ok(None);
        }
        let posting = super::settle::income(
            format!("settle:{hash}"),
            &invoice.shares(),
            self.paywall.settings.fee_percent,
            "paid LNMP message".into(),
        );
        Ok(Some(Redeemed {
            redemption: invoices::Redemption {
                payment_hash: hash,
                message_id: id,
                preimage: hex::encode(proof.preimage),
                posting,
            },
            amount: invoiced_sats,
        }))
    }

    /// The INVOICE for `m`: an open one issued before for this id and amount, else new.
    async fn invoice(&self, m: &Message, shares: &[(i64, u64)]) -> super::Result<RelayFrame> {
        let id = m.id.to_hex();
        let total: u64 = shares.iter().map(|(_, s)| *s).sum();
        let now = store::now();
        let existing = invoices::open_for_message(self.paywall.store(), &id, now + 60).await?;
        let (bolt11, expires_at) = match existing {
            Some(i) if u64::try_from(i.amount_msat).unwrap_or(0) == total * 1000 => {
                (i.bolt11, i.expires_at)
            }
            _ => {
                let hash: [u8; 32] = Sha256::digest(m.id.0).into();
                let fresh = self
                    .paywall
                    .invoice(total.saturating_mul(1000), Description::Hash(hash))
                    .await?;
                invoices::insert(
                    self.paywall.store(),
                    invoices::NewInvoice {
                        payment_hash: hex::encode(fresh.payment_hash),
                        bolt11: fresh.bolt11.clone(),
                        amount_msat: i64::try_from(fresh.amount_msat).unwrap_or(i64::MAX),
                        purpose: invoices::Purpose::Relay,
                        user_id: None,
                        held_id: None,
                        message_id: Some(id.clone()),
                        shares: shares
                            .iter()
                            .map(|(u, s)| {
                                (
                                    *u,
                                    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX),
                                )
                            })
                            .collect(),
                        expires_at: fresh.expires_at,
                    },
                )
                .await?;
                (fresh.bolt11, fresh.expires_at)
            }
        };
        Ok(RelayFrame::Invoice {
            id: m.id,
            amount: total,
            description: format!("{total} sats to deliver this message"),
            bolt11,
            expires_at: u64::try_from(expires_at).ok(),
        })
    }
}

impl Gate for PaywallGate {
    fn check<'a>(&'a self, m: &'a Message) -> BoxFuture<'a, GateVerdict> {
        Box::pin(async move {
            let (local_recipients, legacy_recipients) = match self.inner.check(m).await {
                GateVerdict::Accept {
                    local_recipients,
                    legacy_recipients,
                    ..
                } => (local_recipients, legacy_recipients),
                other => return other,
            };
            let accept = |payment| GateVerdict::Accept {
                local_recipients: local_recipients.clone(),
                legacy_recipients: legacy_recipients.clone(),
                payment,
            };
            if local_recipients.is_empty() {
                return accept(None);
            }
            let shares = match self.shares(m, &local_recipients).await {
                Ok(s) => s,
                Err(e) => return unavailable(e),
            };
            if shares.is_empty() {
                return accept(None);
            }
            match self.proof(m).await {
                Ok(Some(redeemed)) => return accept(Some(Box::new(redeemed))),
                Ok(None) => {}
                Err(e) => return unavailable(e),
            }
            match self.invoice(m, &shares).await {
                Ok(frame) => GateVerdict::Invoice(Box::new(frame)),
                Err(e) => unavailable(e),
            }
        })
    }
}
