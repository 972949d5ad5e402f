//! Where mail for a domain goes: its MX hosts in preference order (RFC 5321 5.1),
//! the domain itself when it has no MX (implicit MX), nowhere when it publishes a
//! null MX (RFC 7505) or does not exist. Looked up through the configured resolver.

use mail_auth::{DnsError, Error as DnsFailure, MessageAuthenticator};
use std::net::IpAddr;

/// Why no host could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// The domain does not take mail: return the message.
    #[error("{0}")]
    Permanent(String),
    /// DNS did not answer well enough to decide: try again later.
    #[error("{0}")]
    Temporary(String),
}

/// A host to try, with its addresses (IPv4 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

type NoCache<V> = mail_auth::common::cache::NoCache<Box<str>, V>;

fn not_found(e: &DnsFailure) -> Option<u16> {
    match e {
        DnsFailure::Dns(DnsError::RecordNotFound(code)) => Some(u16::from(*code)),
        _ => None,
    }
}

/// NXDOMAIN.
const NX_DOMAIN: u16 = 3;

/// The hosts mail for `domain` goes to, in order.
pub async fn hosts(dns: &MessageAuthenticator, domain: &str) -> Result<Vec<Host>, MxError> {
    let mut implicit = false;
    let names: Vec<String> = match dns.mx_lookup(domain, None::<&NoCache<_>>).await {
        Ok(set) => {
            let mut names = Vec::new();
            for mx in set.rrset.iter() {
                for exchange in mx.exchanges.iter() {
                    let name = exchange.trim_end_matches('.').to_ascii_lowercase();
                    if name.is_empty() {
                        // "MX 0 ." : the domain accepts no mail.
                        if set.rrset.len() == 1 && mx.exchanges.len() == 1 {
                            return Err(MxError::Permanent(format!(
                                "{domain} accepts no mail (null MX)"
                            )));
                        }
                        continue;
                    }
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            if names.is_empty() {
                implicit = true;
                vec![domain.to_ascii_lowercase()]
            } else {
                names
            }
        }
        Err(e) if not_found(&e) == Some(NX_DOMAIN) => {
            return Err(MxError::Permanent(format!("{domain}: no such domain")));
        }
        // The name exists without MX records: the domain is its own mail host.
        Err(e) if not_found(&e).is_some() => {
            implicit = true;
            vec![domain.to_ascii_lowercase()]
        }
        Err(e) => {
            return Err(MxError::Temporary(format!("MX lookup for {domain}: {e}")));
        }
    };
    let mut hosts = Vec::new();
    let mut last_problem = None;
    for name in names {
        let mut addresses: Vec<IpAddr> = Vec::new();
        match dns.ipv4_lookup(name.as_str(), None::<&NoCache<_>>).await {
            Ok(set) => addresses.extend(set.rrset.iter().map(|a| IpAddr::V4(*a))),
            Err(e) if not_found(&e).is_some() => {}
            Err(e) => last_problem = Some(format!("address lookup for {name}: {e}")),
        }
        match dns.ipv6_lookup(name.as_str(), None::<&NoCache<_>>).await {
            Ok(set) => addresses.extend(set.rrset.iter().map(|a| IpAddr::V6(*a))),
            Err(e) if not_found(&e).is_some() => {}
            Err(e) => last_problem = Some(format!("address lookup for {name}: {e}")),
        }
        if !addresses.is_empty() {
            hosts.push(Host { name, addresses });
        }
    }
    if hosts.is_empty() {
        return Err(match last_problem {
            Some(p) => MxError::Temporary(p),
            // RFC 5321 5.1: no MX and no address means the domain takes no mail.
            None if implicit => MxError::Permanent(format!("{domain} has no MX and no address")),
            None => MxError::Temporary(format!("no address for the mail hosts of {domain}")),
        });
    }
    Ok(hosts)
}
