//! The paywall: mail from strangers reaches a user only once it is paid for.
//!
//! - [`admission`]: inside the MX session, after DATA, which recipients get a message
//!   free, which have it held until paid (in their Requests folder, with an invoice),
//!   and what the session answers (450/550 with the pay link, or 250).
//! - [`request`]: the payment request by email (the bounce with invoice), sent only to
//!   senders who authenticated and are not automatic, once per window.
//! - [`settle`]: the worker that learns of payments and acts on them: a held message
//!   delivered with its payment proof, a deposit credited; unpaid holds expire.
//! - [`gate`]: the embedded relay's price: an INVOICE for a PUBLISH to a user who
//!   charges the sender, and the proof that pays it, redeemed once.
//! - [`autopay`]: the relay client's side: paying another relay's INVOICE from the
//!   user's balance up to their cap, or asking them first.
//! - the [`Paywall`] itself: pay pages, deposits and withdrawals over the ledger
//!   (`store::ledger`), which every credit and debit goes through.
//!
//! The Lightning backend is behind [`crate::lightning::Backend`]; the paywall never
//! knows which one it is.

pub mod admission;
pub mod autopay;
pub mod gate;
pub mod request;
pub mod settle;

use crate::config::{Config, PaywallMode};
use crate::custody::{Custody, UserInfo};
use crate::lightning::{Backend, Description, Invoice, InvoiceRequest, LightningError};
use crate::store::held::{HeldMessage, HeldState};
use crate::store::ledger::{self, Account, LedgerError, Posting};
use crate::store::{self, Store, StoreError, invoices};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PaywallError {
    #[error(transparent)]
    Lightning(#[from] LightningError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Custody(#[from] crate::custody::CustodyError),
    #[error("{0}")]
    Invalid(String),
    #[error("too many invoices asked for; try again in a minute")]
    RateLimited,
}

pub type Result<T> = std::result::Result<T, PaywallError>;

/// What the paywall needs from the config.
#[derive(Debug, Clone)]
pub struct PaywallSettings {
    pub mode: PaywallMode,
    pub hold: Duration,
    pub request_window: Duration,
    pub fee_percent: u8,
    pub autopay_cap_sats: u64,
    /// The base of pay links, without a trailing slash.
    pub public_url: String,
    pub payer_becomes_acquaintance: bool,
    pub invoice_expiry: Duration,
    pub poll: Duration,
    pub max_fee_msat: u64,
    /// How long a payment request (email) is retried.
    pub request_lifetime: Duration,
    pub address_invoices_per_minute: u32,
    /// How long the embedded relay keeps a message; None when it is off. Paid held mail
    /// enters the relay's store by this, whichever process settles it.
    pub relay_retention: Option<Duration>,
}

impl PaywallSettings {
    pub fn from_config(c: &Config) -> PaywallSettings {
        let p = &c.paywall;
        let public_url = if p.public_url.is_empty() {
            let port = c.http.listen.rsplit_once(':').map_or("443", |(_, p)| p);
            let scheme = if c.http.tls { "https" } else { "http" };
            format!("{scheme}://{}:{port}", c.server.hostname)
        } else {
            p.public_url.trim_end_matches('/').to_owned()
        };
        PaywallSettings {
            mode: p.mode,
            hold: Duration::from_secs(p.hold_days.saturating_mul(86_400)),
            request_window: Duration::from_secs(p.request_window_hours.saturating_mul(3600)),
            fee_percent: p.relay_fee_percent.min(100),
            autopay_cap_sats: p.autopay_cap_sats,
            public_url,
            payer_becomes_acquaintance: p.payer_becomes_acquaintance,
            invoice_expiry: Duration::from_secs(c.lightning.invoice_expiry_seconds),
            poll: Duration::from_secs(c.lightning.poll_seconds),
            max_fee_msat: c.lightning.max_fee_sats.saturating_mul(1000),
            request_lifetime: Duration::from_secs(c.outbound.lifetime_hours.saturating_mul(3600)),
            address_invoices_per_minute: p.address_invoices_per_minute,
            relay_retention: c
                .relay
                .enabled
                .then(|| Duration::from_secs(u64::from(c.relay.retention_days) * 86_400)),
        }
    }
}

pub struct Paywall {
    custody: Custody,
    backend: Arc<dyn Backend>,
    settings: PaywallSettings,
    /// Wakes the settle worker (a pay page saw a payment, a CLI deposit was made).
    wake: tokio::sync::Notify,
    /// The embedded relay, which paid held mail is added to.
    relay: std::sync::OnceLock<Arc<crate::relay::server::Relay>>,
    /// Invoices strangers may have made through Lightning Addresses.
    address_invoices: std::sync::Mutex<crate::ratelimit::TokenBucket>,
    /// Where the settle worker's walk through older open invoices goes on (settle.rs).
    sweep_cursor: std::sync::atomic::AtomicI64,
}

/// What the pay page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayView {
    /// The recipient's email address.
    pub recipient: String,
    pub amount_sats: u64,
    pub bolt11: String,
    /// Unix seconds.
    pub invoice_expires_at: i64,
    pub state: HeldState,
    /// When the held message is deleted unpaid.
    pub hold_expires_at: i64,
}

