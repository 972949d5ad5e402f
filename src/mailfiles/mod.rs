//! Mail files in and out: importing an mbox file or a Maildir folder into a user's
//! mailboxes, and exporting a user's mail as mbox. It owns the `import` and `export`
//! commands and the file formats; storage is the store's, done exactly as IMAP
//! APPEND does it (a body sealed under the user's storage key by
//! [`MailVault`], named by its keyed digest, filed with `store_body_in` and
//! `append_in` in one transaction), and export reads messages through the IMAP
//! [`Loader`], so what it writes is what IMAP serves.
//!
//! Choices, in short:
//! - Messages are stored with CRLF line ends, as IMAP clients APPEND them.
//! - mbox is read as mboxrd (one `>` taken off `>From ` lines); `Status:` R is \Seen,
//!   `X-Status:` A \Answered, F \Flagged, T \Draft, D \Deleted, `X-Keywords:` become
//!   keywords; those headers (and Dovecot's X-UID, X-IMAP, X-IMAPbase) are mbox
//!   bookkeeping and are taken out of the stored message, as Dovecot does. A first
//!   `X-Folder:` header names the mailbox a message goes to (export writes it).
//!   INTERNALDATE is the `From ` line's date, else the Date header, else now.
//! - Maildir: the top folder is INBOX, Maildir++ subfolders `.Name.Sub` are
//!   `Name/Sub` (well-known names mapped to Sent, Drafts, Trash, Junk, Archive);
//!   INTERNALDATE is the file's mtime (as Dovecot), else the Date header.
//! - Duplicates, per mailbox: the same Message-ID, or the same SHA-256 of the message
//!   as it would be stored. The hash is over the whole message, not the body alone: a
//!   body-only hash would merge distinct messages that share a body (cron reports,
//!   one-line replies, empty bodies) and lose mail, while the same message
//!   re-delivered with other trace headers is what Message-ID catches. Each
//!   message is filed in its own transaction, which (under the mailbox's row lock)
//!   looks for the same bytes again, so an import cut off anywhere and run again, or
//!   two imports at once, file each message once; the Message-ID check reads what a
//!   mailbox held when the import first filed into it.
//! - Mailboxes are created with missing parents, as IMAP CREATE does, within
//!   `imap.max_mailboxes`; messages over `imap.max_literal_bytes` are refused.
//! - Export writes every mailbox to one mboxrd file, each message with `X-Folder:`,
//!   `Status:` and `X-Status:`/`X-Keywords:` lines first, LF line ends.

pub mod maildir;
pub mod mbox;

use crate::blob::BlobStore;
use crate::custody::vault::MailVault;
use crate::custody::{Custody, CustodyError, UserInfo};
use crate::imap::message::Loader;
use crate::imap::structure::ParsedMessage;
use crate::store::mail::{self, FlagChange, NewMail};
use crate::store::{Store, StoreError, mailboxes};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MailfilesError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is neither an mbox file nor a Maildir folder (one with cur/ or new/)", .0.display())]
    NotMail(PathBuf),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Custody(#[from] CustodyError),
}

type Result<T, E = MailfilesError> = std::result::Result<T, E>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> MailfilesError + '_ {
    move |source| MailfilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Limits an import holds to: the daemon's own.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The largest message taken (`imap.max_literal_bytes`, what APPEND takes).
    pub max_message_bytes: u64,
    /// The longest mailbox name (`imap.max_mailbox_name_bytes`).
    pub max_mailbox_name_bytes: usize,
    /// The most mailboxes a user may have (`imap.max_mailboxes`).
    pub max_mailboxes: usize,
}

impl ImportOptions {
    pub fn from_config(config: &crate::config::Config) -> ImportOptions {
        ImportOptions {
            max_message_bytes: u64::from(config.imap.max_literal_bytes),
            max_mailbox_name_bytes: config.imap.max_mailbox_name_bytes,
            max_mailboxes: config.imap.max_mailboxes as usize,
        }
    }
}

