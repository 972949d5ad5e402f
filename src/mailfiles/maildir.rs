//! Maildir and Maildir++ folders: which files are messages, which mailbox each goes
//! to, and the flags of their `:2,` info suffix.

use std::path::{Path, PathBuf};

/// One message file of a Maildir, not read yet.
#[derive(Debug, Clone)]
pub struct MaildirEntry {
    pub path: PathBuf,
    /// The mailbox it goes to (stored form: `/`-separated, UTF-8).
    pub mailbox: String,
    /// Flags from the info suffix (none for `new/`).
    pub flags: Vec<String>,
}

/// What [`scan`] found: the message files, and the folders whose names cannot be
/// mailbox names, with the reason.
pub struct Scan {
    pub entries: Vec<MaildirEntry>,
    pub bad_folders: Vec<(String, String)>,
}

/// Whether `dir` looks like a Maildir: it has `cur/` or `new/`.
pub fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

/// The messages of the Maildir `root` and its Maildir++ subfolders (`.Sent`,
/// `.Archive.2024`, ...), by mailbox and then by file name (which starts with the
/// delivery time). Folders whose names cannot be mailbox names are returned apart
/// with the reason.
pub fn scan(root: &Path) -> std::io::Result<Scan> {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    let mut folders = vec![(root.to_path_buf(), "INBOX".to_owned())];
    let mut subs: Vec<_> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix('.')?;
            (!rest.is_empty() && rest != "." && is_maildir(&e.path())).then(|| (e.path(), name))
        })
        .collect();
    subs.sort();
    for (path, name) in subs {
        match mailbox_for_folder(&name[1..]) {
            Ok(mailbox) => folders.push((path, mailbox)),
            Err(why) => bad.push((name, why)),
        }
    }
    for (dir, mailbox) in folders {
        for (sub, is_new) in [("new", true), ("cur", false)] {
            let Ok(read) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            let mut files: Vec<(String, PathBuf)> = read
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .filter(|(n, _)| !n.starts_with('.'))
                .collect();
            files.sort();
            for (name, path) in files {
                let flags = if is_new { Vec::new() } else { flags_of(&name) };
                entries.push(MaildirEntry {
                    path,
                    mailbox: mailbox.clone(),
                    flags,
                });
            }
        }
    }
    Ok(Scan {
        entries,
        bad_folders: bad,
    })
}

/// The IMAP flags of a Maildir file name's `:2,` info (Dovecot on some systems
/// writes `;2,` or `!2,`): S \Seen, R \Answered, F \Flagged, T \Deleted, D \Draft.
/// P (passed) and Dovecot's keyword letters (a-z, defined per folder) are dropped.
pub fn flags_of(file_name: &str) -> Vec<String> {
    let info = [":2,", ";2,", "!2,"]
        .iter()
        .find_map(|sep| file_name.rsplit_once(sep).map(|(_, i)| i))
        .unwrap_or("");
    let mut flags = Vec::new();
    for c in info.chars() {
        let f = match c {
            'S' => "\\Seen",
            'R' => "\\Answered",
            'F' => "\\Flagged",
            'T' => "\\Deleted",
            'D' => "\\Draft",
            _ => continue,
        };
        flags.push(f.to_owned());
    }
    flags
}

/// The mailbox a Maildir++ folder (its directory name without the leading dot) goes
/// to: levels split at `.`, each in modified UTF-7 (as Dovecot and Courier write
/// them), the usual names of special folders mapped to ours (`Sent Items` and
/// `Sent Messages` to Sent, `Deleted Items` to Trash, `Spam` to Junk, ...).
pub fn mailbox_for_folder(folder: &str) -> Result<String, String> {
    let folder = folder.strip_prefix("INBOX.").unwrap_or(folder);
    let mut levels = Vec::new();
    for level in folder.split('.') {
        let decoded = decode_mutf7(level).ok_or("its name is not valid modified UTF-7")?;
        levels.push(decoded);
    }
    if let Some(first) = levels.first_mut() {
        let special = match first.to_ascii_lowercase().as_str() {
            "sent" | "sent items" | "sent messages" | "sent mail" => Some("Sent"),
            "drafts" | "draft" => Some("Drafts"),
            "trash" | "deleted items" | "deleted messages" => Some("Trash"),
            "junk" | "spam" | "junk e-mail" | "junk email" => Some("Junk"),
            "archive" | "archives" => Some("Archive"),
            "inbox" => Some("INBOX"),
            _ => None,
        };
        if let Some(s) = special {
            *first = s.to_owned();
        }
    }
    Ok(levels.join("/"))
}

/// Modified UTF-7 (RFC 3501 5.1.3): printable ASCII as itself, `&-` for `&`, other
/// text as UTF-16BE in modified base64 between `&` and `-`.
pub fn decode_mutf7(s: &str) -> Option<String> {
    use base64::Engine;
    const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::IMAP_MUTF7,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let end = after.find('-')?;
        if end == 0 {
            out.push('&');
        } else {
            let bytes = B64.decode(&after[..end]).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_names() {
        assert_eq!(
            flags_of("1700000000.M1P2.host,S=120:2,FRS"),
            vec!["\\Flagged", "\\Answered", "\\Seen"]
        );
        assert_eq!(
            flags_of("1700000000.M1P2.host:2,DTab"),
            vec!["\\Draft", "\\Deleted"]
        );
        assert!(flags_of("1700000000.M1P2.host").is_empty());
    }

    #[test]
    fn folder_names() {
        assert_eq!(mailbox_for_folder("Sent").unwrap(), "Sent");
        assert_eq!(mailbox_for_folder("Sent Items").unwrap(), "Sent");
        assert_eq!(mailbox_for_folder("Archive.2024").unwrap(), "Archive/2024");
        assert_eq!(
            mailbox_for_folder("Re&AwE-sum&AOk-").unwrap(),
            "Re\u{301}sum\u{e9}"
        );
        assert_eq!(mailbox_for_folder("A&-B").unwrap(), "A&B");
        assert!(mailbox_for_folder("bad&AwE").is_err());
    }
}
