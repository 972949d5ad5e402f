//! Paying other relays' INVOICEs for messages our users send (the relay client's
//! side of docs/PROTOCOL.md §9.6). An invoice that checks — for this message id
//! (description hash = SHA-256 of the id), for the amount the INVOICE names, not
//! expired — is paid from the sender's balance when it is within their auto-pay cap,
//! and the message is published again with its proof. Above the cap, or with too
//! little balance, the message waits and the user gets an email with a link that
//! confirms the payment.

use super::{Paywall, PaywallError, new_token};
use crate::custody::UserInfo;
use crate::delivery::{BridgedMail, Courier, ReportTo};
use crate::lightning::{Description, decode};
use crate::lnmp::{Limits, Message, PaymentProof, RelayFrame};
use crate::relay::outbox::{Payer, Payment};
use crate::store::{self, ledger, outbox};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub struct AutoPay {
    paywall: Arc<Paywall>,
    courier: Arc<Courier>,
}

/// What the confirmation page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmView {
    pub username: String,
    pub amount_sats: u64,
    pub balance_msat: i64,
    pub message_id: String,
}

/// Checks that `bolt11` is the invoice `frame` describes, for `message`.
fn check_invoice(message: &Message, id: &str, amount: u64, bolt11: &str) -> Result<(), String> {
    if id != message.id.to_hex() {
        return Err("the INVOICE is for another message".into());
    }
    let decoded = decode(bolt11).map_err(|e| e.to_string())?;
    let expected: [u8; 32] = Sha256::digest(message.id.0).into();
    if decoded.description != Description::Hash(expected) {
        return Err("the invoice's description hash is not that of the message id".into());
    }
    if decoded.amount_msat != Some(amount.saturating_mul(1000)) {
        return Err(format!(
            "the invoice is not for the {amount} sats the INVOICE names"
        ));
    }
    if decoded.expires_at <= store::now() {
        return Err("the invoice has expired".into());
    }
    Ok(())
}

impl AutoPay {
    pub fn new(paywall: Arc<Paywall>, courier: Arc<Courier>) -> AutoPay {
        AutoPay { paywall, courier }
    }

    async fn cap_sats(&self, user: &UserInfo) -> u64 {
        match self.paywall.custody.pricing_overrides(user).await {
            Ok(o) => o
                .autopay_cap
                .map_or(self.paywall.settings.autopay_cap_sats, |c| c.max(0) as u64),
            Err(_) => self.paywall.settings.autopay_cap_sats,
        }
    }

    /// Sets the message aside and asks the user, by a message in their INBOX.
    async fn ask(
        &self,
        user: &UserInfo,
        row: &outbox::OutboxRow,
        amount: u64,
        bolt11: &str,
        why: &str,
    ) -> Payment {
        let token = new_token();
        let detail = format!(
            "waiting for {} to confirm paying {amount} sats: {why}",
            user.username
        );
        if let Err(e) = outbox::await_confirmation(
            self.paywall.store(),
            row.id,
            detail.clone(),
            bolt11.to_owned(),
            i64::try_from(amount).unwrap_or(i64::MAX),
            user.id,
            token.clone(),
        )
        .await
        {
            return Payment::Waiting(format!("{detail} (cannot record it: {e})"));
        }
        let balance = self.paywall.balance(user).await.unwrap_or(0) / 1000;
        let url = format!("{}/confirm/{token}", self.paywall.settings.public_url);
        let domain = self.paywall.custody.domain().to_owned();
        let daemon = format!("postmaster@{domain}");
        let text = confirmation_mail(
            &daemon,
            &user.email,
            &row.message_id,
            amount,
            balance,
            why,
            &url,
            &domain,
        );
        let mail = BridgedMail::report(text.as_bytes(), &daemon, Vec::new());
        if let Err(e) = self
            .courier
            .deliver_report(mail, ReportTo::User(user.id))
            .await
        {
            tracing::warn!(error = %e, "cannot ask a user to confirm a payment");
        }
        Payment::Waiting(detail)
    }
}

#[allow(clippy::too_many_arguments)]
fn confirmation_mail(
    from: &str,
    to: &str,
    message_id: &str,
    amount: u64,
    balance: i64,
    why: &str,
    url: &str,
    domain: &str,
) -> String {
    let date = mail_builder::headers::date::Date::new(store::now()).to_rfc822();
    format!(
        "From: Payments <{from}>\r\nTo: <{to}>\r\nSubject: Confirm paying {amount} sats to send your message\r\n\
         Date: {date}\r\nMessage-ID: <confirm.{id}@{domain}>\r\nAuto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         The recipient of your message {short} charges {amount} sats to receive it.\r\n\
         It was not paid automatically: {why}.\r\n\
         Your balance: {balance} sats.\r\n\r\n\
         To pay and send it, open:\r\n{url}\r\n\r\n\
         If you do nothing, the message is not sent.\r\n",
        id = &message_id[..message_id.len().min(32)],
        short = &message_id[..message_id.len().min(16)],
    )
}

