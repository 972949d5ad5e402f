//! Settlement: learning that invoices were paid and doing what each pays for, once.
//!
//! The worker looks at open invoices every `lightning.poll_seconds` (and at once when
//! the backend pushes a settlement, a pay page saw one, or a deposit was made). A paid
//! invoice is settled in one transaction with its effect: a held message moves from
//! Requests to INBOX carrying its payment proof, a deposit is credited, a relay
//! invoice's recipients are credited. The invoice row's state change is the guard, so
//! two nodes (or the worker and a pay page) never settle one twice. Held messages past
//! their hold window are deleted unpaid.

use super::{Paywall, Result, parse_hash};
use crate::lightning::InvoiceState;
use crate::lnmp::{Message, PaymentProof};
use crate::store::invoices::{InvoiceRow, Purpose};
use crate::store::ledger::{self, Account, Posting};
use crate::store::{self, contacts, held, invoices};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many open invoices one sweep looks at: the newest half of it, and as many older
/// ones from a cursor that walks down through the rest, sweep after sweep, so neither
/// a burst of new invoices nor a backlog of old ones hides a payment.
const SWEEP_BATCH: i64 = 500;
/// An invoice some backends keep reporting as open after it expired is given up this
/// long after its expiry (a payment in flight at expiry has landed by then).
const EXPIRY_GRACE: i64 = 120;
/// Settled invoices and finished holds are forgotten after this long.
const KEEP: i64 = 30 * 86_400;

/// The ledger entries of money received: the operator's fee, the rest to each user.
pub(super) fn income(key: String, shares: &[(i64, i64)], fee_percent: u8, memo: String) -> Posting {
    let mut entries = Vec::new();
    let mut total = 0i64;
    let mut fees = 0i64;
    for (user, msat) in shares {
        let fee = msat.saturating_mul(i64::from(fee_percent)) / 100;
        entries.push((Account::User(*user), msat - fee));
        fees += fee;
        total += msat;
    }
    if fees > 0 {
        entries.push((Account::Fees, fees));
    }
    entries.push((Account::Lightning, -total));
    Posting {
        key,
        kind: ledger::Kind::MailIncome,
        memo,
        entries,
    }
}

