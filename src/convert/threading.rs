//! How RFC 5322 threading (Message-ID, In-Reply-To, References) maps onto LNMP's
//! `threadId` and `replyTo`, and back.
//!
//! LNMP ids are 64 hex digits. An email Message-ID is kept with its angle brackets, so
//! the two never collide. An LNMP message shown as mail gets the Message-ID
//! `<id@lnmp.invalid>` (a reserved domain that names no host), and a reply quoting
//! such an id points at the LNMP message again.

/// The domain of Message-IDs made for LNMP messages.
pub const LNMP_ID_DOMAIN: &str = "lnmp.invalid";

fn is_lnmp_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The Message-ID (with brackets) an LNMP message carries when shown as mail.
pub fn message_id_for(lnmp_id: &str) -> String {
    format!("<{lnmp_id}@{LNMP_ID_DOMAIN}>")
}

/// The LNMP form of a Message-ID given without brackets (as mail-parser returns it):
/// the bare LNMP id for one of ours, the bracketed id otherwise.
pub fn from_message_id(id: &str) -> String {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    if let Some((left, right)) = id.split_once('@')
        && right.eq_ignore_ascii_case(LNMP_ID_DOMAIN)
        && is_lnmp_id(left)
    {
        return left.to_owned();
    }
    format!("<{id}>")
}

/// The Message-ID (with brackets) for a threading value stored in LNMP content.
pub fn to_message_id(value: &str) -> String {
    if is_lnmp_id(value) {
        message_id_for(value)
    } else if value.starts_with('<') {
        value.to_owned()
    } else {
        format!("<{value}>")
    }
}

/// `threadId` and `replyTo` from a message's own id, In-Reply-To and References (all
/// without brackets): the thread is named by its first message — the first reference,
/// else the message answered, else this message itself.
pub fn thread_of(
    own: Option<&str>,
    in_reply_to: Option<&str>,
    references: &[&str],
) -> (Option<String>, Option<String>) {
    let reply_to = in_reply_to.or(references.last().copied());
    let root = references.first().copied().or(reply_to).or(own);
    (root.map(from_message_id), reply_to.map(from_message_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_ids_keep_brackets_and_ours_map_back() {
        let hex = "ab".repeat(32);
        assert_eq!(from_message_id(&format!("{hex}@lnmp.invalid")), hex);
        assert_eq!(from_message_id("x@example.org"), "<x@example.org>");
        assert_eq!(to_message_id(&hex), format!("<{hex}@lnmp.invalid>"));
        assert_eq!(to_message_id("<x@example.org>"), "<x@example.org>");
        // Uppercase hex is not an LNMP id: ids are written in lowercase.
        let upper = "AB".repeat(32);
        assert_eq!(
            from_message_id(&format!("{upper}@lnmp.invalid")),
            format!("<{upper}@lnmp.invalid>")
        );
    }

    #[test]
    fn the_thread_is_named_by_its_first_message() {
        assert_eq!(
            thread_of(Some("c@x"), Some("b@x"), &["a@x", "b@x"]),
            (Some("<a@x>".into()), Some("<b@x>".into()))
        );
        assert_eq!(
            thread_of(Some("b@x"), Some("a@x"), &[]),
            (Some("<a@x>".into()), Some("<a@x>".into()))
        );
        assert_eq!(
            thread_of(Some("a@x"), None, &[]),
            (Some("<a@x>".into()), None)
        );
        assert_eq!(thread_of(None, None, &[]), (None, None));
    }
}