impl Payer for AutoPay {
    fn pay<'a>(
        &'a self,
        row: &'a outbox::OutboxRow,
        message: &'a Message,
        invoice: &'a RelayFrame,
    ) -> BoxFuture<'a, Payment> {
        Box::pin(async move {
            let RelayFrame::Invoice {
                id, amount, bolt11, ..
            } = invoice
            else {
                return Payment::Waiting("the relay asked for payment without an INVOICE".into());
            };
            if let Err(why) = check_invoice(message, &id.to_hex(), *amount, bolt11) {
                return Payment::Refused(format!(
                    "the recipient's relay sent a bad invoice: {why}"
                ));
            }
            let user =
                match store::users::get_by_pubkey(self.paywall.store(), &message.from.to_hex())
                    .await
                {
                    Ok(Some(row)) => match self.paywall.custody.user(&row.username).await {
                        Ok(u) => u,
                        Err(e) => return Payment::Waiting(format!("cannot load the sender: {e}")),
                    },
                    Ok(None) => return Payment::Waiting("no user here to pay for it".into()),
                    Err(e) => return Payment::Waiting(format!("cannot look up the sender: {e}")),
                };
            let cap = self.cap_sats(&user).await;
            if *amount > cap {
                return self
                    .ask(
                        &user,
                        row,
                        *amount,
                        bolt11,
                        &format!("above your auto-pay cap of {cap} sats"),
                    )
                    .await;
            }
            match self
                .paywall
                .pay_from_balance(
                    &user,
                    bolt11,
                    ledger::Kind::MailPayment,
                    format!(
                        "message {}",
                        &row.message_id[..16.min(row.message_id.len())]
                    ),
                )
                .await
            {
                Ok(paid) => {
                    tracing::info!(user = %user.username, sats = amount, "paid a relay invoice");
                    let mut m = message.clone();
                    m.payment = Some(PaymentProof {
                        preimage: paid.preimage,
                        amount: *amount,
                        route: None,
                    });
                    Payment::Paid(Box::new(m))
                }
                Err(PaywallError::Ledger(ledger::LedgerError::Insufficient { .. })) => {
                    self.ask(&user, row, *amount, bolt11, "your balance is too low")
                        .await
                }
                Err(PaywallError::Lightning(
                    e @ crate::lightning::LightningError::Unreachable(_),
                )) => {
                    // Paid or not, nobody knows yet: paying again could pay twice.
                    Payment::Waiting(format!("the payment's outcome is unknown: {e}"))
                }
                Err(e) => Payment::Retry(format!("the payment failed: {e}")),
            }
        })
    }
}

impl Paywall {
    /// The confirmation page of a message waiting for its sender to pay.
    pub async fn confirm_view(&self, token: &str) -> super::Result<Option<ConfirmView>> {
        let Some(row) = outbox::by_confirm_token(self.store(), token).await? else {
            return Ok(None);
        };
        let user = self.user_by_id(row.sender_user).await?;
        Ok(Some(ConfirmView {
            amount_sats: u64::try_from(row.invoice_sats).unwrap_or(0),
            balance_msat: self.balance(&user).await?,
            username: user.username,
            message_id: row.message_id,
        }))
    }

    /// Pays a waiting message's invoice from its sender's balance and queues it again
    /// with the proof. A link used twice pays once.
    pub async fn confirm(&self, token: &str) -> super::Result<()> {
        let row = outbox::by_confirm_token(self.store(), token)
            .await?
            .ok_or_else(|| PaywallError::Invalid("this link was used or has expired".into()))?;
        let user = self.user_by_id(row.sender_user).await?;
        let message = Message::from_json(row.body.as_bytes(), &Limits::default())
            .map_err(|e| PaywallError::Invalid(format!("the queued message is unreadable: {e}")))?;
        let amount = u64::try_from(row.invoice_sats).unwrap_or(0);
        if let Err(why) = check_invoice(&message, &row.message_id, amount, &row.invoice_bolt11) {
            // Most likely the relay's invoice expired while the email waited: publishing
            // again brings a fresh INVOICE, and with it a fresh question.
            outbox::requeue_paid(self.store(), row.id, row.body.clone(), true).await?;
            return Err(PaywallError::Invalid(format!(
                "{why}; the recipient's relay is asked for a new invoice and you will get a new link"
            )));
        }
        if !outbox::take_for_payment(self.store(), row.id).await? {
            return Err(PaywallError::Invalid("this link was used already".into()));
        }
        let paid = match self
            .pay_from_balance(
                &user,
                &row.invoice_bolt11,
                ledger::Kind::MailPayment,
                format!(
                    "message {}",
                    &row.message_id[..16.min(row.message_id.len())]
                ),
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // The link works again once the user has topped up.
                outbox::await_confirmation(
                    self.store(),
                    row.id,
                    format!("payment failed: {e}"),
                    row.invoice_bolt11.clone(),
                    row.invoice_sats,
                    row.sender_user,
                    token.to_owned(),
                )
                .await?;
                return Err(e);
            }
        };
        let mut m = message;
        m.payment = Some(PaymentProof {
            preimage: paid.preimage,
            amount,
            route: None,
        });
        if !outbox::requeue_paid(self.store(), row.id, m.to_json(), true).await? {
            tracing::error!(message = %row.message_id, "paid for a message that expired meanwhile");
            return Err(PaywallError::Invalid(
                "the message expired while it was being paid for; it was not sent".into(),
            ));
        }
        Ok(())
    }
}