/// A message that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub what: String,
    pub why: String,
}

/// What an import did.
#[derive(Debug, Default, Clone)]
pub struct ImportSummary {
    pub imported: u64,
    pub duplicates: u64,
    pub folders_created: Vec<String>,
    pub failed: Vec<Failure>,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {}, duplicates skipped {}, folders created {}",
            self.imported,
            self.duplicates,
            self.folders_created.len()
        )?;
        if !self.folders_created.is_empty() {
            write!(f, " ({})", self.folders_created.join(", "))?;
        }
        write!(f, ", failed {}", self.failed.len())
    }
}

/// A message to import, as read from its file.
struct Incoming {
    what: String,
    mailbox: Option<String>,
    bytes: Vec<u8>,
    flags: Vec<String>,
    date: Option<i64>,
}

/// What an import knows of a mailbox it files into.
struct Known {
    id: i64,
    message_ids: HashSet<String>,
    hashes: HashSet<[u8; 32]>,
}

struct Importer<'a> {
    store: Store,
    user: UserInfo,
    loader: Loader,
    options: &'a ImportOptions,
    boxes: HashMap<String, Known>,
    summary: ImportSummary,
    unannounced: usize,
}

/// Imports the mbox file or Maildir folder at `path` into `username`'s mailboxes.
/// Messages that cannot be taken are counted in the summary's failures; only storage
/// and file-system errors stop it. Each message is stored in its own transaction, and
/// what is there already is skipped, so running it again after an interruption
/// finishes the job.
pub async fn import(
    custody: &Custody,
    blobs: &BlobStore,
    username: &str,
    path: &Path,
    options: &ImportOptions,
    progress: &ProgressBar,
) -> Result<ImportSummary> {
    let user = custody.user(username).await?;
    let identity = custody.identity(username).await?;
    let loader = Loader::new(custody.clone(), blobs.clone(), user.clone(), identity, 1);
    let mut im = Importer {
        store: custody.store().clone(),
        user,
        loader,
        options,
        boxes: HashMap::new(),
        summary: ImportSummary::default(),
        unannounced: 0,
    };
    let result = if path.is_dir() {
        if !maildir::is_maildir(path) {
            return Err(MailfilesError::NotMail(path.to_path_buf()));
        }
        im.import_maildir(path, progress).await
    } else {
        im.import_mbox(path, progress).await
    };
    // What was stored is announced even when the import stopped on an error.
    if im.unannounced > 0 {
        im.store.mail_changed(im.user.id).await;
    }
    progress.finish_and_clear();
    result.map(|()| im.summary)
}

