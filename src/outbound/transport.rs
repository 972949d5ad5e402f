//! One delivery attempt over SMTP (lettre's connection, driven command by command so
//! each recipient gets its own answer, as Postfix does): to the smarthost, or to the
//! recipient domain's MX hosts in order until one answers.

use super::mx::{self, MxError};
use crate::config::{MxTls, Outbound as OutboundConfig, SmarthostTls};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use mail_auth::MessageAuthenticator;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How one recipient fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    /// Worth another try later.
    Deferred,
    /// Will never work: return the message.
    Bounced,
}

/// A recipient's fate with the answer behind it, for the queue and the DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub fate: Fate,
    /// The SMTP reply ("550 5.1.1 no such user") or what went wrong before one.
    pub reply: String,
    /// The host that answered.
    pub remote_mta: Option<String>,
    /// The reply code, when there was one.
    pub code: Option<u16>,
}

impl Outcome {
    fn deferred(reply: impl Into<String>, remote_mta: Option<String>) -> Outcome {
        Outcome {
            fate: Fate::Deferred,
            reply: reply.into(),
            remote_mta,
            code: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read outbound.tls_ca_file {path}: {problem}")]
    CaFile { path: String, problem: String },
}

enum Route {
    Smarthost {
        host: String,
        port: u16,
        tls: SmarthostTls,
        credentials: Option<Credentials>,
    },
    Mx {
        port: u16,
        tls: MxTls,
        dns: Arc<MessageAuthenticator>,
    },
}

/// Delivers prepared messages.
pub struct Transport {
    route: Route,
    hello: ClientId,
    timeout: Duration,
    /// For the answer to the end of a message (RFC 5321 4.5.3.2.6: ten minutes).
    final_reply: Duration,
    roots: Vec<Vec<u8>>,
}

/// What a failed session step means for the recipients not yet answered.
struct Stop {
    fate: Fate,
    reply: String,
    code: Option<u16>,
    /// Another MX host may do better (connection problems and 4xx before RCPT).
    try_next: bool,
}

/// Addresses tried per delivery attempt (Postfix's smtp_mx_address_limit).
const MX_ADDRESS_LIMIT: usize = 5;

/// How long QUIT (and the QUIT of an abort) may take: the answer no longer matters.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// A step of the session: lettre's own error, or no answer in time.
enum StepError {
    Smtp(lettre::transport::smtp::Error),
    TimedOut,
}

/// Runs one SMTP step under the command timeout (lettre times only the connect).
async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(StepError::Smtp),
        Err(_) => Err(StepError::TimedOut),
    }
}

async fn close(conn: &mut AsyncSmtpConnection) {
    let _ = tokio::time::timeout(QUIT_WAIT, conn.abort()).await;
}

fn stop_of(e: StepError, what: &str, try_next: bool) -> Stop {
    match e {
        StepError::Smtp(e) => stop_from(&e, try_next),
        StepError::TimedOut => Stop {
            fate: Fate::Deferred,
            reply: format!("timed out waiting for the answer to {what}"),
            code: None,
            try_next: true,
        },
    }
}

/// "550 5.1.1 text" from a lettre error, or its description when there was no reply.
fn reply_of(e: &lettre::transport::smtp::Error) -> (Option<u16>, String) {
    match e.status() {
        Some(code) => {
            let code = u16::from(code);
            let text = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            (Some(code), format!("{code} {}", text.trim()))
        }
        None => (None, e.to_string()),
    }
}

fn stop_from(e: &lettre::transport::smtp::Error, try_next: bool) -> Stop {
    let (code, reply) = reply_of(e);
    let fate = if e.is_permanent() {
        Fate::Bounced
    } else {
        Fate::Deferred
    };
    Stop {
        try_next: try_next && fate == Fate::Deferred,
        fate,
        reply,
        code,
    }
}