/// Does what paying `invoice` pays for, once. `amount_msat` is what the backend says
/// was paid (at least the invoice's amount).
pub async fn settle(
    paywall: &Paywall,
    invoice: &InvoiceRow,
    preimage: [u8; 32],
    amount_msat: u64,
) -> Result<()> {
    let store = paywall.store().clone();
    let paid = i64::try_from(amount_msat)
        .unwrap_or(i64::MAX)
        .max(invoice.amount_msat);
    let preimage_hex = hex::encode(preimage);
    let key = format!("settle:{}", invoice.payment_hash);
    let fee_percent = paywall.settings.fee_percent;
    let id = invoice.id;
    match invoice.purpose {
        Purpose::Deposit | Purpose::Relay => {
            let posting = if invoice.purpose == Purpose::Deposit {
                let user = invoice.user_id.unwrap_or(0);
                Posting {
                    key,
                    kind: ledger::Kind::Deposit,
                    memo: "deposit".into(),
                    entries: vec![(Account::Lightning, -paid), (Account::User(user), paid)],
                }
            } else {
                income(
                    key,
                    &invoice.shares(),
                    fee_percent,
                    "paid LNMP message".into(),
                )
            };
            store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        if invoices::settle_in(c, id, &preimage_hex).await? {
                            ledger::post_in(c, &posting).await.map_err(ledger_error)?;
                        }
                        Ok(())
                    })
                }))
                .await?;
        }
        Purpose::Held => {
            let Some(held_id) = invoice.held_id else {
                return Ok(());
            };
            let (user_id, message_id) = {
                let mut c = store
                    .pool()
                    .acquire()
                    .await
                    .map_err(store::StoreError::from)?;
                match held::by_id_in(&mut c, held_id).await? {
                    Some(h) => (h.user_id, h.message_id),
                    None => return Ok(()),
                }
            };
            // The message as it is delivered: with its payment proof, which is not
            // covered by its id or signature (docs/PROTOCOL.md §8).
            let body: Option<String> =
                sqlx::query_scalar("SELECT body FROM inbox WHERE user_id = $1 AND message_id = $2")
                    .bind(user_id)
                    .bind(&message_id)
                    .fetch_optional(store.pool())
                    .await
                    .map_err(store::StoreError::from)?;
            let proof = PaymentProof {
                preimage,
                amount: u64::try_from(paid).unwrap_or(0) / 1000,
                route: None,
            };
            let message = body
                .as_deref()
                .and_then(|b| {
                    Message::from_json(b.as_bytes(), &crate::lnmp::Limits::default()).ok()
                })
                .map(|mut m| {
                    m.payment = Some(proof);
                    m
                });
            let json = message.as_ref().map(Message::to_json);
            let posting = income(key, &[(user_id, paid)], fee_percent, "paid email".into());
            let acquaint = paywall.settings.payer_becomes_acquaintance;
            let relay = paywall.relay.get().cloned();
            let retention = paywall.settings.relay_retention.map(|r| r.as_secs() as i64);
            let for_relay = message.clone().zip(json.clone());
            let released = store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        if !invoices::settle_in(c, id, &preimage_hex).await? {
                            return Ok(false);
                        }
                        ledger::post_in(c, &posting).await.map_err(ledger_error)?;
                        // Paid after the user let it in, refused it, or its window
                        // ended: the payment is the user's all the same (the credit
                        // above stands); there is nothing left to deliver.
                        let Some(h) = held::by_id_in(c, held_id).await? else {
                            return Ok(false);
                        };
                        let Some(json) = json else {
                            tracing::error!(held = held_id, "paid held mail has no stored body");
                            return Ok(false);
                        };
                        if !held::release_in(c, &h, &json).await? {
                            tracing::warn!(
                                held = held_id,
                                state = h.state.as_str(),
                                "payment for mail no longer held; credited"
                            );
                            return Ok(false);
                        }
                        if acquaint {
                            contacts::add_in(
                                c,
                                h.user_id,
                                &h.sender,
                                contacts::Level::Acquaintance,
                            )
                            .await?;
                        }
                        // Now it is the user's like any delivered message: in the relay's
                        // store for their LNMP clients.
                        if let (Some(retention), Some((m, j))) = (retention, for_relay) {
                            let now = store::now();
                            let incoming = store::relay::Incoming {
                                message: m,
                                json: j,
                                received_at: now,
                                expires_at: now.saturating_add(retention),
                                local_recipients: Vec::new(),
                                legacy_recipients: Vec::new(),
                                file_in_inbox: false,
                                redeem: None,
                            };
                            store::relay::insert_in(c, &incoming).await?;
                        }
                        Ok(true)
                    })
                }))
                .await?;
            if released {
                tracing::info!(user = user_id, message = %message_id, sats = paid / 1000, "held mail paid and delivered");
                paywall.store().mail_changed(user_id).await;
                if let (Some(relay), Some(m)) = (relay, message) {
                    let j = m.to_json();
                    relay.announce(m, j);
                }
            }
        }
    }
    Ok(())
}

pub(super) fn ledger_error(e: ledger::LedgerError) -> store::StoreError {
    match e {
        ledger::LedgerError::Store(e) => e,
        other => store::StoreError::Conflict(other.to_string()),
    }
}

