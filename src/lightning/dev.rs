//! The embedded dev wallet: a Lightning node of its own, with no channels, that issues
//! real signed BOLT11 invoices on regtest and keeps them in the database
//! (`dev_invoices`, see [`crate::store::dev_wallet`]). It owns the node's secret key,
//! sealed under the master key in the settings. `lnmp-bridge dev pay`, another process
//! on the same database, "pays" one of these invoices by marking it settled; it pays
//! nothing else, since the wallet has no route anywhere. No money moves.

use super::{
    Backend, Description, Invoice, InvoiceRequest, InvoiceState, LightningError, Paid, Result,
    decode,
};
use crate::custody::master_key::{MasterKey, Purpose};
use crate::store::dev_wallet::{self as db, DevInvoiceRow, NewDevInvoice};
use crate::store::{self, Store, settings};
use futures_util::future::BoxFuture;
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use rand_core::{OsRng, RngCore};
use secp256k1::hashes::{Hash, sha256};
use secp256k1::{PublicKey, Secp256k1, SecretKey};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use std::time::Duration;
use zeroize::Zeroizing;

static SECP: LazyLock<Secp256k1<secp256k1::All>> = LazyLock::new(Secp256k1::new);

/// The settings row holding the sealed node key, and the record it is sealed to.
const KEY_SETTING: &str = "dev_wallet_node_key";
const KEY_AAD: &[u8] = b"settings:dev_wallet_node_key";

/// How often, and how long, [`DevWallet::pay`] waits for the daemon to settle a hold
/// invoice it accepted.
const HOLD_POLL: Duration = Duration::from_millis(200);
const HOLD_WAIT: Duration = Duration::from_secs(60);

/// BOLT11's usual final CLTV delta; nothing enforces it here, but real payers read it.
const MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 144;

/// The embedded wallet. See the module documentation.
pub struct DevWallet {
    store: Store,
    /// The node's secret key, kept as bytes that are wiped on drop; the secp256k1 key is
    /// made from them only while signing.
    secret: Zeroizing<[u8; 32]>,
    node_id: PublicKey,
}

/// What presenting an invoice to [`DevWallet::present`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// An ordinary invoice: paid, and here is the proof.
    Settled {
        payment_hash: [u8; 32],
        preimage: [u8; 32],
        amount_msat: u64,
    },
    /// A hold invoice: the funds are locked and the daemon that issued it settles or
    /// cancels it.
    Accepted {
        payment_hash: [u8; 32],
        amount_msat: u64,
    },
}

