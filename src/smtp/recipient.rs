//! Where a RCPT TO address goes: a local user, an LNMP address elsewhere, an email
//! address elsewhere, or nowhere. The MX takes local users only; relaying needs AUTH.
//!
//! The address is taken as smtp-proto returns it: source routes dropped, quotes
//! removed. The domain is what follows the *last* `@`, so `"a@evil"@us` and
//! `a@evil@us` name the local part `a@evil` at our domain, which no user has. Local
//! parts are looked up exactly, so `%`, `!` and quoted forms never reach another host.

use super::Reply;
use crate::custody::{Custody, UserInfo};
use crate::delivery::Route;
use crate::lnmp::Address;
use crate::relay::lookup::{LookupError, Resolver};

/// Local parts that RFC 5321 and RFC 2142 expect every domain to take; they go to the
/// user of that name, else to the domain's first user (the one quickstart made).
const ROLE_ACCOUNTS: [&str; 2] = ["postmaster", "abuse"];

fn unknown(addr: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("<{addr}>: recipient address rejected: user unknown"),
    )
}

/// Finds the local user an address at our domain names.
async fn local_user(custody: &Custody, addr: &str, local: &str) -> Result<UserInfo, Reply> {
    let temp = |e: crate::custody::CustodyError| {
        tracing::error!(error = %e, "user lookup failed");
        Reply::new(451, "4.3.0", "temporary lookup failure; try again later")
    };
    // An LNMP address of ours: the checksum must match the user's key.
    let (name, checksum) = match local.split_once('#') {
        Some((n, c)) => (n, Some(c)),
        None => (local, None),
    };
    // Subaddressing: alice+lists@ is alice@.
    let name = name
        .split_once('+')
        .map_or(name, |(n, _)| n)
        .to_ascii_lowercase();
    if name.is_empty() || crate::lnmp::address::validate_username(&name).is_err() {
        return Err(unknown(addr));
    }
    let user = match custody.find_user(&name).await.map_err(temp)? {
        Some(u) => u,
        None if ROLE_ACCOUNTS.contains(&name.as_str()) => custody
            .first_user()
            .await
            .map_err(temp)?
            .ok_or_else(|| unknown(addr))?,
        None => return Err(unknown(addr)),
    };
    if let Some(c) = checksum
        && c != user.address.checksum()
    {
        return Err(Reply::new(
            550,
            "5.1.1",
            format!("<{addr}>: the checksum does not match {name}'s key"),
        ));
    }
    Ok(user)
}

/// Classifies `addr` for a session that is (`Some`) or is not authenticated.
pub async fn route(
    custody: &Custody,
    lookup: &Resolver,
    hostname: &str,
    addr: &str,
    authenticated: Option<&UserInfo>,
) -> Result<Route, Reply> {
    // smtp-proto turns <postmaster> into the empty address.
    if addr.is_empty() {
        return local_user(custody, "postmaster", "postmaster")
            .await
            .map(Route::Local);
    }
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Err(Reply::new(501, "5.1.3", "bad recipient address syntax"));
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if local.is_empty() || domain.is_empty() {
        return Err(Reply::new(501, "5.1.3", "bad recipient address syntax"));
    }
    if domain == custody.domain() || domain == hostname {
        let prefix = format!("{}+", custody.reply_local_part());
        let lower = local.to_ascii_lowercase();
        if let Some(token) = lower.strip_prefix(&prefix) {
            if authenticated.is_some() {
                return Err(Reply::new(
                    550,
                    "5.7.1",
                    format!("<{addr}>: reply addresses take mail from the email world only"),
                ));
            }
            return match crate::store::reply_routes::get(custody.store(), token).await {
                Ok(Some(r)) => Ok(Route::Reply(r)),
                Ok(None) => Err(unknown(addr)),
                Err(e) => {
                    tracing::error!(error = %e, "reply route lookup failed");
                    Err(Reply::new(
                        451,
                        "4.3.0",
                        "temporary lookup failure; try again later",
                    ))
                }
            };
        }
        return local_user(custody, addr, local).await.map(Route::Local);
    }
    if authenticated.is_none() {
        return Err(Reply::new(
            554,
            "5.7.1",
            format!("<{addr}>: relay access denied"),
        ));
    }
    if domain.starts_with('[') {
        return Err(Reply::new(
            550,
            "5.1.2",
            format!("<{addr}>: address literals are not accepted"),
        ));
    }
    if local.contains('#') {
        let address: Address = addr.parse().map_err(|e: crate::lnmp::Error| {
            Reply::new(
                550,
                "5.1.3",
                format!("<{addr}> is not a valid LNMP address: {e}"),
            )
        })?;
        let doc = lookup.resolve(&address).await.map_err(|e| match &e {
            LookupError::Unknown { .. } => Reply::new(
                550,
                "5.1.1",
                format!("<{addr}>: LNMP lookup failed: no such user at its host"),
            ),
            LookupError::Invalid { reason, .. } => Reply::new(
                550,
                "5.1.2",
                format!("<{addr}>: LNMP lookup failed: {reason}"),
            ),
            LookupError::NoHost(_) => Reply::new(550, "5.1.2", format!("<{addr}>: {e}")),
            // The host may be down for a while: the client retries.
            LookupError::Http { .. } => Reply::new(
                451,
                "4.4.3",
                format!("<{addr}>: LNMP lookup failed for now; try again later"),
            ),
        })?;
        return Ok(Route::Lnmp {
            pubkey: doc.pubkey,
            relays: doc.relays,
        });
    }
    Ok(Route::Email(addr.to_owned()))
}
