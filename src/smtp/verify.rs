//! SPF, DKIM and DMARC for mail arriving at the MX (mail-auth), through the resolver
//! the config names, and what the config says a failure gets.

use crate::config::{DmarcFailure, Dns, OnFailure, Smtp};
use mail_auth::common::verify::VerifySignature;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult, dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `ip` or `ip:port` (port 53 by default); None if it is neither.
pub fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// Builds the authenticator on the configured name servers, or the system's.
pub fn authenticator(dns: &Dns) -> anyhow::Result<MessageAuthenticator> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(dns.timeout_seconds);
    opts.attempts = 2;
    if dns.nameservers.is_empty() {
        return Ok(MessageAuthenticator::new_system_conf()?);
    }
    let servers = dns
        .nameservers
        .iter()
        .filter_map(|s| parse_nameserver(s))
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    Ok(MessageAuthenticator::new(
        ResolverConfig::from_name_servers(servers),
        opts,
    )?)
}

/// What the checks decided for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deliver,
    Junk,
    Reject(String),
    /// The checks could not finish: answer 451 so the sender retries.
    Defer(String),
}

/// The outcome of the checks: the Authentication-Results value (without the field
/// name), the action, and the facts later stages use (the paywall frees mail that
/// DKIM-authenticates as an allowed domain).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub authentication_results: String,
    pub action: Action,
    pub spf: SpfResult,
    /// Domains with a passing DKIM signature.
    pub dkim_domains: Vec<String>,
    pub dmarc_pass: bool,
}

impl Verdict {
    /// SPF or DKIM passed for a domain aligned with the From address's (relaxed
    /// alignment, approximated without the public suffix list: equal, or one a
    /// subdomain of the other).
    pub fn authenticates(&self, mail_from: &str, from: &str) -> bool {
        let domain_of = |a: &str| a.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
        let from_domain = domain_of(from);
        if from_domain.is_empty() {
            return false;
        }
        let spf = self.spf == SpfResult::Pass
            && !mail_from.is_empty()
            && aligned(&domain_of(mail_from), &from_domain);
        let dkim = self.dkim_domains.iter().any(|d| aligned(d, &from_domain));
        spf || dkim
    }
}