impl DevWallet {
    /// Opens the wallet on `store`. The first open anywhere makes the node key; a
    /// process racing it on the same database ends up with the same key, as only the
    /// first sealed key is kept.
    pub async fn open(store: Store, master: &MasterKey) -> Result<DevWallet> {
        let sealed = match settings::get(&store, KEY_SETTING).await? {
            Some(sealed) => sealed,
            None => {
                let fresh = new_secret_key();
                let sealed = master.seal(Purpose::DevNode, KEY_AAD, fresh.as_ref());
                settings::set_once(&store, KEY_SETTING, sealed).await?
            }
        };
        let opened = master
            .open(Purpose::DevNode, KEY_AAD, &sealed)
            .map_err(|e| {
                LightningError::Protocol(format!(
                    "the dev wallet's node key (setting {KEY_SETTING}) cannot be opened with this master key: {e}"
                ))
            })?;
        if opened.len() != 32 {
            return Err(LightningError::Protocol(format!(
                "the dev wallet's node key (setting {KEY_SETTING}) is not 32 bytes"
            )));
        }
        // Copied straight into wiped memory, not through a temporary array.
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&opened);
        let mut key = secret_key(&secret)?;
        let node_id = PublicKey::from_secret_key(&SECP, &key);
        key.non_secure_erase();
        Ok(DevWallet {
            store,
            secret,
            node_id,
        })
    }

    /// The node's public key, hex (the payee of every invoice it issues).
    pub fn node_id(&self) -> String {
        self.node_id.to_string()
    }

    /// Signs a BOLT11 invoice for `payment_hash` and records it.
    async fn issue(
        &self,
        payment_hash: [u8; 32],
        preimage: Option<[u8; 32]>,
        request: &InvoiceRequest,
    ) -> Result<Invoice> {
        if request.amount_msat == 0 {
            return Err(LightningError::InvalidInvoice(
                "the dev wallet issues invoices only with an amount".into(),
            ));
        }
        let amount = i64::try_from(request.amount_msat).map_err(|_| {
            LightningError::InvalidInvoice(format!(
                "amount {} msat is too large",
                request.amount_msat
            ))
        })?;
        let now = store::now();
        let mut key = secret_key(&self.secret)?;
        let built = build_bolt11(&key, payment_hash, request, now);
        key.non_secure_erase();
        let (bolt11, expires_at) = built?;
        db::insert(
            &self.store,
            NewDevInvoice {
                payment_hash: hex::encode(payment_hash),
                preimage: preimage.map(hex::encode),
                bolt11: bolt11.clone(),
                amount_msat: amount,
                hold: preimage.is_none(),
                created_at: now,
                expires_at,
            },
        )
        .await?;
        Ok(Invoice {
            bolt11,
            payment_hash,
            amount_msat: request.amount_msat,
            expires_at,
        })
    }

    /// Pays `bolt11` as the payer's side would: see [`Presented`]. Only this wallet's
    /// own invoices can be paid (it has no route to anyone else), each once, and not
    /// after it expired.
    pub async fn present(&self, bolt11: &str) -> Result<Presented> {
        let no_route = || {
            LightningError::PaymentFailed(
                "the dev wallet pays only invoices it issued (no route)".into(),
            )
        };
        let invoice = decode(bolt11)?;
        if invoice.payee != self.node_id.to_string() {
            return Err(no_route());
        }
        let hash = hex::encode(invoice.payment_hash);
        let row = db::get(&self.store, &hash).await?.ok_or_else(no_route)?;
        let amount_msat = row_amount(&row)?;
        if invoice.amount_msat != Some(amount_msat) {
            return Err(LightningError::InvalidInvoice(format!(
                "invoice {hash} asks for {:?} msat but was issued for {amount_msat}",
                invoice.amount_msat
            )));
        }
        let now = store::now();
        if row.hold != 0 {
            if db::accept_open_hold(&self.store, &hash, now).await? {
                return Ok(Presented::Accepted {
                    payment_hash: invoice.payment_hash,
                    amount_msat,
                });
            }
        } else if db::settle_open(&self.store, &hash, now).await? {
            let preimage = row_preimage(&row)?.ok_or_else(|| {
                LightningError::Protocol(format!("dev invoice {hash} has no preimage"))
            })?;
            return Ok(Presented::Settled {
                payment_hash: invoice.payment_hash,
                preimage,
                amount_msat,
            });
        }
        // The conditional update changed nothing: read again to say why.
        let row = db::get(&self.store, &hash).await?.ok_or_else(no_route)?;
        Err(LightningError::PaymentFailed(match row.state.as_str() {
            "settled" => format!("invoice {hash} is already paid"),
            "accepted" => format!("invoice {hash} is already paid (held, waiting for the payee)"),
            "canceled" => format!("invoice {hash} was canceled"),
            _ if row.expires_at <= now => format!("invoice {hash} expired"),
            other => format!("invoice {hash} cannot be paid in state {other}"),
        }))
    }

    /// Waits for the daemon to settle or cancel a hold invoice this process accepted.
    /// If it does neither in [`HOLD_WAIT`], the payment is given up and the invoice
    /// cancelled, as a real HTLC that times out fails back: both sides then agree.
    async fn wait_for_hold(&self, payment_hash: [u8; 32], amount_msat: u64) -> Result<Paid> {
        let hash = hex::encode(payment_hash);
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        loop {
            let row = db::get(&self.store, &hash)
                .await?
                .ok_or(LightningError::UnknownInvoice)?;
            match row.state.as_str() {
                "settled" => {
                    let preimage = row_preimage(&row)?.ok_or_else(|| {
                        LightningError::Protocol(format!(
                            "settled dev invoice {hash} has no preimage"
                        ))
                    })?;
                    return Ok(Paid {
                        preimage,
                        amount_msat,
                        fee_msat: 0,
                    });
                }
                "canceled" => {
                    return Err(LightningError::PaymentFailed(format!(
                        "the payee canceled hold invoice {hash}"
                    )));
                }
                _ => {}
            }
            // If the cancel changes nothing, the state changed just now: the next round
            // reads how.
            if tokio::time::Instant::now() >= deadline && db::cancel(&self.store, &hash).await? {
                return Err(LightningError::PaymentFailed(format!(
                    "hold invoice {hash} was neither settled nor canceled within {} s; gave up and canceled it",
                    HOLD_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(HOLD_POLL).await;
        }
    }

    async fn state(&self, payment_hash: &[u8; 32]) -> Result<InvoiceState> {
        let hash = hex::encode(payment_hash);
        let row = db::get(&self.store, &hash)
            .await?
            .ok_or(LightningError::UnknownInvoice)?;
        Ok(match row.state.as_str() {
            "open" if row.expires_at <= store::now() => InvoiceState::Canceled,
            "open" => InvoiceState::Open,
            "accepted" => InvoiceState::Accepted,
            "settled" => InvoiceState::Settled {
                preimage: row_preimage(&row)?.ok_or_else(|| {
                    LightningError::Protocol(format!("settled dev invoice {hash} has no preimage"))
                })?,
                amount_msat: row_amount(&row)?,
            },
            "canceled" => InvoiceState::Canceled,
            other => {
                return Err(LightningError::Protocol(format!(
                    "dev invoice {hash} is in unknown state {other:?}"
                )));
            }
        })
    }

    async fn settle(&self, preimage: &[u8; 32]) -> Result<()> {
        let payment_hash: [u8; 32] = Sha256::digest(preimage).into();
        let hash = hex::encode(payment_hash);
        if db::settle_accepted(&self.store, &hash, &hex::encode(preimage), store::now()).await? {
            return Ok(());
        }
        // A wrong preimage hashes to no invoice of ours.
        let row = db::get(&self.store, &hash)
            .await?
            .ok_or(LightningError::UnknownInvoice)?;
        Err(LightningError::Refused(if row.hold == 0 {
            format!("invoice {hash} is not a hold invoice")
        } else {
            format!(
                "hold invoice {hash} is {}, not accepted: only a paid hold invoice can be settled",
                row.state
            )
        }))
    }

    async fn cancel(&self, payment_hash: &[u8; 32]) -> Result<()> {
        let hash = hex::encode(payment_hash);
        if db::cancel(&self.store, &hash).await? {
            return Ok(());
        }
        let row = db::get(&self.store, &hash)
            .await?
            .ok_or(LightningError::UnknownInvoice)?;
        match row.state.as_str() {
            // Cancelling twice changes nothing, as on LND.
            "canceled" => Ok(()),
            state => Err(LightningError::Refused(format!(
                "invoice {hash} is {state} and can no longer be canceled"
            ))),
        }
    }
}

impl Backend for DevWallet {
    fn name(&self) -> &'static str {
        "dev"
    }

    /// The node key was opened with the master key when the wallet opened; this checks
    /// the database still answers and still holds that key, and that it is usable.
    fn health(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            if settings::get(&self.store, KEY_SETTING).await?.is_none() {
                return Err(LightningError::Protocol(format!(
                    "the dev wallet's node key (setting {KEY_SETTING}) is gone from the database"
                )));
            }
            let mut key = secret_key(&self.secret)?;
            let node_id = PublicKey::from_secret_key(&SECP, &key);
            key.non_secure_erase();
            if node_id != self.node_id {
                return Err(LightningError::Protocol(
                    "the dev wallet's node key does not match its node id".into(),
                ));
            }
            Ok(format!("dev wallet node {}", self.node_id()))
        })
    }

    fn create_invoice<'a>(&'a self, request: &'a InvoiceRequest) -> BoxFuture<'a, Result<Invoice>> {
        Box::pin(async move {
            let mut preimage = [0u8; 32];
            OsRng.fill_bytes(&mut preimage);
            let payment_hash: [u8; 32] = Sha256::digest(preimage).into();
            self.issue(payment_hash, Some(preimage), request).await
        })
    }

    fn invoice_state<'a>(
        &'a self,
        payment_hash: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<InvoiceState>> {
        Box::pin(self.state(payment_hash))
    }

    fn pay<'a>(&'a self, bolt11: &'a str, _max_fee_msat: u64) -> BoxFuture<'a, Result<Paid>> {
        Box::pin(async move {
            match self.present(bolt11).await? {
                Presented::Settled {
                    preimage,
                    amount_msat,
                    ..
                } => Ok(Paid {
                    preimage,
                    amount_msat,
                    fee_msat: 0,
                }),
                Presented::Accepted {
                    payment_hash,
                    amount_msat,
                } => self.wait_for_hold(payment_hash, amount_msat).await,
            }
        })
    }

    fn create_hold_invoice<'a>(
        &'a self,
        payment_hash: [u8; 32],
        request: &'a InvoiceRequest,
    ) -> BoxFuture<'a, Result<Invoice>> {
        Box::pin(self.issue(payment_hash, None, request))
    }

    fn settle_hold<'a>(&'a self, preimage: &'a [u8; 32]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.settle(preimage))
    }

    fn cancel_hold<'a>(&'a self, payment_hash: &'a [u8; 32]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cancel(payment_hash))
    }
}