impl Importer<'_> {
    async fn import_mbox(&mut self, path: &Path, progress: &ProgressBar) -> Result<()> {
        let file = std::fs::File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        progress.set_length(len);
        let mut reader = mbox::MboxReader::new(BufReader::new(file))
            .map_err(io_error(path))?
            // Line ends may grow by a CR each; the exact check follows normalization.
            .with_limit(self.options.max_message_bytes);
        while let Some(m) = reader.next_message().map_err(io_error(path))? {
            let what = format!("message {} (line {})", m.number, m.line);
            if m.too_large.is_some() {
                self.fail(what, self.too_large());
                progress.set_position(reader.consumed);
                continue;
            }
            let bytes = normalize_crlf(&m.bytes);
            let (bytes, meta) = strip_fields(
                &bytes,
                &[
                    "status",
                    "x-status",
                    "x-keywords",
                    "x-uid",
                    "x-imap",
                    "x-imapbase",
                ],
            );
            let mut flags = Vec::new();
            for (name, value) in &meta {
                match name.as_str() {
                    "status" if value.contains('R') => flags.push("\\Seen".to_owned()),
                    "x-status" => {
                        for c in value.chars() {
                            flags.extend(
                                match c {
                                    'A' => Some("\\Answered"),
                                    'F' => Some("\\Flagged"),
                                    'T' => Some("\\Draft"),
                                    'D' => Some("\\Deleted"),
                                    _ => None,
                                }
                                .map(str::to_owned),
                            );
                        }
                    }
                    "x-keywords" => flags.extend(
                        value
                            .split([' ', ','])
                            .filter(|k| is_keyword(k))
                            .map(str::to_owned),
                    ),
                    _ => {}
                }
            }
            let (bytes, mailbox) = take_folder(bytes);
            self.one(
                Incoming {
                    what,
                    mailbox,
                    bytes,
                    flags,
                    date: m.date,
                },
                progress,
            )
            .await?;
            progress.set_position(reader.consumed);
        }
        Ok(())
    }

    async fn import_maildir(&mut self, root: &Path, progress: &ProgressBar) -> Result<()> {
        let maildir::Scan {
            entries,
            bad_folders,
        } = maildir::scan(root).map_err(io_error(root))?;
        for (folder, why) in bad_folders {
            self.summary.failed.push(Failure {
                what: format!("folder {folder}"),
                why,
            });
        }
        progress.set_length(entries.len() as u64);
        for e in entries {
            let what = e
                .path
                .strip_prefix(root)
                .unwrap_or(&e.path)
                .display()
                .to_string();
            let read = std::fs::metadata(&e.path).and_then(|meta| {
                if meta.len() > self.options.max_message_bytes {
                    Ok((meta, None))
                } else {
                    std::fs::read(&e.path).map(|b| (meta, Some(b)))
                }
            });
            let (meta, bytes) = match read {
                Ok(r) => r,
                Err(err) => {
                    self.fail(what, format!("cannot read it: {err}"));
                    progress.inc(1);
                    continue;
                }
            };
            let date = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            let Some(bytes) = bytes else {
                self.fail(what, self.too_large());
                progress.inc(1);
                continue;
            };
            self.one(
                Incoming {
                    what,
                    mailbox: Some(e.mailbox),
                    bytes: normalize_crlf(&bytes),
                    flags: e.flags,
                    date,
                },
                progress,
            )
            .await?;
            progress.inc(1);
        }
        Ok(())
    }

    fn fail(&mut self, what: String, why: String) {
        self.summary.failed.push(Failure { what, why });
    }

    fn too_large(&self) -> String {
        format!(
            "larger than the IMAP APPEND limit imap.max_literal_bytes ({} bytes)",
            self.options.max_message_bytes
        )
    }

    /// Files one message, or counts it as a duplicate or a failure.
    async fn one(&mut self, m: Incoming, progress: &ProgressBar) -> Result<()> {
        if m.bytes.len() as u64 > self.options.max_message_bytes {
            self.fail(m.what, self.too_large());
            return Ok(());
        }
        if let Err(why) = check_message(&m.bytes) {
            self.fail(m.what, why.into());
            return Ok(());
        }
        let name = match mailbox_name(
            m.mailbox.as_deref().unwrap_or("INBOX"),
            self.options.max_mailbox_name_bytes,
        ) {
            Ok(n) => n,
            Err(why) => {
                self.fail(
                    m.what,
                    format!("cannot go to mailbox {:?}: {why}", m.mailbox),
                );
                return Ok(());
            }
        };
        let message_id =
            header_value(&m.bytes, "message-id").and_then(|v| normalize_message_id(&v));
        let hash: [u8; 32] = Sha256::digest(&m.bytes).into();
        if let Err(why) = self.create_missing(&name).await? {
            self.fail(m.what, why);
            return Ok(());
        }
        let known = self.mailbox(&name).await?;
        if message_id
            .as_ref()
            .is_some_and(|id| known.message_ids.contains(id))
            || known.hashes.contains(&hash)
        {
            self.summary.duplicates += 1;
            return Ok(());
        }
        let mailbox_id = known.id;
        let date = m
            .date
            .or_else(|| {
                mail_parser::MessageParser::default()
                    .parse_headers(&m.bytes)
                    .and_then(|p| p.date().map(|d| d.to_timestamp()))
            })
            .unwrap_or_else(crate::store::now);
        let flags = mail::apply_flags("", FlagChange::Add, &m.flags);
        let vault: &MailVault = self.loader.vault();
        let stored_name = vault.name(&m.bytes);
        let sealed = vault.seal(&stored_name, &m.bytes);
        let new = NewMail {
            message_id: stored_name.clone(),
            internal_date: date,
            // As clients will count it: with CRLF line ends (FETCH sends them so).
            size: ParsedMessage::parse(&m.bytes).rfc822_size() as i64,
            flags,
        };
        let user_id = self.user.id;
        let filed = self
            .store
            .write(Box::new(move |c| {
                Box::pin(async move {
                    // The mailbox row locked first, then the same bytes looked for: two
                    // imports at once (or one cut off mid-write) never file one twice.
                    mail::lock_mailboxes_in(c, &[mailbox_id]).await?;
                    let there: Option<i64> = sqlx::query_scalar(
                        "SELECT uid FROM mail WHERE mailbox_id = $1 AND message_id = $2",
                    )
                    .bind(mailbox_id)
                    .bind(&stored_name)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(StoreError::from)?;
                    if there.is_some() {
                        return Ok(false);
                    }
                    mail::store_body_in(c, user_id, &stored_name, &sealed).await?;
                    mail::append_in(c, mailbox_id, &new).await?;
                    Ok(true)
                })
            }))
            .await?;
        if !filed {
            self.summary.duplicates += 1;
            return Ok(());
        }
        let known = self.mailbox(&name).await?;
        known.hashes.insert(hash);
        if let Some(id) = message_id {
            known.message_ids.insert(id);
        }
        self.summary.imported += 1;
        self.unannounced += 1;
        if self.unannounced >= 100 {
            self.store.mail_changed(self.user.id).await;
            self.unannounced = 0;
        }
        progress.set_message(format!(
            "{} imported, {} duplicates",
            self.summary.imported, self.summary.duplicates
        ));
        Ok(())
    }

    /// Creates the mailbox `name` if it is missing, with any missing parents (as IMAP
    /// CREATE does), within `imap.max_mailboxes`. Err(reason) if it cannot be.
    async fn create_missing(&mut self, name: &str) -> Result<Result<(), String>> {
        if self.boxes.contains_key(name) {
            return Ok(Ok(()));
        }
        let existing = mailboxes::list(&self.store, self.user.id).await?;
        let mut wanted = Vec::new();
        let mut path = String::new();
        for level in name.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(level);
            if !existing.iter().any(|m| m.name == path) {
                wanted.push(path.clone());
            }
        }
        if wanted.is_empty() {
            return Ok(Ok(()));
        }
        if existing.len() + wanted.len() > self.options.max_mailboxes {
            return Ok(Err(format!(
                "creating mailbox {name} would pass the limit imap.max_mailboxes ({})",
                self.options.max_mailboxes
            )));
        }
        for n in wanted {
            let special = mailboxes::DEFAULT_MAILBOXES
                .iter()
                .find(|(d, _)| *d == n)
                .and_then(|(_, s)| *s);
            let (user_id, owned) = (self.user.id, n.clone());
            let created = self
                .store
                .write(Box::new(move |c| {
                    Box::pin(async move { mailboxes::create_in(c, user_id, &owned, special).await })
                }))
                .await;
            match created {
                Ok(()) => self.summary.folders_created.push(n),
                // Created meanwhile by a client.
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Ok(()))
    }

    /// The mailbox `name` (which exists), with what it holds already (read the first
    /// time it is asked for).
    async fn mailbox(&mut self, name: &str) -> Result<&mut Known> {
        if !self.boxes.contains_key(name) {
            let row = mailboxes::get(&self.store, self.user.id, name)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
            let mut known = Known {
                id: row.id,
                message_ids: HashSet::new(),
                hashes: HashSet::new(),
            };
            let rows = mail::in_mailbox(&self.store, row.id).await?;
            for (i, r) in rows.iter().enumerate() {
                match self.loader.load(r, &rows[i + 1..]).await {
                    Ok(bytes) => {
                        known.hashes.insert(Sha256::digest(bytes.as_slice()).into());
                        if let Some(id) = header_value(&bytes, "message-id")
                            .and_then(|v| normalize_message_id(&v))
                        {
                            known.message_ids.insert(id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(mailbox = %name, uid = r.uid, error = %e, "cannot read a message to check for duplicates");
                    }
                }
            }
            self.boxes.insert(name.to_owned(), known);
        }
        self.boxes
            .get_mut(name)
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")).into())
    }
}

/// Bare LF line ends as CRLF (what IMAP clients APPEND); CRLF stays.
pub fn normalize_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The header section of a CRLF message: up to and including the empty line (or
/// everything, if there is no body).
fn header_len(bytes: &[u8]) -> usize {
    if bytes.starts_with(b"\r\n") {
        return 0;
    }
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |p| p + 2)
}

/// The header fields of a CRLF message: (start, end, lower-case name, unfolded value).
fn fields(bytes: &[u8]) -> Vec<(usize, usize, String, String)> {
    let end = header_len(bytes);
    let mut out: Vec<(usize, usize, String, String)> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let line_end = bytes[pos..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(end, |p| pos + p + 2);
        let line = &bytes[pos..line_end];
        let text = String::from_utf8_lossy(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = out.last_mut() {
                last.1 = line_end;
                last.3.push(' ');
                last.3.push_str(text.trim());
            }
        } else if let Some((name, value)) = text.split_once(':') {
            out.push((
                pos,
                line_end,
                name.trim().to_ascii_lowercase(),
                value.trim().to_owned(),
            ));
        }
        pos = line_end;
    }
    out
}

/// The first value of header `name` (lower case).
fn header_value(bytes: &[u8], name: &str) -> Option<String> {
    fields(bytes).into_iter().find(|f| f.2 == name).map(|f| f.3)
}

/// The message without the header fields named in `names` (lower case), and those
/// fields' names and values.
fn strip_fields(bytes: &[u8], names: &[&str]) -> (Vec<u8>, Vec<(String, String)>) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut taken = Vec::new();
    let mut pos = 0;
    for (start, end, name, value) in fields(bytes) {
        if names.contains(&name.as_str()) {
            out.extend_from_slice(&bytes[pos..start]);
            pos = end;
            taken.push((name, value));
        }
    }
    out.extend_from_slice(&bytes[pos..]);
    (out, taken)
}

