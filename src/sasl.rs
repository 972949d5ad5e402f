//! SASL PLAIN (RFC 4616) and LOGIN, the two mechanisms mail clients use over TLS, for
//! SMTP AUTH and IMAP AUTHENTICATE alike.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// Decoded credentials.
pub struct Credentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*`.
    Cancelled,
    /// Not base64, not UTF-8, or not the mechanism's shape.
    Malformed,
}

/// Decodes one client response line (without CRLF).
pub fn decode(line: &str) -> Result<Zeroizing<Vec<u8>>, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    STANDARD
        .decode(line)
        .map(Zeroizing::new)
        .map_err(|_| SaslError::Malformed)
}

/// `authzid NUL authcid NUL passwd`; an authorization identity other than the
/// authentication identity is refused (no acting as another user).
pub fn plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let authz = std::str::from_utf8(authz).map_err(|_| SaslError::Malformed)?;
    let username = std::str::from_utf8(authc).map_err(|_| SaslError::Malformed)?;
    let password = std::str::from_utf8(pass).map_err(|_| SaslError::Malformed)?;
    if username.is_empty() || (!authz.is_empty() && authz != username) {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        username: username.to_owned(),
        password: Zeroizing::new(password.to_owned()),
    })
}

/// The UTF-8 text of one LOGIN step.
pub fn text(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_takes_matching_or_empty_authzid() {
        let c = plain(b"\0alice\0pw").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "pw"));
        assert!(plain(b"alice\0alice\0pw").is_ok());
        assert_eq!(plain(b"bob\0alice\0pw").err(), Some(SaslError::Malformed));
        assert_eq!(plain(b"\0alice").err(), Some(SaslError::Malformed));
        assert_eq!(plain(b"\0\0pw").err(), Some(SaslError::Malformed));
        assert_eq!(plain(b"\0a\0b\0c").err(), Some(SaslError::Malformed));
    }

    #[test]
    fn decodes_base64_and_cancel() {
        assert_eq!(&*decode("AGFsaWNlAHB3").unwrap(), b"\0alice\0pw");
        assert_eq!(decode("*").err(), Some(SaslError::Cancelled));
        assert_eq!(decode("%%%").err(), Some(SaslError::Malformed));
        assert!(decode("=").unwrap().is_empty());
    }
}