/// 32 random bytes that make a valid secp256k1 secret key (nearly all do).
fn new_secret_key() -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    loop {
        OsRng.fill_bytes(bytes.as_mut());
        if let Ok(mut k) = SecretKey::from_slice(bytes.as_ref()) {
            k.non_secure_erase();
            return bytes;
        }
    }
}

fn secret_key(bytes: &[u8; 32]) -> Result<SecretKey> {
    SecretKey::from_slice(bytes).map_err(|_| {
        LightningError::Protocol(format!(
            "the dev wallet's node key (setting {KEY_SETTING}) is not a valid secp256k1 key"
        ))
    })
}

/// A signed regtest BOLT11 invoice for `payment_hash`, dated `now`, and when it expires.
pub(crate) fn build_bolt11(
    key: &SecretKey,
    payment_hash: [u8; 32],
    request: &InvoiceRequest,
    now: i64,
) -> Result<(String, i64)> {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let builder = InvoiceBuilder::new(Currency::Regtest);
    let builder = match &request.description {
        Description::Memo(memo) => builder.description(memo.clone()),
        Description::Hash(h) => builder.description_hash(sha256::Hash::from_byte_array(*h)),
    };
    // BOLT11 counts whole seconds.
    let expiry = request.expiry.as_secs();
    let invoice = builder
        .payment_hash(sha256::Hash::from_byte_array(payment_hash))
        .payment_secret(PaymentSecret(secret))
        .min_final_cltv_expiry_delta(MIN_FINAL_CLTV_EXPIRY_DELTA)
        .amount_milli_satoshis(request.amount_msat)
        .expiry_time(Duration::from_secs(expiry))
        .duration_since_epoch(Duration::from_secs(now.max(0) as u64))
        .build_signed(|message| SECP.sign_ecdsa_recoverable(message, key))
        .map_err(|e| LightningError::InvalidInvoice(format!("cannot make the invoice: {e}")))?;
    let expires_at = now.saturating_add(i64::try_from(expiry).unwrap_or(i64::MAX));
    Ok((invoice.to_string(), expires_at))
}