impl Paywall {
    pub fn new(custody: Custody, backend: Arc<dyn Backend>, settings: PaywallSettings) -> Paywall {
        Paywall {
            custody,
            backend,
            wake: tokio::sync::Notify::new(),
            relay: std::sync::OnceLock::new(),
            sweep_cursor: std::sync::atomic::AtomicI64::new(i64::MAX),
            address_invoices: std::sync::Mutex::new(crate::ratelimit::TokenBucket::new(
                f64::from(settings.address_invoices_per_minute) / 60.0,
                settings.address_invoices_per_minute,
            )),
            settings,
        }
    }

    /// Takes the right to make one invoice for a Lightning Address payer.
    pub fn address_invoice_allowed(&self) -> bool {
        self.address_invoices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take()
    }

    /// The embedded relay, once it is started: paid held mail goes into its store.
    pub fn attach_relay(&self, relay: Arc<crate::relay::server::Relay>) {
        let _ = self.relay.set(relay);
    }

    pub fn custody(&self) -> &Custody {
        &self.custody
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn settings(&self) -> &PaywallSettings {
        &self.settings
    }

    fn store(&self) -> &Store {
        self.custody.store()
    }

    /// The pay link of a held message.
    pub fn pay_url(&self, token: &str) -> String {
        format!("{}/pay/{token}", self.settings.public_url)
    }

    /// Asks the settle worker to look at open invoices now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A new invoice from the backend, `memo` or a description hash.
    pub async fn invoice(&self, amount_msat: u64, description: Description) -> Result<Invoice> {
        self.invoice_until(amount_msat, description, i64::MAX).await
    }

    /// A new invoice that cannot be paid after `deadline` (Unix seconds) nor after the
    /// configured expiry: one for held mail ends with the hold.
    async fn invoice_until(
        &self,
        amount_msat: u64,
        description: Description,
        deadline: i64,
    ) -> Result<Invoice> {
        let left = u64::try_from(deadline.saturating_sub(store::now())).unwrap_or(0);
        let expiry = self
            .settings
            .invoice_expiry
            .min(Duration::from_secs(left.max(60)));
        Ok(self
            .backend
            .create_invoice(&InvoiceRequest {
                amount_msat,
                description,
                expiry,
            })
            .await?)
    }

    /// The pay page of a held message, None for an unknown token. A held message
    /// whose invoice expired gets a fresh one; a paid invoice the worker has not seen
    /// yet is settled here, so the page turns to delivered without waiting.
    pub async fn pay_view(&self, token: &str) -> Result<Option<PayView>> {
        let Some(mut held) = store::held::by_token(self.store(), token).await? else {
            return Ok(None);
        };
        let mut invoice = invoices::latest_for_held(self.store(), held.id).await?;
        if held.state == HeldState::Held
            && let Some(i) = &invoice
            && i.state == "open"
        {
            let hash = parse_hash(&i.payment_hash)?;
            if let Ok(crate::lightning::InvoiceState::Settled {
                preimage,
                amount_msat,
            }) = self.backend.invoice_state(&hash).await
            {
                settle::settle(self, i, preimage, amount_msat).await?;
                held = store::held::by_token(self.store(), token)
                    .await?
                    .unwrap_or(held);
                invoice = invoices::latest_for_held(self.store(), held.id).await?;
            }
        }
        let now = store::now();
        let stale = invoice
            .as_ref()
            .is_none_or(|i| i.state == "expired" || (i.state == "open" && i.expires_at <= now));
        if held.state == HeldState::Held && stale && held.expires_at > now {
            let user = self.user_by_id(held.user_id).await?;
            let fresh = self
                .invoice_until(
                    u64::try_from(held.amount_msat).unwrap_or(0),
                    Description::Memo(memo_for(&user)),
                    held.expires_at,
                )
                .await?;
            let row = invoices::NewInvoice {
                payment_hash: hex::encode(fresh.payment_hash),
                bolt11: fresh.bolt11.clone(),
                amount_msat: i64::try_from(fresh.amount_msat).unwrap_or(i64::MAX),
                purpose: invoices::Purpose::Held,
                user_id: Some(held.user_id),
                held_id: Some(held.id),
                message_id: None,
                shares: Vec::new(),
                expires_at: fresh.expires_at,
            };
            invoices::insert(self.store(), row).await?;
            invoice = invoices::latest_for_held(self.store(), held.id).await?;
        }
        let user = self.user_by_id(held.user_id).await?;
        let (bolt11, invoice_expires_at) = invoice
            .map(|i| (i.bolt11, i.expires_at))
            .unwrap_or_default();
        Ok(Some(PayView {
            recipient: user.email,
            amount_sats: u64::try_from(held.amount_msat).unwrap_or(0) / 1000,
            bolt11,
            invoice_expires_at,
            state: held.state,
            hold_expires_at: held.expires_at,
        }))
    }

    async fn user_by_id(&self, id: i64) -> Result<UserInfo> {
        let row = store::users::get_by_id(self.store(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
        Ok(self.custody.user(&row.username).await?)
    }

    /// An invoice that credits `user`'s balance when paid: `lnmp-bridge wallet deposit`
    /// and the Lightning Address (whose description hash commits to its metadata).
    pub async fn deposit_invoice(
        &self,
        user: &UserInfo,
        amount_msat: u64,
        description: Description,
    ) -> Result<Invoice> {
        if amount_msat == 0 {
            return Err(PaywallError::Invalid(
                "the amount must be at least 1 msat".into(),
            ));
        }
        let invoice = self.invoice(amount_msat, description).await?;
        invoices::insert(
            self.store(),
            invoices::NewInvoice {
                payment_hash: hex::encode(invoice.payment_hash),
                bolt11: invoice.bolt11.clone(),
                amount_msat: i64::try_from(invoice.amount_msat).unwrap_or(i64::MAX),
                purpose: invoices::Purpose::Deposit,
                user_id: Some(user.id),
                held_id: None,
                message_id: None,
                shares: Vec::new(),
                expires_at: invoice.expires_at,
            },
        )
        .await?;
        self.wake();
        Ok(invoice)
    }

    /// Pays `bolt11` from the user's balance: the debit is committed first (so two
    /// withdrawals cannot spend the same sats), and given back if the payment fails.
    pub async fn pay_from_balance(
        &self,
        user: &UserInfo,
        bolt11: &str,
        kind: ledger::Kind,
        memo: String,
    ) -> Result<crate::lightning::Paid> {
        let decoded = crate::lightning::decode(bolt11)?;
        let amount = decoded.amount_msat.ok_or_else(|| {
            PaywallError::Invalid("the invoice carries no amount; ask for one that does".into())
        })?;
        if decoded.expires_at <= store::now() {
            return Err(PaywallError::Invalid("the invoice has expired".into()));
        }
        let hash = hex::encode(decoded.payment_hash);
        // The routing fee limit is reserved with the amount and what is left of it given
        // back; a balance that covers the amount but not the whole limit pays with a
        // smaller limit rather than not at all.
        let balance = u64::try_from(self.balance(user).await?).unwrap_or(0);
        let fee_limit = self
            .settings
            .max_fee_msat
            .min(balance.saturating_sub(amount));
        let reserve = amount.saturating_add(fee_limit);
        let reserve_msat = i64::try_from(reserve).unwrap_or(i64::MAX);
        // One debit per attempt: a refunded attempt may be followed by another, but two
        // attempts at once get the same key and only one passes.
        let attempt = ledger::count_keys(self.store(), &format!("refund:{hash}:")).await?;
        let debit = Posting {
            key: format!("pay:{hash}:{attempt}"),
            kind,
            memo: memo.clone(),
            entries: vec![
                (Account::User(user.id), -reserve_msat),
                (Account::Lightning, reserve_msat),
            ],
        };
        if !ledger::post(self.store(), debit).await? {
            return Err(PaywallError::Invalid(
                "this invoice was paid already".into(),
            ));
        }
        match self.backend.pay(bolt11, fee_limit).await {
            Ok(paid) => {
                let spent = paid.amount_msat.saturating_add(paid.fee_msat);
                let back = i64::try_from(reserve.saturating_sub(spent)).unwrap_or(0);
                if back > 0 {
                    ledger::post(
                        self.store(),
                        Posting {
                            key: format!("fee-change:{hash}"),
                            kind: ledger::Kind::Refund,
                            memo: "unused routing fee".into(),
                            entries: vec![
                                (Account::Lightning, -back),
                                (Account::User(user.id), back),
                            ],
                        },
                    )
                    .await?;
                }
                Ok(paid)
            }
            // The outcome is not known (the backend went quiet mid-payment): giving the
            // money back could pay twice, so the debit stands and says why.
            Err(e @ LightningError::Unreachable(_)) => {
                tracing::error!(error = %e, payment_hash = %hash, user = %user.username,
                    "payment outcome unknown; the balance stays debited until an operator checks the backend");
                Err(e.into())
            }
            Err(e) => {
                ledger::post(
                    self.store(),
                    Posting {
                        key: format!("refund:{hash}:{attempt}"),
                        kind: ledger::Kind::Refund,
                        memo: format!("payment failed: {e}"),
                        entries: vec![
                            (Account::Lightning, -reserve_msat),
                            (Account::User(user.id), reserve_msat),
                        ],
                    },
                )
                .await?;
                Err(e.into())
            }
        }
    }

    /// The user's balance in millisatoshis.
    pub async fn balance(&self, user: &UserInfo) -> Result<i64> {
        Ok(ledger::balance(self.store(), Account::User(user.id)).await?)
    }

    /// Settles what has been paid: used by `lnmp-bridge wallet` (which runs beside the
    /// daemon) so a deposit shows at once, and by the worker.
    pub async fn settle_paid(&self) -> Result<usize> {
        settle::sweep(self).await
    }

    /// What a held message became, for the CLI and tests.
    pub async fn held(&self, user: &UserInfo) -> Result<Vec<HeldMessage>> {
        Ok(store::held::list(self.store(), user.id).await?)
    }
}

/// The memo of a held message's invoice: what the payer's wallet shows.
pub(crate) fn memo_for(user: &UserInfo) -> String {
    format!("Deliver your message to {}", user.email)
}

pub(crate) fn parse_hash(hex_hash: &str) -> Result<[u8; 32]> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut h)
        .map_err(|_| PaywallError::Invalid(format!("bad payment hash {hex_hash}")))?;
    Ok(h)
}

/// A pay-page token: 16 characters of a-z2-7 (80 bits), short enough for an SMTP
/// reply line, and no case to lose.
pub(crate) fn new_token() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect()
}