impl Transport {
    pub fn new(
        config: &OutboundConfig,
        hostname: &str,
        dns: Arc<MessageAuthenticator>,
    ) -> Result<Transport, TransportError> {
        let mut roots = Vec::new();
        if !config.tls_ca_file.as_os_str().is_empty() {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject as _;
            let err = |problem: String| TransportError::CaFile {
                path: config.tls_ca_file.display().to_string(),
                problem,
            };
            for cert in CertificateDer::pem_file_iter(&config.tls_ca_file)
                .map_err(|e| err(e.to_string()))?
            {
                roots.push(cert.map_err(|e| err(e.to_string()))?.to_vec());
            }
            if roots.is_empty() {
                return Err(err("no certificate in it".into()));
            }
        }
        let route = if config.smarthost.is_empty() {
            Route::Mx {
                port: config.mx_port,
                tls: config.mx_tls,
                dns,
            }
        } else {
            let (host, port) = config
                .smarthost
                .rsplit_once(':')
                .map(|(h, p)| {
                    (
                        h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                        p.parse().unwrap_or(587),
                    )
                })
                .unwrap_or_else(|| (config.smarthost.clone(), 587));
            Route::Smarthost {
                host,
                port,
                tls: config.smarthost_tls,
                credentials: (!config.smarthost_username.is_empty()).then(|| {
                    Credentials::new(
                        config.smarthost_username.clone(),
                        config.smarthost_password.clone(),
                    )
                }),
            }
        };
        Ok(Transport {
            route,
            hello: ClientId::Domain(hostname.to_owned()),
            timeout: Duration::from_secs(config.timeout_seconds),
            final_reply: Duration::from_secs(config.final_reply_timeout_seconds),
            roots,
        })
    }