/// A first `X-Folder:` header names the mailbox (export writes it): taken out.
fn take_folder(bytes: Vec<u8>) -> (Vec<u8>, Option<String>) {
    match fields(&bytes).into_iter().next() {
        Some((start, end, name, value)) if name == "x-folder" && !value.is_empty() => {
            let mut out = bytes[..start].to_vec();
            out.extend_from_slice(&bytes[end..]);
            (out, Some(value))
        }
        _ => (bytes, None),
    }
}

/// `<id@host>` from a Message-ID header's value.
fn normalize_message_id(value: &str) -> Option<String> {
    let v = value.trim();
    let v = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a..=b],
        _ => v,
    };
    (!v.is_empty() && v != "<>").then(|| v.to_owned())
}

/// Whether the bytes are a message at all: not empty, and starting with a header.
fn check_message(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("the message is empty");
    }
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or(bytes);
    let name_len = first.iter().position(|&b| b == b':');
    match name_len {
        Some(n) if n > 0 && first[..n].iter().all(|b| b.is_ascii_graphic()) => Ok(()),
        _ => Err("it does not start with a header field"),
    }
}

/// Whether `k` can be an IMAP keyword (an atom not starting with `\`).
fn is_keyword(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with('\\')
        && k.len() <= 100
        && k.bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
}