/// One pass: settle what was paid, give up invoices long expired, delete held mail
/// past its window. Returns how many invoices were settled.
pub async fn sweep(paywall: &Paywall) -> Result<usize> {
    let now = store::now();
    let mut settled = 0;
    let newest = invoices::open(paywall.store(), i64::MAX, SWEEP_BATCH / 2).await?;
    let below = paywall
        .sweep_cursor
        .load(std::sync::atomic::Ordering::Relaxed)
        .min(newest.last().map_or(i64::MAX, |i| i.id));
    let older = invoices::open(paywall.store(), below, SWEEP_BATCH / 2).await?;
    // Start over from the top once the cursor has walked through everything.
    let next = if (older.len() as i64) < SWEEP_BATCH / 2 {
        i64::MAX
    } else {
        older.last().map_or(i64::MAX, |i| i.id)
    };
    paywall
        .sweep_cursor
        .store(next, std::sync::atomic::Ordering::Relaxed);
    for invoice in newest.into_iter().chain(older) {
        let Ok(hash) = parse_hash(&invoice.payment_hash) else {
            tracing::error!(
                invoice = invoice.id,
                "an invoice with a malformed hash; given up"
            );
            invoices::expire(paywall.store(), invoice.id).await?;
            continue;
        };
        let result = match paywall.backend.invoice_state(&hash).await {
            Ok(InvoiceState::Settled {
                preimage,
                amount_msat,
            }) => {
                settled += 1;
                settle(paywall, &invoice, preimage, amount_msat).await
            }
            Ok(InvoiceState::Canceled) | Err(crate::lightning::LightningError::UnknownInvoice) => {
                invoices::expire(paywall.store(), invoice.id)
                    .await
                    .map_err(Into::into)
            }
            Ok(InvoiceState::Open | InvoiceState::Accepted)
                if invoice.expires_at + EXPIRY_GRACE < now =>
            {
                invoices::expire(paywall.store(), invoice.id)
                    .await
                    .map_err(Into::into)
            }
            Ok(_) => Ok(()),
            Err(e @ crate::lightning::LightningError::Unreachable(_)) => {
                tracing::warn!(error = %e, backend = paywall.backend.name(), "cannot check invoices");
                // The backend is down: the rest would fail the same way.
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, invoice = invoice.id, "cannot check an invoice");
                Ok(())
            }
        };
        // One bad row must not stall the others (nor the expiries below).
        if let Err(e) = result {
            tracing::error!(error = %e, invoice = invoice.id, "cannot settle an invoice");
        }
    }
    if store::outbox::fail_unpaid(paywall.store(), now).await? > 0 {
        // Their senders are told (outbound/report.rs).
        paywall.store().work_queued();
    }
    for h in held::due(paywall.store(), now, SWEEP_BATCH).await? {
        let user = h.user_id;
        let gone = paywall
            .store()
            .write(Box::new(move |c| {
                Box::pin(async move { held::expire_in(c, &h).await })
            }))
            .await?;
        if gone {
            tracing::info!(user, "held mail expired unpaid and was deleted");
            paywall.store().mail_changed(user).await;
        }
    }
    Ok(settled)
}

/// The settle worker: sweeps until `shutdown`.
pub async fn run(paywall: std::sync::Arc<Paywall>, shutdown: CancellationToken) {
    let mut pushed = paywall.backend.settlements();
    let mut last_prune = 0i64;
    loop {
        if let Err(e) = sweep(&paywall).await {
            tracing::warn!(error = %e, "paywall sweep failed");
        }
        let now = store::now();
        if now - last_prune > 3600 {
            last_prune = now;
            let pruned = async {
                let a = invoices::prune(paywall.store(), now - KEEP).await?;
                let b = held::prune(paywall.store(), now - KEEP).await?;
                let window = paywall.settings.request_window.as_secs() as i64;
                let c = held::prune_requests(paywall.store(), now - window).await?;
                // The dev wallet's own rows (harmless where another backend is used).
                let d = store::dev_wallet::prune(paywall.store(), now - KEEP).await?;
                Ok::<_, store::StoreError>(a + b + c + d)
            };
            if let Err(e) = pruned.await {
                tracing::warn!(error = %e, "cannot prune settled payments");
            }
        }
        let poll = paywall.settings.poll.max(Duration::from_millis(200));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
            _ = paywall.wake.notified() => {}
            Some(_) = async {
                match pushed.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