fn row_amount(row: &DevInvoiceRow) -> Result<u64> {
    u64::try_from(row.amount_msat).map_err(|_| {
        LightningError::Protocol(format!(
            "dev invoice {} has a negative amount",
            row.payment_hash
        ))
    })
}

fn row_preimage(row: &DevInvoiceRow) -> Result<Option<[u8; 32]>> {
    let Some(text) = &row.preimage else {
        return Ok(None);
    };
    let mut preimage = [0u8; 32];
    hex::decode_to_slice(text, &mut preimage).map_err(|_| {
        LightningError::Protocol(format!(
            "dev invoice {} has a malformed preimage",
            row.payment_hash
        ))
    })?;
    Ok(Some(preimage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::each_backend;

    fn memo(amount_msat: u64, expiry: u64) -> InvoiceRequest {
        InvoiceRequest {
            amount_msat,
            description: Description::Memo("a message for alice".into()),
            expiry: Duration::from_secs(expiry),
        }
    }

    fn sha(preimage: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(preimage).into()
    }

    #[tokio::test]
    async fn the_node_key_is_made_once_and_sealed() {
        each_backend(|store| async move {
            let master = MasterKey::generate();
            let a = DevWallet::open(store.clone(), &master).await.unwrap();
            let b = DevWallet::open(store.clone(), &master).await.unwrap();
            assert_eq!(a.node_id(), b.node_id());
            assert_eq!(
                a.health().await.unwrap(),
                format!("dev wallet node {}", a.node_id())
            );
            let sealed = settings::get(&store, KEY_SETTING).await.unwrap().unwrap();
            assert!(!sealed.windows(32).any(|w| w == &a.secret[..]));
            assert!(matches!(
                DevWallet::open(store.clone(), &MasterKey::generate()).await,
                Err(LightningError::Protocol(_))
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn issue_present_settle_once() {
        each_backend(|store| async move {
            let master = MasterKey::generate();
            let wallet = DevWallet::open(store.clone(), &master).await.unwrap();
            let invoice = wallet.create_invoice(&memo(21_000, 600)).await.unwrap();
            assert!(invoice.bolt11.starts_with("lnbcrt"));
            assert_eq!(invoice.amount_msat, 21_000);
            let decoded = decode(&invoice.bolt11).unwrap();
            assert_eq!(decoded.payment_hash, invoice.payment_hash);
            assert_eq!(decoded.amount_msat, Some(21_000));
            assert_eq!(decoded.payee, wallet.node_id());
            assert_eq!(decoded.expires_at, invoice.expires_at);
            assert_eq!(
                decoded.description,
                Description::Memo("a message for alice".into())
            );
            assert_eq!(
                wallet.invoice_state(&invoice.payment_hash).await.unwrap(),
                InvoiceState::Open
            );

            // `dev pay` is another process: another wallet handle on the same database.
            let payer = DevWallet::open(store.clone(), &master).await.unwrap();
            let presented = payer.present(&invoice.bolt11).await.unwrap();
            let Presented::Settled {
                preimage,
                amount_msat,
                payment_hash,
            } = presented
            else {
                panic!("an ordinary invoice settles: {presented:?}");
            };
            assert_eq!(sha(&preimage), invoice.payment_hash);
            assert_eq!(payment_hash, invoice.payment_hash);
            assert_eq!(amount_msat, 21_000);
            assert_eq!(
                wallet.invoice_state(&invoice.payment_hash).await.unwrap(),
                InvoiceState::Settled {
                    preimage,
                    amount_msat: 21_000
                }
            );
            let again = payer.present(&invoice.bolt11).await.unwrap_err();
            assert!(
                matches!(&again, LightningError::PaymentFailed(m) if m.contains("already paid")),
                "{again}"
            );
            assert!(matches!(
                wallet.pay(&invoice.bolt11, 0).await,
                Err(LightningError::PaymentFailed(_))
            ));
            assert!(matches!(
                wallet.invoice_state(&[7; 32]).await,
                Err(LightningError::UnknownInvoice)
            ));

            // Through the trait: a fresh invoice paid with `pay`.
            let second = wallet.create_invoice(&memo(5_000, 600)).await.unwrap();
            let paid = payer.pay(&second.bolt11.to_uppercase(), 10).await.unwrap();
            assert_eq!(sha(&paid.preimage), second.payment_hash);
            assert_eq!((paid.amount_msat, paid.fee_msat), (5_000, 0));
        })
        .await;
    }

    #[tokio::test]
    async fn expired_invoices_cannot_be_paid() {
        each_backend(|store| async move {
            let wallet = DevWallet::open(store, &MasterKey::generate())
                .await
                .unwrap();
            let invoice = wallet.create_invoice(&memo(1_000, 1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1100)).await;
            assert_eq!(
                wallet.invoice_state(&invoice.payment_hash).await.unwrap(),
                InvoiceState::Canceled
            );
            let e = wallet.present(&invoice.bolt11).await.unwrap_err();
            assert!(
                matches!(&e, LightningError::PaymentFailed(m) if m.contains("expired")),
                "{e}"
            );
            assert_eq!(
                wallet.invoice_state(&invoice.payment_hash).await.unwrap(),
                InvoiceState::Canceled
            );
        })
        .await;
    }

    #[tokio::test]
    async fn only_its_own_invoices_are_paid() {
        each_backend(|store| async move {
            let wallet = DevWallet::open(store.clone(), &MasterKey::generate())
                .await
                .unwrap();
            let ours = wallet.create_invoice(&memo(1_000, 600)).await.unwrap();
            // Another node's invoice for the very same payment hash.
            let mut other = SecretKey::from_slice(&[0x42; 32]).unwrap();
            let (forged, _) =
                build_bolt11(&other, ours.payment_hash, &memo(1_000, 600), store::now()).unwrap();
            other.non_secure_erase();
            let e = wallet.present(&forged).await.unwrap_err();
            assert!(
                matches!(&e, LightningError::PaymentFailed(m) if m.contains("no route")),
                "{e}"
            );
            // An invoice signed by our key but never recorded (another database).
            let key = secret_key(&wallet.secret).unwrap();
            let (stray, _) = build_bolt11(&key, [9; 32], &memo(1_000, 600), store::now()).unwrap();
            assert!(matches!(
                wallet.present(&stray).await,
                Err(LightningError::PaymentFailed(_))
            ));
            assert!(matches!(
                wallet.present("lnbcrt1garbage").await,
                Err(LightningError::InvalidInvoice(_))
            ));
            assert_eq!(
                wallet.invoice_state(&ours.payment_hash).await.unwrap(),
                InvoiceState::Open
            );
        })
        .await;
    }

    #[tokio::test]
    async fn hold_invoices() {
        each_backend(|store| async move {
            let master = MasterKey::generate();
            let wallet = DevWallet::open(store.clone(), &master).await.unwrap();
            let preimage = [0x11; 32];
            let hash = sha(&preimage);
            let description = InvoiceRequest {
                amount_msat: 3_000,
                description: Description::Hash([0x5a; 32]),
                expiry: Duration::from_secs(900),
            };
            let invoice = wallet
                .create_hold_invoice(hash, &description)
                .await
                .unwrap();
            assert_eq!(invoice.payment_hash, hash);
            let decoded = decode(&invoice.bolt11).unwrap();
            assert_eq!(decoded.description, Description::Hash([0x5a; 32]));
            assert_eq!(decoded.amount_msat, Some(3_000));
            assert_eq!(decoded.expires_at, invoice.expires_at);
            assert!(invoice.expires_at >= store::now() + 899);
            assert_eq!(
                wallet.invoice_state(&hash).await.unwrap(),
                InvoiceState::Open
            );
            // Not paid yet: nothing to settle.
            assert!(matches!(
                wallet.settle_hold(&preimage).await,
                Err(LightningError::Refused(_))
            ));

            let payer = DevWallet::open(store.clone(), &master).await.unwrap();
            assert_eq!(
                payer.present(&invoice.bolt11).await.unwrap(),
                Presented::Accepted {
                    payment_hash: hash,
                    amount_msat: 3_000
                }
            );
            assert_eq!(
                wallet.invoice_state(&hash).await.unwrap(),
                InvoiceState::Accepted
            );
            assert!(payer.present(&invoice.bolt11).await.is_err());
            assert!(matches!(
                wallet.settle_hold(&[0x12; 32]).await,
                Err(LightningError::UnknownInvoice)
            ));
            wallet.settle_hold(&preimage).await.unwrap();
            assert_eq!(
                wallet.invoice_state(&hash).await.unwrap(),
                InvoiceState::Settled {
                    preimage,
                    amount_msat: 3_000
                }
            );
            assert!(wallet.cancel_hold(&hash).await.is_err());

            // Cancelled while accepted: the payer is told so.
            let preimage2 = [0x22; 32];
            let hash2 = sha(&preimage2);
            let second = wallet
                .create_hold_invoice(hash2, &memo(4_000, 900))
                .await
                .unwrap();
            let paying = {
                let payer = DevWallet::open(store.clone(), &master).await.unwrap();
                let bolt11 = second.bolt11.clone();
                tokio::spawn(async move { payer.pay(&bolt11, 0).await })
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while wallet.invoice_state(&hash2).await.unwrap() != InvoiceState::Accepted {
                assert!(tokio::time::Instant::now() < deadline, "never accepted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            wallet.cancel_hold(&hash2).await.unwrap();
            wallet.cancel_hold(&hash2).await.unwrap();
            assert!(matches!(
                paying.await.unwrap(),
                Err(LightningError::PaymentFailed(_))
            ));
            assert_eq!(
                wallet.invoice_state(&hash2).await.unwrap(),
                InvoiceState::Canceled
            );

            // Settled while the payer waits: it gets the preimage.
            let preimage3 = [0x33; 32];
            let hash3 = sha(&preimage3);
            let third = wallet
                .create_hold_invoice(hash3, &memo(4_000, 900))
                .await
                .unwrap();
            let paying = {
                let payer = DevWallet::open(store.clone(), &master).await.unwrap();
                let bolt11 = third.bolt11.clone();
                tokio::spawn(async move { payer.pay(&bolt11, 0).await })
            };
            while wallet.invoice_state(&hash3).await.unwrap() != InvoiceState::Accepted {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            wallet.settle_hold(&preimage3).await.unwrap();
            let paid = paying.await.unwrap().unwrap();
            assert_eq!(paid.preimage, preimage3);
            assert_eq!(paid.amount_msat, 4_000);

            // An open hold invoice can be cancelled too, and then not paid.
            let hash4 = sha(&[0x44; 32]);
            let fourth = wallet
                .create_hold_invoice(hash4, &memo(1_000, 900))
                .await
                .unwrap();
            wallet.cancel_hold(&hash4).await.unwrap();
            let e = payer.present(&fourth.bolt11).await.unwrap_err();
            assert!(
                matches!(&e, LightningError::PaymentFailed(m) if m.contains("canceled")),
                "{e}"
            );
            assert!(matches!(
                wallet.cancel_hold(&[0x99; 32]).await,
                Err(LightningError::UnknownInvoice)
            ));
        })
        .await;
    }

    #[test]
    fn decode_reads_back_what_was_built() {
        let key = SecretKey::from_slice(&[0x07; 32]).unwrap();
        let request = InvoiceRequest {
            amount_msat: 123_456,
            description: Description::Hash([0xab; 32]),
            expiry: Duration::from_secs(3600),
        };
        let (bolt11, expires_at) = build_bolt11(&key, [0xcd; 32], &request, 1_700_000_000).unwrap();
        let d = decode(&format!("lightning:{bolt11}")).unwrap();
        assert_eq!(d.payment_hash, [0xcd; 32]);
        assert_eq!(d.amount_msat, Some(123_456));
        assert_eq!(d.description, Description::Hash([0xab; 32]));
        assert_eq!(d.expires_at, 1_700_003_600);
        assert_eq!(expires_at, 1_700_003_600);
        assert_eq!(d.payee, PublicKey::from_secret_key(&SECP, &key).to_string());
        // A flipped character breaks the checksum or the signature.
        let mut broken = bolt11.clone().into_bytes();
        let i = broken.len() - 10;
        broken[i] = if broken[i] == b'q' { b'p' } else { b'q' };
        assert!(decode(std::str::from_utf8(&broken).unwrap()).is_err());
    }
}