/// A mailbox name as the store keeps it: `/`-separated, no empty levels, controls or
/// wildcards, INBOX in any case as INBOX.
fn mailbox_name(raw: &str, max: usize) -> Result<String, &'static str> {
    let name = raw.trim().trim_end_matches('/');
    if name.is_empty() || name.split('/').any(|l| l.trim().is_empty()) {
        return Err("empty name or level");
    }
    if name.len() > max {
        return Err("name too long");
    }
    if name.chars().any(|c| c.is_control() || c == '*' || c == '%') {
        return Err("control character or wildcard in the name");
    }
    Ok(match name.split_once('/') {
        Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
        None if name.eq_ignore_ascii_case("INBOX") => "INBOX".into(),
        _ => name.to_owned(),
    })
}

/// What an export did.
#[derive(Debug, Default, Clone)]
pub struct ExportSummary {
    pub messages: u64,
    pub mailboxes: u64,
    pub failed: Vec<Failure>,
}

/// Writes every mailbox of `username` to `out` as mboxrd (see the module docs), each
/// message as IMAP serves it.
pub async fn export(
    custody: &Custody,
    blobs: &BlobStore,
    username: &str,
    out: &mut impl Write,
    progress: &ProgressBar,
) -> Result<ExportSummary> {
    let user = custody.user(username).await?;
    let identity = custody.identity(username).await?;
    let mut loader = Loader::new(custody.clone(), blobs.clone(), user.clone(), identity, 1);
    let store = custody.store();
    progress.set_length(mail::count(store, user.id).await?.max(0) as u64);
    let mut summary = ExportSummary::default();
    let out_err = |source| MailfilesError::Io {
        path: PathBuf::from("the mbox file"),
        source,
    };
    for b in mailboxes::list(store, user.id).await? {
        summary.mailboxes += 1;
        let rows = mail::in_mailbox(store, b.id).await?;
        for (i, row) in rows.iter().enumerate() {
            progress.inc(1);
            let bytes = match loader.load(row, &rows[i + 1..]).await {
                Ok(b) => b,
                Err(e) => {
                    summary.failed.push(Failure {
                        what: format!("{} UID {}", b.name, row.uid),
                        why: e.to_string(),
                    });
                    continue;
                }
            };
            let extra = mbox_headers(&b.name, &row.flags);
            mbox::write_message(
                out,
                &sender_of(&bytes),
                row.internal_date,
                extra.as_bytes(),
                &bytes,
            )
            .map_err(out_err)?;
            summary.messages += 1;
        }
    }
    out.flush().map_err(out_err)?;
    progress.finish_and_clear();
    Ok(summary)
}

