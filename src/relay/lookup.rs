//! The HTTPS address lookup, client side (docs/PROTOCOL.md §4): fetch the document the
//! address's host publishes, refuse redirects, and check it against the address.

use crate::lnmp::{Address, Limits, LookupDocument};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0} has no relay host to look it up at")]
    NoHost(String),
    #[error("lookup of {address} failed: {reason}")]
    Http { address: String, reason: String },
    #[error("{address} is unknown at its host")]
    Unknown { address: String },
    #[error("lookup of {address} answered a document that does not fit: {reason}")]
    Invalid { address: String, reason: String },
}

pub struct Resolver {
    http: reqwest::Client,
    /// Replaces `https://<host>` for every lookup (tests, or a host reached another way).
    base_override: Option<String>,
}

/// The largest lookup document read (docs/PROTOCOL.md §10).
const MAX_DOCUMENT: usize = 64 * 1024;

impl Resolver {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        base_override: Option<String>,
    ) -> Result<Resolver, LookupError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| LookupError::Http {
                address: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Resolver {
            http,
            base_override,
        })
    }

    /// The verified lookup document of `address`.
    pub async fn resolve(&self, address: &Address) -> Result<LookupDocument, LookupError> {
        let a = address.to_string();
        let host = address
            .relay()
            .ok_or_else(|| LookupError::NoHost(a.clone()))?;
        let base = self
            .base_override
            .clone()
            .unwrap_or_else(|| format!("https://{host}"));
        let url = format!(
            "{}/.well-known/lnmp.json?name={}",
            base.trim_end_matches('/'),
            address.username()
        );
        let http_err = |reason: String| LookupError::Http {
            address: a.clone(),
            reason,
        };
        let mut resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_err(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(LookupError::Unknown { address: a }),
            s => return Err(http_err(format!("HTTP status {s}"))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| http_err(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(http_err("document larger than 64 KiB".into()));
            }
        }
        let invalid = |reason: String| LookupError::Invalid {
            address: a.clone(),
            reason,
        };
        let doc = LookupDocument::from_json(&body, &Limits::default())
            .map_err(|e| invalid(e.to_string()))?;
        doc.verify(address).map_err(|e| invalid(e.to_string()))?;
        Ok(doc)
    }
}

/// A recipient as a person types it: an LNMP address, or a bare public key (whose
/// relays must then be given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Address(Address),
    Key(crate::lnmp::PublicKey),
}

impl std::str::FromStr for Recipient {
    type Err = String;
    fn from_str(s: &str) -> Result<Recipient, String> {
        let s = s.trim();
        if s.len() == 64 && !s.contains('#') {
            return s
                .parse()
                .map(Recipient::Key)
                .map_err(|e: crate::lnmp::Error| e.to_string());
        }
        s.parse()
            .map(Recipient::Address)
            .map_err(|e: crate::lnmp::Error| {
                format!("{s:?} is neither an LNMP address nor a public key: {e}")
            })
    }
}

impl Resolver {
    /// The keys of `to` and the relays to publish to: each address's published relays,
    /// plus `extra` (which bare keys need).
    pub async fn route(
        &self,
        to: &[Recipient],
        extra: &[String],
    ) -> Result<(Vec<crate::lnmp::PublicKey>, Vec<String>), LookupError> {
        let mut keys = Vec::new();
        let mut relays: Vec<String> = extra.to_vec();
        for r in to {
            let key = match r {
                Recipient::Key(k) => *k,
                Recipient::Address(a) => {
                    let doc = self.resolve(a).await?;
                    for url in doc.relays {
                        if !relays.contains(&url) {
                            relays.push(url);
                        }
                    }
                    doc.pubkey
                }
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok((keys, relays))
    }
}
