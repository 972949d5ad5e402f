//! Lightning backends behind one trait: issue an invoice, learn whether it was paid,
//! pay an invoice, and — where the backend has them — hold invoices settled or
//! cancelled by the daemon. The paywall and the wallet commands see only [`Backend`].
//!
//! - [`dev::DevWallet`], the embedded default: a node of its own that signs real BOLT11
//!   invoices on regtest and keeps them in the database, so `lnmp-bridge dev pay` (another
//!   process) can mark one paid. No money moves.
//! - [`lnbits::Lnbits`]: an LNbits wallet over REST (invoice key to bill, admin key to pay).
//! - [`lnd::Lnd`]: an LND node over REST (macaroon, its own TLS certificate).
//!
//! Amounts are millisatoshis throughout; payment hashes and preimages are 32 bytes.

pub mod dev;
pub mod lnbits;
pub mod lnd;

use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LightningError {
    #[error("the Lightning backend is unreachable: {0}")]
    Unreachable(String),
    #[error("the Lightning backend refused: {0}")]
    Refused(String),
    #[error("the Lightning backend answered something unexpected: {0}")]
    Protocol(String),
    #[error("invalid invoice: {0}")]
    InvalidInvoice(String),
    #[error("the payment failed: {0}")]
    PaymentFailed(String),
    #[error("{0} has no hold invoices")]
    Unsupported(&'static str),
    #[error("no such invoice")]
    UnknownInvoice,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub type Result<T> = std::result::Result<T, LightningError>;

/// What an invoice commits to: a memo a person reads, or the SHA-256 of a longer
/// description (LNMP relay invoices: of the message id; LNURL: of the metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Description {
    Memo(String),
    Hash([u8; 32]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRequest {
    pub amount_msat: u64,
    pub description: Description,
    pub expiry: Duration,
}

/// An invoice a backend issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub bolt11: String,
    pub payment_hash: [u8; 32],
    pub amount_msat: u64,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceState {
    /// Not paid (yet).
    Open,
    /// A hold invoice the payer has locked funds for: settle or cancel it.
    Accepted,
    /// Paid: the preimage proves it.
    Settled {
        preimage: [u8; 32],
        amount_msat: u64,
    },
    /// Cancelled or expired unpaid.
    Canceled,
}

/// A payment we made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub preimage: [u8; 32],
    pub amount_msat: u64,
    pub fee_msat: u64,
}

/// A Lightning node or account the daemon bills and pays through.
pub trait Backend: Send + Sync {
    /// For logs and the `doctor`: "dev", "lnbits", "lnd".
    fn name(&self) -> &'static str;

    /// A cheap call that proves the backend answers and its keys work, for the
    /// `doctor`: a short description of what answered (a node, a wallet).
    fn health(&self) -> BoxFuture<'_, Result<String>>;

    fn create_invoice<'a>(&'a self, request: &'a InvoiceRequest) -> BoxFuture<'a, Result<Invoice>>;

    fn invoice_state<'a>(
        &'a self,
        payment_hash: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<InvoiceState>>;

    /// Pays `bolt11` (which must carry an amount), spending at most `max_fee_msat` on
    /// routing. Returns once the payment succeeded or failed for good.
    fn pay<'a>(&'a self, bolt11: &'a str, max_fee_msat: u64) -> BoxFuture<'a, Result<Paid>>;

    /// A hold invoice for `payment_hash`: paying it locks the payer's funds until
    /// [`Backend::settle_hold`] (with the preimage) or [`Backend::cancel_hold`].
    fn create_hold_invoice<'a>(
        &'a self,
        _payment_hash: [u8; 32],
        _request: &'a InvoiceRequest,
    ) -> BoxFuture<'a, Result<Invoice>> {
        Box::pin(async move { Err(LightningError::Unsupported(self.name())) })
    }

    fn settle_hold<'a>(&'a self, _preimage: &'a [u8; 32]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Err(LightningError::Unsupported(self.name())) })
    }

    fn cancel_hold<'a>(&'a self, _payment_hash: &'a [u8; 32]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Err(LightningError::Unsupported(self.name())) })
    }

    /// Payment hashes of invoices as they settle, for backends that push them (LND's
    /// invoice subscription). None means the caller polls [`Backend::invoice_state`].
    fn settlements(&self) -> Option<tokio::sync::mpsc::Receiver<[u8; 32]>> {
        None
    }
}