/// Whether two domains align under DMARC's relaxed rule, approximated without the
/// public suffix list: equal, or one below the other.
pub fn aligned(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

/// Runs the checks the config asks for.
pub struct Verifier {
    auth: MessageAuthenticator,
    hostname: String,
    spf_failure: OnFailure,
    dkim_failure: OnFailure,
    dmarc_failure: DmarcFailure,
    enabled: bool,
    timeout: std::time::Duration,
}

fn on_failure(f: OnFailure, what: &str) -> Action {
    match f {
        OnFailure::Tag => Action::Deliver,
        OnFailure::Junk => Action::Junk,
        OnFailure::Reject => Action::Reject(format!("{what} check failed")),
    }
}

/// The stricter of two actions.
fn stricter(a: Action, b: Action) -> Action {
    match (a, b) {
        (r @ Action::Reject(_), _) | (_, r @ Action::Reject(_)) => r,
        (d @ Action::Defer(_), _) | (_, d @ Action::Defer(_)) => d,
        (Action::Junk, _) | (_, Action::Junk) => Action::Junk,
        _ => Action::Deliver,
    }
}

impl Verifier {
    pub fn new(auth: MessageAuthenticator, hostname: &str, smtp: &Smtp) -> Verifier {
        Verifier {
            auth,
            hostname: hostname.to_owned(),
            spf_failure: smtp.spf_failure,
            dkim_failure: smtp.dkim_failure,
            dmarc_failure: smtp.dmarc_failure,
            enabled: smtp.verify,
            timeout: Duration::from_secs(smtp.verify_timeout_seconds),
        }
    }

    /// Checks SPF for `mail_from` (the HELO name for the null sender), every DKIM
    /// signature, and DMARC for the From domain, within the configured time.
    pub async fn check(&self, ip: IpAddr, helo: &str, mail_from: &str, raw: &[u8]) -> Verdict {
        match tokio::time::timeout(self.timeout, self.check_all(ip, helo, mail_from, raw)).await {
            Ok(v) => v,
            Err(_) => Verdict {
                authentication_results: format!("{}; none (checks timed out)", self.hostname),
                action: Action::Defer("the SPF, DKIM and DMARC checks timed out".into()),
                spf: SpfResult::TempError,
                dkim_domains: Vec::new(),
                dmarc_pass: false,
            },
        }
    }

    async fn check_all(&self, ip: IpAddr, helo: &str, mail_from: &str, raw: &[u8]) -> Verdict {
        if !self.enabled {
            return Verdict {
                authentication_results: format!("{}; none", self.hostname),
                action: Action::Deliver,
                spf: SpfResult::None,
                dkim_domains: Vec::new(),
                dmarc_pass: false,
            };
        }
        // mail-auth parses with mail-parser, whose debug assertions some malformed mail
        // trips; that is unparsable mail, not a dropped session.
        let parsed = std::panic::catch_unwind(|| AuthenticatedMessage::parse(raw))
            .ok()
            .flatten();
        let Some(message) = parsed else {
            return Verdict {
                authentication_results: format!("{}; none (unparsable header)", self.hostname),
                action: Action::Deliver,
                spf: SpfResult::None,
                dkim_domains: Vec::new(),
                dmarc_pass: false,
            };
        };
        let dkim = self.auth.verify_dkim(&message).await;
        let spf = self
            .auth
            .verify_spf(SpfParameters::verify(ip, helo, &self.hostname, mail_from))
            .await;
        let spf_domain = mail_from.rsplit_once('@').map(|(_, d)| d).unwrap_or(helo);
        let dmarc = self
            .auth
            .verify_dmarc(DmarcParameters::new(&message, &dkim, spf_domain, &spf))
            .await;
        let from = message.from();
        let header = AuthenticationResults::new(&self.hostname)
            .with_dkim_results(&dkim, from)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_dmarc_result(&dmarc)
            .to_string();

        let dkim_domains: Vec<String> = dkim
            .iter()
            .filter(|d| d.result() == &DkimResult::Pass)
            .filter_map(|d| d.signature().map(|s| s.domain().to_ascii_lowercase()))
            .collect();
        let dkim_failed = !dkim.is_empty()
            && dkim_domains.is_empty()
            && dkim
                .iter()
                .any(|d| matches!(d.result(), DkimResult::Fail(_) | DkimResult::Neutral(_)));
        let dmarc_pass =
            dmarc.spf_result() == &DmarcResult::Pass || dmarc.dkim_result() == &DmarcResult::Pass;
        // A domain that publishes DMARC and neither aligned SPF nor aligned DKIM passed
        // (no signature at all counts as not passing).
        let dmarc_failed = dmarc.dmarc_record().is_some() && !dmarc_pass;

        let mut action = Action::Deliver;
        if spf.result() == SpfResult::Fail {
            action = stricter(action, on_failure(self.spf_failure, "SPF"));
        }
        if dkim_failed {
            action = stricter(action, on_failure(self.dkim_failure, "DKIM"));
        }
        if dmarc_failed {
            let a = match self.dmarc_failure {
                DmarcFailure::Follow => match dmarc.policy() {
                    Policy::Reject => Action::Reject(format!(
                        "DMARC policy of {} rejects this message",
                        dmarc.domain()
                    )),
                    Policy::Quarantine => Action::Junk,
                    _ => Action::Deliver,
                },
                DmarcFailure::Tag => Action::Deliver,
                DmarcFailure::Junk => Action::Junk,
                DmarcFailure::Reject => Action::Reject("DMARC check failed".into()),
            };
            action = stricter(action, a);
        }
        Verdict {
            authentication_results: header,
            action,
            spf: spf.result(),
            dkim_domains,
            dmarc_pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_take_an_optional_port() {
        assert_eq!(
            parse_nameserver("127.0.0.1"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("[::1]:53"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(parse_nameserver("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_nameserver("ns.example"), None);
    }

    #[test]
    fn the_stricter_action_wins() {
        assert_eq!(stricter(Action::Deliver, Action::Junk), Action::Junk);
        assert_eq!(
            stricter(Action::Junk, Action::Reject("x".into())),
            Action::Reject("x".into())
        );
        assert_eq!(stricter(Action::Deliver, Action::Deliver), Action::Deliver);
    }

    #[test]
    fn alignment_is_relaxed() {
        assert!(aligned("example.org", "EXAMPLE.org"));
        assert!(aligned("mail.example.org", "example.org"));
        assert!(aligned("example.org", "mail.example.org"));
        assert!(!aligned("example.org", "badexample.org"));
        assert!(!aligned("example.org", "example.net"));
    }
}