/// The mbox bookkeeping lines written before a message: its folder and its flags.
fn mbox_headers(mailbox: &str, flags: &str) -> String {
    let has = |f: &str| flags.split_whitespace().any(|g| g.eq_ignore_ascii_case(f));
    let mut s = format!("X-Folder: {mailbox}\n");
    s.push_str(if has("\\Seen") {
        "Status: RO\n"
    } else {
        "Status: O\n"
    });
    let x: String = [
        ("\\Answered", 'A'),
        ("\\Flagged", 'F'),
        ("\\Draft", 'T'),
        ("\\Deleted", 'D'),
    ]
    .iter()
    .filter(|(f, _)| has(f))
    .map(|(_, c)| *c)
    .collect();
    if !x.is_empty() {
        s.push_str(&format!("X-Status: {x}\n"));
    }
    let keywords: Vec<&str> = flags
        .split_whitespace()
        .filter(|f| !f.starts_with('\\'))
        .collect();
    if !keywords.is_empty() {
        s.push_str(&format!("X-Keywords: {}\n", keywords.join(" ")));
    }
    s
}

/// The `From ` line's sender: the From address, or MAILER-DAEMON.
fn sender_of(bytes: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(bytes)
        .and_then(|m| {
            m.from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(|a| a.to_owned())
        })
        .filter(|a| !a.is_empty() && !a.chars().any(|c| c.is_whitespace() || c.is_control()))
        .unwrap_or_else(|| "MAILER-DAEMON".to_owned())
}