/// A BOLT11 invoice read and checked: what the paywall and the relay client need to
/// know before paying or accepting one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedInvoice {
    pub payment_hash: [u8; 32],
    /// None for an invoice without an amount.
    pub amount_msat: Option<u64>,
    pub description: Description,
    /// Unix seconds.
    pub expires_at: i64,
    /// The payee's node key, hex.
    pub payee: String,
}

/// Parses a BOLT11 invoice and checks its signature. Any network's prefix is read.
pub fn decode(bolt11: &str) -> Result<DecodedInvoice> {
    use lightning_invoice::SignedRawBolt11Invoice;
    // lightning-invoice does not re-export bitcoin; its hashes are secp256k1's (the
    // same crate copy).
    use secp256k1::hashes::Hash;
    let invalid = |why: String| LightningError::InvalidInvoice(why);
    // QR codes carry "LIGHTNING:LNBC..." in upper case (alphanumeric mode); bech32
    // is case-insensitive as a whole.
    let text = bolt11.trim().to_ascii_lowercase();
    // Read as a signed raw invoice, not as `Bolt11Invoice`, whose semantic checks
    // refuse invoices real wallets issue (LNbits' FakeWallet leaves out the feature
    // bits); what we rely on is checked here instead.
    let signed: SignedRawBolt11Invoice = text
        .strip_prefix("lightning:")
        .unwrap_or(&text)
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    if !signed.check_signature() {
        return Err(invalid("the signature does not match".into()));
    }
    let payee = signed
        .recover_payee_pub_key()
        .map_err(|e| invalid(format!("no payee key: {e}")))?;
    let raw = signed.raw_invoice();
    let payment_hash = raw
        .payment_hash()
        .ok_or_else(|| invalid("no payment hash".into()))?
        .0
        .to_byte_array();
    let description = match (raw.description(), raw.description_hash()) {
        (Some(d), None) => Description::Memo(d.to_string()),
        (None, Some(h)) => Description::Hash(h.0.to_byte_array()),
        _ => {
            return Err(invalid(
                "it needs exactly one of description and description hash".into(),
            ));
        }
    };
    // One millisatoshi is ten pico-bitcoin; a smaller fraction cannot be paid.
    let amount_msat = match raw.amount_pico_btc() {
        Some(p) if p % 10 != 0 => {
            return Err(invalid("the amount is not whole millisatoshis".into()));
        }
        Some(p) => Some(p / 10),
        None => None,
    };
    // BOLT 11: without an expiry field an invoice expires an hour after its timestamp.
    let expiry = raw.expiry_time().map_or(3600, |e| e.as_seconds());
    let expires_at = raw
        .data
        .timestamp
        .as_unix_timestamp()
        .checked_add(expiry)
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(i64::MAX);
    Ok(DecodedInvoice {
        payment_hash,
        amount_msat,
        description,
        expires_at,
        payee: payee.0.to_string(),
    })
}

/// The backend the config names.
pub async fn open(
    config: &crate::config::Config,
    store: crate::store::Store,
    master: &crate::custody::master_key::MasterKey,
) -> anyhow::Result<Arc<dyn Backend>> {
    use crate::config::LightningBackend;
    let l = &config.lightning;
    Ok(match l.backend {
        LightningBackend::Dev => Arc::new(dev::DevWallet::open(store, master).await?),
        LightningBackend::Lnbits => Arc::new(lnbits::Lnbits::new(l)?),
        LightningBackend::Lnd => Arc::new(lnd::Lnd::new(l)?),
    })
}