    fn tls_parameters(&self, name: &str, verify: bool) -> Option<TlsParameters> {
        let mut b = TlsParameters::builder(name.to_owned());
        for der in &self.roots {
            if let Ok(c) = Certificate::from_der(der.clone()) {
                b = b.add_root_certificate(c);
            }
        }
        if !verify {
            b = b
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        }
        match b.build_rustls() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot build TLS parameters");
                None
            }
        }
    }

    /// Tries to deliver `data` (CRLF line ends, signed) from `mail_from` to
    /// `recipients`, all at `domain`; one outcome per recipient, in order.
    pub async fn deliver(
        &self,
        mail_from: &str,
        domain: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Vec<Outcome> {
        let every = |o: Outcome| vec![o; recipients.len()];
        match &self.route {
            Route::Smarthost {
                host,
                port,
                tls,
                credentials,
            } => {
                let addrs: Vec<SocketAddr> =
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(a) => a.collect(),
                        Err(e) => {
                            return every(Outcome::deferred(
                                format!("cannot resolve the smarthost {host}: {e}"),
                                None,
                            ));
                        }
                    };
                let (implicit, starttls) = match tls {
                    SmarthostTls::Tls => (true, StartTls::No),
                    SmarthostTls::Starttls => (false, StartTls::Required),
                    SmarthostTls::None => (false, StartTls::No),
                };
                let mut last = None;
                for addr in addrs {
                    match self
                        .session(
                            addr,
                            host,
                            implicit,
                            starttls,
                            true,
                            credentials.as_ref(),
                            mail_from,
                            recipients,
                            data,
                        )
                        .await
                    {
                        Ok(outcomes) => return outcomes,
                        Err(stop) if stop.try_next => last = Some(stop),
                        Err(stop) => return every(stop.into_outcome(host)),
                    }
                }
                every(last.map_or_else(
                    || Outcome::deferred(format!("the smarthost {host} has no address"), None),
                    |s| s.into_outcome(host),
                ))
            }
            Route::Mx { port, tls, dns } => {
                let hosts = match mx::hosts(dns, domain).await {
                    Ok(h) => h,
                    Err(MxError::Permanent(p)) => {
                        return every(Outcome {
                            fate: Fate::Bounced,
                            reply: p,
                            remote_mta: None,
                            code: None,
                        });
                    }
                    Err(MxError::Temporary(p)) => return every(Outcome::deferred(p, None)),
                };
                let starttls = match tls {
                    MxTls::Opportunistic => StartTls::Opportunistic,
                    MxTls::Required => StartTls::Required,
                };
                let mut last: Option<(Stop, String)> = None;
                // At most MX_ADDRESS_LIMIT addresses per attempt, as Postfix does: a
                // domain with many dead hosts must not hold a worker for hours.
                let mut addresses: Vec<(String, std::net::IpAddr)> = Vec::new();
                for h in &hosts {
                    for ip in &h.addresses {
                        addresses.push((h.name.clone(), *ip));
                    }
                }
                addresses.truncate(MX_ADDRESS_LIMIT);
                for (host_name, ip) in addresses {
                    {
                        let addr = SocketAddr::new(ip, *port);
                        match self
                            .session(
                                addr,
                                &host_name,
                                false,
                                starttls,
                                *tls == MxTls::Required,
                                None,
                                mail_from,
                                recipients,
                                data,
                            )
                            .await
                        {
                            Ok(outcomes) => return outcomes,
                            Err(stop) if stop.try_next => last = Some((stop, host_name.clone())),
                            Err(stop) => return every(stop.into_outcome(&host_name)),
                        }
                    }
                }
                every(last.map_or_else(
                    || Outcome::deferred(format!("no mail host of {domain} answered"), None),
                    |(s, h)| s.into_outcome(&h),
                ))
            }
        }
    }

    /// One SMTP session with one host. Err when no recipient got its own answer.
    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        addr: SocketAddr,
        name: &str,
        implicit_tls: bool,
        starttls: StartTls,
        verify: bool,
        credentials: Option<&Credentials>,
        mail_from: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Result<Vec<Outcome>, Stop> {
        let tls = if implicit_tls {
            Some(self.tls_parameters(name, verify).ok_or_else(|| Stop {
                fate: Fate::Deferred,
                reply: "TLS setup failed".into(),
                code: None,
                try_next: false,
            })?)
        } else {
            None
        };
        let hello = &self.hello;
        let connect = async move {
            let talk = |e: lettre::transport::smtp::Error| {
                format!("cannot talk to {name} [{}]: {e}", addr.ip())
            };
            if let Some(tls) = tls {
                return AsyncSmtpConnection::connect_tokio1(
                    addr,
                    Some(self.timeout),
                    hello,
                    Some(tls),
                    None,
                )
                .await
                .map_err(talk);
            }
            // Our own socket, with Nagle off: lettre writes the final dot apart from the
            // message, and waiting for a delayed ACK there cost 40 ms a message.
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot talk to {name} [{}]: {e}", addr.ip()))?;
            let _ = tcp.set_nodelay(true);
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), hello)
                .await
                .map_err(talk)
        };
        let mut conn = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(reply)) => {
                return Err(Stop {
                    fate: Fate::Deferred,
                    reply,
                    code: None,
                    try_next: true,
                });
            }
            Err(_) => {
                return Err(Stop {
                    fate: Fate::Deferred,
                    reply: format!("timed out connecting to {name} [{}]", addr.ip()),
                    code: None,
                    try_next: true,
                });
            }
        };
        if !conn.is_encrypted() && starttls != StartTls::No {
            if conn.can_starttls() {
                let Some(params) = self.tls_parameters(name, verify) else {
                    close(&mut conn).await;
                    return Err(Stop {
                        fate: Fate::Deferred,
                        reply: "TLS setup failed".into(),
                        code: None,
                        try_next: false,
                    });
                };
                if let Err(e) = timed(self.timeout, conn.starttls(params, &self.hello)).await {
                    let e = match e {
                        StepError::Smtp(e) => e.to_string(),
                        StepError::TimedOut => "no answer in time".to_owned(),
                    };
                    close(&mut conn).await;
                    if starttls == StartTls::Required {
                        return Err(Stop {
                            fate: Fate::Deferred,
                            reply: format!("STARTTLS with {name} failed: {e}"),
                            code: None,
                            try_next: true,
                        });
                    }
                    // Opportunistic: a broken TLS stack at the peer does not stop mail,
                    // as with Postfix's `may`; the next connection goes in plaintext.
                    tracing::warn!(host = name, error = %e, "STARTTLS failed; sending without TLS");
                    return Box::pin(self.session(
                        addr,
                        name,
                        false,
                        StartTls::No,
                        verify,
                        credentials,
                        mail_from,
                        recipients,
                        data,
                    ))
                    .await;
                }
            } else if starttls == StartTls::Required {
                close(&mut conn).await;
                return Err(Stop {
                    fate: Fate::Deferred,
                    reply: format!("{name} does not offer STARTTLS, which is required"),
                    code: None,
                    try_next: true,
                });
            }
        }
        if let Some(c) = credentials
            && let Err(e) = timed(
                self.timeout,
                conn.auth(&[Mechanism::Plain, Mechanism::Login], c),
            )
            .await
        {
            close(&mut conn).await;
            // A refused login is a configuration problem here: keep the mail.
            let (code, reply) = match e {
                StepError::Smtp(e) => reply_of(&e),
                StepError::TimedOut => (None, "no answer in time".to_owned()),
            };
            return Err(Stop {
                fate: Fate::Deferred,
                reply: format!("AUTH at {name} failed: {reply}"),
                code,
                try_next: false,
            });
        }
        let result = self
            .transaction(&mut conn, mail_from, recipients, data)
            .await;
        if result.is_ok() {
            let _ = tokio::time::timeout(QUIT_WAIT, conn.quit()).await;
        } else {
            close(&mut conn).await;
        }
        let remote = Some(name.to_owned());
        result.map(|o| {
            o.into_iter()
                .map(|mut o| {
                    o.remote_mta = remote.clone();
                    o
                })
                .collect()
        })
    }

    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        mail_from: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Result<Vec<Outcome>, Stop> {
        let bad_address = |what: &str, a: &str| Stop {
            fate: Fate::Bounced,
            reply: format!("the {what} address <{a}> cannot be sent over SMTP"),
            code: None,
            try_next: false,
        };
        let from = if mail_from.is_empty() {
            None
        } else {
            Some(
                mail_from
                    .parse::<lettre::Address>()
                    .map_err(|_| bad_address("sender", mail_from))?,
            )
        };
        let info = conn.server_info().clone();
        let mut params = Vec::new();
        if !mail_from.is_ascii() || recipients.iter().any(|r| !r.is_ascii()) {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(Stop {
                    fate: Fate::Bounced,
                    reply: "the remote server does not take internationalized addresses (SMTPUTF8)"
                        .into(),
                    code: None,
                    try_next: false,
                });
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !data.is_ascii() && info.supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        if let Err(e) = timed(self.timeout, conn.command(Mail::new(from, params))).await {
            return Err(stop_of(e, "MAIL", true));
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; recipients.len()];
        let mut accepted = Vec::new();
        for (i, r) in recipients.iter().enumerate() {
            let Ok(address) = r.parse::<lettre::Address>() else {
                outcomes[i] = Some(Outcome {
                    fate: Fate::Bounced,
                    reply: format!("<{r}> cannot be sent over SMTP"),
                    remote_mta: None,
                    code: None,
                });
                continue;
            };
            match timed(self.timeout, conn.command(Rcpt::new(address, Vec::new()))).await {
                Ok(_) => accepted.push(i),
                Err(StepError::Smtp(e)) if e.status().is_some() => {
                    let stop = stop_from(&e, false);
                    outcomes[i] = Some(Outcome {
                        fate: stop.fate,
                        reply: stop.reply,
                        remote_mta: None,
                        code: stop.code,
                    });
                }
                Err(e) => return Err(stop_of(e, "RCPT", false)),
            }
        }
        if !accepted.is_empty() {
            let sent = match timed(self.timeout, conn.command(Data)).await {
                Ok(_) => {
                    // lettre ends the data with CRLF.CRLF itself: a final CRLF of ours
                    // would add an empty line.
                    let body = data.strip_suffix(b"\r\n").unwrap_or(data);
                    // RFC 5321 4.5.3.2.6: ten minutes for the answer to the final dot.
                    timed(self.final_reply, conn.message(body)).await
                }
                Err(e) => Err(e),
            };
            let o = match sent {
                Ok(r) => Outcome {
                    fate: Fate::Delivered,
                    reply: format!(
                        "{} {}",
                        u16::from(r.code()),
                        r.message().collect::<Vec<_>>().join(" ")
                    ),
                    remote_mta: None,
                    code: Some(u16::from(r.code())),
                },
                Err(e) => {
                    let stop = stop_of(e, "DATA", false);
                    Outcome {
                        fate: stop.fate,
                        reply: stop.reply,
                        remote_mta: None,
                        code: stop.code,
                    }
                }
            };
            for i in accepted {
                outcomes[i] = Some(o.clone());
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::deferred("no answer", None)))
            .collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTls {
    No,
    Opportunistic,
    Required,
}

impl Stop {
    fn into_outcome(self, host: &str) -> Outcome {
        Outcome {
            fate: self.fate,
            reply: self.reply,
            remote_mta: Some(host.to_owned()),
            code: self.code,
        }
    }
}