fn progress_bar(template: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// "1 message", "2 messages".
fn messages(n: usize) -> String {
    format!("{n} message{}", if n == 1 { "" } else { "s" })
}

pub async fn import_command(
    config: &crate::config::Config,
    user: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let custody = crate::custody::open(config).await?;
    let blobs = BlobStore::new(config.server.data_dir.join("blobs"));
    let options = ImportOptions::from_config(config);
    let bar = progress_bar("{wide_bar} {percent}% {msg} ({eta} left)");
    let result = import(&custody, &blobs, user, path, &options, &bar).await;
    custody.store().close().await;
    let summary = result?;
    for f in &summary.failed {
        eprintln!("skipped {}: {}", f.what, f.why);
    }
    println!("{summary}");
    // What was imported stays; a script still learns that the import was not whole.
    if !summary.failed.is_empty() {
        anyhow::bail!(
            "{} could not be imported (listed above); the rest is in",
            messages(summary.failed.len())
        );
    }
    Ok(())
}

pub async fn export_command(
    config: &crate::config::Config,
    user: &str,
    mbox: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let custody = crate::custody::open(config).await?;
    let blobs = BlobStore::new(config.server.data_dir.join("blobs"));
    let dir = match mbox.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Written beside the target and renamed into place: an interrupted export never
    // leaves a cut-off mbox under the name asked for.
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let bar = progress_bar("{wide_bar} {pos}/{len} messages ({eta} left)");
    let mut writer = std::io::BufWriter::new(tmp);
    let result = export(&custody, &blobs, user, &mut writer, &bar).await;
    custody.store().close().await;
    let summary = result?;
    let tmp = writer.into_inner().map_err(|e| e.into_error())?;
    tmp.persist(mbox)
        .with_context(|| format!("cannot write {}", mbox.display()))?;
    for f in &summary.failed {
        eprintln!("skipped {}: {}", f.what, f.why);
    }
    println!(
        "exported {} messages from {} mailboxes to {}, failed {}",
        summary.messages,
        summary.mailboxes,
        mbox.display(),
        summary.failed.len()
    );
    if !summary.failed.is_empty() {
        anyhow::bail!(
            "{} could not be exported (listed above)",
            messages(summary.failed.len())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_and_stripped() {
        let m = normalize_crlf(
            b"X-Folder: Archive/2024\nStatus: RO\nSubject: hi\n there\nX-Status: AF\n\nStatus: body\n",
        );
        let (rest, meta) = strip_fields(&m, &["status", "x-status"]);
        assert_eq!(
            meta,
            vec![
                ("status".to_owned(), "RO".to_owned()),
                ("x-status".to_owned(), "AF".to_owned())
            ]
        );
        assert_eq!(header_value(&rest, "subject").unwrap(), "hi there");
        let (rest, folder) = take_folder(rest);
        assert_eq!(folder.as_deref(), Some("Archive/2024"));
        assert_eq!(rest, b"Subject: hi\r\n there\r\n\r\nStatus: body\r\n");
    }

    #[test]
    fn names_ids_and_checks() {
        assert_eq!(mailbox_name("inbox/x", 100).unwrap(), "INBOX/x");
        assert!(mailbox_name("a//b", 100).is_err());
        assert!(mailbox_name("a*", 100).is_err());
        assert_eq!(
            normalize_message_id(" <a@b> (comment)").as_deref(),
            Some("<a@b>")
        );
        assert!(check_message(b"\r\n\r\n").is_err());
        assert!(check_message(b"hello world\r\n").is_err());
        assert!(check_message(b"Subject: x\r\n\r\n").is_ok());
        assert_eq!(normalize_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(sender_of(b"Subject: x\r\n\r\n"), "MAILER-DAEMON");
        assert_eq!(sender_of(b"From: A <a@b.example>\r\n\r\n"), "a@b.example");
        assert_eq!(
            mbox_headers("INBOX", "\\Seen \\Flagged kw"),
            "X-Folder: INBOX\nStatus: RO\nX-Status: F\nX-Keywords: kw\n"
        );
    }
}
