//! Backups: a consistent snapshot of the data while the daemon runs, and putting one
//! back.
//!
//! A backup is a folder:
//!
//! - `database.sqlite`: on SQLite, a snapshot made with `VACUUM INTO` on the live
//!   database. It runs in one read transaction, so it is consistent while the daemon
//!   keeps writing (WAL lets the writer go on), and the copy is compact and checked
//!   (`PRAGMA quick_check`) before the backup counts. On PostgreSQL the database is not
//!   copied: `pg_dump` does that, and the backup says how.
//! - `data/`: every other file of the data folder: the blobs (content-addressed and
//!   never changed, so a backup into a folder holding an earlier one copies only the
//!   new ones), DKIM keys, the TLS certificate and key, ACME state. Blobs are written
//!   before the rows naming them are committed, so every blob the snapshot names is
//!   there when the files are copied after it; a blob written later is harmless.
//! - `dkim/` and `tls/`: the DKIM keys and certificate files when the config puts
//!   them outside the data folder; `config/` the config file when it is known.
//! - `manifest.json`: the version, the time, what is included, and the SHA-256 and size
//!   of every file; written last, so a folder without it is not a backup.
//!
//! The master key is never included: the user keys in the database are sealed under
//! it, so a backup holding both would hand every mailbox to whoever reads the backup.
//! Without it the backup cannot be restored, so keep it apart and safe.

use crate::config::Config;
use crate::custody::master_key::{MasterKey, MasterKeyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The manifest's file name in a backup folder.
pub const MANIFEST: &str = "manifest.json";
/// The SQLite snapshot's file name in a backup folder.
pub const DATABASE: &str = "database.sqlite";
/// The layout version this code writes and reads.
pub const FORMAT: u32 = 1;

const CHECK_SETTING: &str = "master_key_check";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Custody(#[from] crate::custody::CustodyError),
    #[error("there is no database to back up at {0}")]
    NoDatabase(PathBuf),
    #[error("the database snapshot failed its check: {0}")]
    Damaged(String),
    #[error(
        "{0} is not empty and holds no earlier backup: give an empty or new folder, so no backup mixes with other files"
    )]
    NotEmpty(PathBuf),
    #[error("the backup folder must not be inside the data folder {0}")]
    InsideData(PathBuf),
    #[error("{0} is not a backup: it has no {MANIFEST} (an interrupted backup has none)")]
    NoManifest(PathBuf),
    #[error("{path} cannot be read: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "the backup was made by format {0} and this lnmp-bridge reads format {FORMAT}: use a newer lnmp-bridge"
    )]
    Format(u32),
    #[error("{0} in the backup is missing or damaged (its checksum differs): nothing was restored")]
    Checksum(String),
    #[error(
        "{0} holds a database already: restore only into a new data folder, or add --force to replace it (stop the daemon first; the old files are kept beside it)"
    )]
    DatabaseExists(PathBuf),
    #[error(
        "the master key is missing: {0} does not exist. Backups never hold the master key: copy the master key file of the backed-up domain there (mode 0600), or set LNMP_MASTER_KEY. Nothing was restored."
    )]
    MasterKeyMissing(PathBuf),
    #[error(
        "the master key at {0} (or in LNMP_MASTER_KEY) is not the key of this backup: its user keys would not open. Put the backed-up domain's master key there. Nothing was restored."
    )]
    WrongMasterKey(PathBuf),
    #[error("the master key: {0}")]
    MasterKey(MasterKeyError),
    #[error("the backup is of a PostgreSQL database, but this config uses SQLite ({0})")]
    WrongBackend(String),
    #[error(
        "the backup holds a SQLite database, but this config uses PostgreSQL: restore it with a SQLite config (database.url empty); there is no converter"
    )]
    SqliteOntoPostgres,
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a file of the backup goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// The data folder (`data/` in the backup).
    Data,
    /// The DKIM folder, when outside the data folder.
    Dkim,
    /// The configured certificate (`tls/cert.pem`) and key (`tls/key.pem`), when outside
    /// the data folder.
    Tls,
    /// The config file; not put back by `restore` (yours may differ), only kept.
    Config,
    /// The SQLite snapshot.
    Database,
}

impl Section {
    fn folder(self) -> &'static str {
        match self {
            Section::Data => "data",
            Section::Dkim => "dkim",
            Section::Tls => "tls",
            Section::Config => "config",
            Section::Database => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub section: Section,
    /// Relative to the section's folder, with `/` separators.
    pub path: String,
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

impl FileEntry {
    /// Where the file is inside the backup folder.
    pub fn in_backup(&self, dir: &Path) -> PathBuf {
        let mut p = dir.join(self.section.folder());
        for part in self.path.split('/') {
            p.push(part);
        }
        p
    }
}

/// Which database the backup covers and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DatabasePart {
    /// The snapshot is `database.sqlite`.
    Sqlite,
    /// Not included: run `pg_dump` (the command is here, password left out).
    Postgres { pg_dump: String, pg_restore: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The lnmp-bridge version that made it.
    pub version: String,
    /// Unix seconds when the snapshot was taken.
    pub created_at: i64,
    pub domain: String,
    pub hostname: String,
    pub database: DatabasePart,
    /// Always false: see the module documentation.
    pub master_key_included: bool,
    /// The master key's check value stored in the database (hex), so `restore` knows a
    /// wrong key before it changes anything. Empty if the database had none yet.
    pub master_key_check: String,
    pub files: Vec<FileEntry>,
}

/// What [`backup`] did, for the operator.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Files copied this time (the rest were in the folder from an earlier backup).
    pub copied: usize,
    pub master_key_file: PathBuf,
}

/// The SQLite file behind a `sqlite:` URL; None for PostgreSQL.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .ok()
        .map(|o| o.get_filename().to_owned())
}

/// A PostgreSQL URL with its password replaced by `****`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:****"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{user}@{host}{tail}")
}

/// The URL without its password, for commands that read the password elsewhere.
fn without_password(url: &str) -> String {
    redact_url(url).replace(":****@", "@")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok((hex::encode(h.finalize()), n))
}

/// Makes `dir` (and parents), readable by its owner only: backups hold private keys.
fn private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))
}

/// Copies `from` to `to` through a temporary file renamed into place, keeping the
/// owner-only mode of private files.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    private_dir(parent)?;
    let mut src = std::fs::File::open(from).map_err(io(from))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(io(parent))?;
    std::io::copy(&mut src, tmp.as_file_mut()).map_err(io(to))?;
    tmp.as_file().sync_all().map_err(io(to))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(from)
            .map_err(io(from))?
            .permissions()
            .mode()
            & 0o777;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(io(to))?;
    }
    tmp.persist(to).map_err(|e| io(to)(e.error))?;
    Ok(())
}

/// Every file under `root`, relative, with `/` separators, skipping what `skip` names.
fn walk(root: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            if skip(&path) {
                continue;
            }
            let kind = entry.file_type().map_err(io(&path))?;
            let name = entry.file_name();
            // Temporary files of blob and key writes in progress.
            if name.to_string_lossy().starts_with(".tmp") {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(rel.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn unix_now() -> i64 {
    i64::try_from(crate::store::unix_now()).unwrap_or(i64::MAX)
}

/// Normalized for comparing paths that may not exist yet.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Takes a backup of the domain `config` describes into `dir` (new, empty, or holding
/// an earlier backup, whose blobs are kept and not copied again). The daemon may run.
pub async fn backup(
    config: &Config,
    config_file: Option<&Path>,
    dir: &Path,
) -> Result<BackupReport> {
    let data_dir = absolute(&config.server.data_dir);
    let dir = absolute(dir);
    if dir.starts_with(&data_dir) {
        return Err(BackupError::InsideData(data_dir));
    }
    let earlier = dir.join(MANIFEST);
    let earlier = if earlier.exists() {
        Some(read_manifest(&dir)?)
    } else {
        if dir.exists() && std::fs::read_dir(&dir).map_err(io(&dir))?.next().is_some() {
            return Err(BackupError::NotEmpty(dir));
        }
        None
    };
    private_dir(&dir)?;
    // A folder whose manifest is gone is a backup in progress, or a broken one.
    if earlier.is_some() {
        std::fs::remove_file(dir.join(MANIFEST)).map_err(io(&dir))?;
    }

    let url = config.database_url();
    let created_at = unix_now();
    let mut files = Vec::new();
    let mut copied = 0;
    let sqlite = sqlite_file(&url);
    let (database, check) = match &sqlite {
        Some(db) => {
            let check = snapshot_sqlite(db, &dir.join(DATABASE)).await?;
            let (sha256, bytes) = sha256_file(&dir.join(DATABASE))?;
            files.push(FileEntry {
                section: Section::Database,
                path: DATABASE.into(),
                bytes,
                sha256,
            });
            copied += 1;
            (DatabasePart::Sqlite, check)
        }
        None => {
            let check = postgres_check(config).await?;
            let plain = without_password(&url);
            let dump = dir.join("database.pgdump");
            (
                DatabasePart::Postgres {
                    pg_dump: format!(
                        "pg_dump --format=custom --file={} --dbname={}",
                        shell_quote(&dump.display().to_string()),
                        shell_quote(&plain)
                    ),
                    pg_restore: format!(
                        "pg_restore --clean --if-exists --no-owner --dbname={} {}",
                        shell_quote(&plain),
                        shell_quote(&dump.display().to_string())
                    ),
                },
                check,
            )
        }
    };

    // The files, after the snapshot: every blob it names exists by now.
    let master = absolute(&config.master_key_file());
    let db_files: Vec<PathBuf> = sqlite
        .iter()
        .flat_map(|db| {
            let db = absolute(db);
            ["", "-wal", "-shm", "-journal"].map(|s| {
                let mut name = db.clone().into_os_string();
                name.push(s);
                PathBuf::from(name)
            })
        })
        .collect();
    let skip = |p: &Path| {
        let p = absolute(p);
        p == master || db_files.contains(&p) || p == dir
    };
    let mut sources: Vec<(Section, String, PathBuf)> = walk(&data_dir, &skip)?
        .into_iter()
        .map(|rel| (Section::Data, rel.clone(), data_dir.join(&rel)))
        .collect();
    let dkim = absolute(&config.dkim_dir());
    if !dkim.starts_with(&data_dir) {
        for rel in walk(&dkim, &skip)? {
            sources.push((Section::Dkim, rel.clone(), dkim.join(&rel)));
        }
    }
    for (name, file) in [
        ("cert.pem", &config.tls.cert_file),
        ("key.pem", &config.tls.key_file),
    ] {
        if !file.as_os_str().is_empty() && !absolute(file).starts_with(&data_dir) {
            sources.push((Section::Tls, name.into(), file.clone()));
        }
    }
    if let Some(c) = config_file.filter(|c| c.is_file()) {
        let name = c.file_name().map_or("lnmp-bridge.toml".into(), |n| {
            n.to_string_lossy().into_owned()
        });
        sources.push((Section::Config, name, c.to_owned()));
    }

    for (section, rel, from) in sources {
        let mut entry = FileEntry {
            section,
            path: rel,
            bytes: 0,
            sha256: String::new(),
        };
        let to = entry.in_backup(&dir);
        // Blobs are named by their content: one already in the folder is this one.
        let is_blob = section == Section::Data && entry.path.starts_with("blobs/");
        let kept = if is_blob && to.is_file() {
            earlier.as_ref().and_then(|m| {
                m.files
                    .iter()
                    .find(|f| f.section == section && f.path == entry.path)
            })
        } else {
            None
        };
        if let Some(k) = kept {
            entry.sha256 = k.sha256.clone();
            entry.bytes = k.bytes;
        } else {
            match copy_file(&from, &to) {
                Ok(()) => copied += 1,
                // Gone between listing and copying (a temporary file, a renewal).
                Err(BackupError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && std::fs::metadata(&from).is_err() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
            let (sha256, bytes) = sha256_file(&to)?;
            entry.sha256 = sha256;
            entry.bytes = bytes;
        }
        files.push(entry);
    }

    let manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        created_at,
        domain: config.server.domain.clone(),
        hostname: config.server.hostname.clone(),
        database,
        master_key_included: false,
        master_key_check: check.map(hex::encode).unwrap_or_default(),
        files,
    };
    write_manifest(&dir, &manifest)?;
    Ok(BackupReport {
        dir,
        manifest,
        copied,
        master_key_file: config.master_key_file(),
    })
}

/// `VACUUM INTO` the live database: one read transaction, so a consistent copy while
/// the daemon writes. Returns the master key check value the snapshot holds.
async fn snapshot_sqlite(db: &Path, to: &Path) -> Result<Option<Vec<u8>>> {
    use sqlx::{ConnectOptions, Connection};
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    // VACUUM INTO refuses to write over a file: an earlier backup's snapshot goes.
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(to)(e)),
        _ => {}
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = options.connect().await?;
    sqlx::query("VACUUM INTO ?")
        .bind(to.display().to_string())
        .execute(&mut conn)
        .await?;
    conn.close().await?;

    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(to)
        .create_if_missing(false)
        .read_only(true);
    let mut snap = options.connect().await?;
    let verdict: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut snap)
        .await?;
    if verdict != "ok" {
        return Err(BackupError::Damaged(verdict));
    }
    let check = read_check(&mut snap).await?;
    snap.close().await?;
    Ok(check)
}

async fn read_check(conn: &mut sqlx::SqliteConnection) -> Result<Option<Vec<u8>>> {
    let has: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'settings'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if has == 0 {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(CHECK_SETTING)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

async fn postgres_check(config: &Config) -> Result<Option<Vec<u8>>> {
    let store = crate::store::Store::open(
        &config.database_url(),
        &crate::store::StoreOptions::default(),
    )
    .await?;
    let check = if store.has_schema().await? {
        crate::store::settings::get(&store, CHECK_SETTING).await?
    } else {
        None
    };
    store.close().await;
    Ok(check)
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    std::io::Write::write_all(tmp.as_file_mut(), &text).map_err(io(&path))?;
    tmp.as_file().sync_all().map_err(io(&path))?;
    tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads and checks the manifest of the backup in `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NoManifest(dir.to_owned()));
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| BackupError::Manifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if manifest.format > FORMAT {
        return Err(BackupError::Format(manifest.format));
    }
    for f in &manifest.files {
        if f.path.split('/').any(|p| p == ".." || p.is_empty()) || f.path.starts_with('/') {
            return Err(BackupError::Manifest {
                path: path.clone(),
                reason: format!("the file name {:?} leaves the backup folder", f.path),
            });
        }
    }
    Ok(manifest)
}

/// Checks every file of the backup against its checksum.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<()> {
    for f in &manifest.files {
        let path = f.in_backup(dir);
        let ok = sha256_file(&path).is_ok_and(|(sum, n)| sum == f.sha256 && n == f.bytes);
        if !ok {
            return Err(BackupError::Checksum(path.display().to_string()));
        }
    }
    Ok(())
}

/// What [`restore`] did, for the operator.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub manifest: Manifest,
    pub files: usize,
    /// The database files that were there before (`--force`), moved aside.
    pub replaced: Vec<PathBuf>,
    /// The config file kept in the backup, which restore does not put back.
    pub config_in_backup: Option<PathBuf>,
}

/// Puts the backup in `dir` back for the domain `config` describes. The master key
/// (not in the backup) must be in place first: it is checked before anything changes.
/// Refuses a data folder that has a database unless `force`.
pub async fn restore(config: &Config, dir: &Path, force: bool) -> Result<RestoreReport> {
    let manifest = read_manifest(dir)?;
    verify(dir, &manifest)?;

    let key_path = config.master_key_file();
    let key = match MasterKey::load(&key_path) {
        Ok(k) => k,
        Err(MasterKeyError::Missing(p)) => return Err(BackupError::MasterKeyMissing(p)),
        Err(e) => return Err(BackupError::MasterKey(e)),
    };
    if !manifest.master_key_check.is_empty() {
        let stored =
            hex::decode(&manifest.master_key_check).map_err(|e| BackupError::Manifest {
                path: dir.join(MANIFEST),
                reason: format!("master_key_check: {e}"),
            })?;
        if key.verify_check(&stored).is_err() {
            return Err(BackupError::WrongMasterKey(key_path));
        }
    }

    let url = config.database_url();
    let sqlite = sqlite_file(&url);
    let mut replaced = Vec::new();
    match (&manifest.database, &sqlite) {
        (DatabasePart::Sqlite, Some(db)) => {
            if db.is_file() && std::fs::metadata(db).map_err(io(db))?.len() > 0 {
                if !force {
                    return Err(BackupError::DatabaseExists(db.clone()));
                }
                let stamp = unix_now();
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut from = db.clone().into_os_string();
                    from.push(suffix);
                    let from = PathBuf::from(from);
                    if from.exists() {
                        let mut to = from.clone().into_os_string();
                        to.push(format!(".replaced-{stamp}"));
                        let to = PathBuf::from(to);
                        std::fs::rename(&from, &to).map_err(io(&from))?;
                        replaced.push(to);
                    }
                }
            }
        }
        (DatabasePart::Postgres { .. }, Some(_)) => {
            return Err(BackupError::WrongBackend(url));
        }
        (DatabasePart::Sqlite, None) => return Err(BackupError::SqliteOntoPostgres),
        // The dump is restored with pg_restore: only the files are put back here.
        (DatabasePart::Postgres { .. }, None) => {}
    }

    private_dir(&config.server.data_dir)?;
    let mut count = 0;
    let mut config_in_backup = None;
    for f in &manifest.files {
        let from = f.in_backup(dir);
        let to = match f.section {
            Section::Data => config.server.data_dir.join(&f.path),
            Section::Dkim => config.dkim_dir().join(&f.path),
            Section::Tls
                if f.path == "cert.pem" && !config.tls.cert_file.as_os_str().is_empty() =>
            {
                config.tls.cert_file.clone()
            }
            Section::Tls if f.path == "key.pem" && !config.tls.key_file.as_os_str().is_empty() => {
                config.tls.key_file.clone()
            }
            // The config names no such file here: the self-signed one is made anew.
            Section::Tls => continue,
            Section::Config => {
                config_in_backup = Some(from);
                continue;
            }
            Section::Database => match &sqlite {
                Some(db) => db.clone(),
                None => continue,
            },
        };
        copy_file(&from, &to)?;
        count += 1;
    }

    // The real proof: custody opens the restored database with the key (and brings an
    // older schema up to date).
    if sqlite.is_some() {
        let custody = crate::custody::open(config).await?;
        custody.store().close().await;
    }
    Ok(RestoreReport {
        manifest,
        files: count,
        replaced,
        config_in_backup,
    })
}

/// The config file in use, if it can be told: LNMP_CONFIG, else ./lnmp-bridge.toml,
/// else lnmp-bridge.toml beside the data folder (where quickstart writes it).
fn config_file_guess(config: &Config) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LNMP_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let here = PathBuf::from(crate::quickstart::CONFIG_FILE);
    if here.is_file() {
        return Some(here);
    }
    let beside = absolute(&config.server.data_dir)
        .parent()?
        .join(crate::quickstart::CONFIG_FILE);
    beside.is_file().then_some(beside)
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

pub async fn backup_command(config: &Config, dir: &Path) -> anyhow::Result<()> {
    let config_file = config_file_guess(config);
    let report = backup(config, config_file.as_deref(), dir).await?;
    let m = &report.manifest;
    let total: u64 = m.files.iter().map(|f| f.bytes).sum();
    println!(
        "Backed up {} into {}: {} files, {} ({} copied now).",
        m.domain,
        report.dir.display(),
        m.files.len(),
        size(total),
        report.copied
    );
    match &m.database {
        DatabasePart::Sqlite => {
            println!("  database  SQLite snapshot taken online with VACUUM INTO: {DATABASE}")
        }
        DatabasePart::Postgres {
            pg_dump,
            pg_restore,
        } => {
            println!(
                "  database  PostgreSQL is NOT in this folder. Dump it now, right after the files:"
            );
            println!("              {pg_dump}");
            println!(
                "            (the password from PGPASSWORD or ~/.pgpass). To restore it later:"
            );
            println!("              {pg_restore}");
        }
    }
    if m.files.iter().any(|f| f.section == Section::Config) {
        println!("  config    included");
    } else {
        println!("  config    not found; keep a copy of your config file with the backup");
    }
    println!();
    println!("!! The master key is NOT in the backup, and the backup is useless without it:");
    println!(
        "!!   {}{}",
        report.master_key_file.display(),
        if std::env::var_os(crate::custody::master_key::ENV_VAR).is_some() {
            " (this run used LNMP_MASTER_KEY instead)"
        } else {
            ""
        }
    );
    println!("!! Keep a copy of it somewhere else than the backup (a password manager, paper):");
    println!("!! stored together, whoever gets the backup could open every user's key.");
    Ok(())
}

pub async fn restore_command(config: &Config, dir: &Path, force: bool) -> anyhow::Result<()> {
    let report = restore(config, dir, force).await?;
    let m = &report.manifest;
    println!(
        "Restored the backup of {} taken at unix time {} (lnmp-bridge {}): {} files into {}.",
        m.domain,
        m.created_at,
        m.version,
        report.files,
        config.server.data_dir.display()
    );
    for p in &report.replaced {
        println!("  the database that was there is kept as {}", p.display());
    }
    if let DatabasePart::Postgres { pg_restore, .. } = &m.database {
        println!("The database is PostgreSQL: restore its dump with");
        println!("  {pg_restore}");
        println!("then run `lnmp-bridge doctor`.");
    } else {
        println!("The master key opens the restored database.");
    }
    if let Some(c) = &report.config_in_backup {
        println!(
            "The backup's config file is {} (not put back: compare it with yours).",
            c.display()
        );
    }
    if m.domain != config.server.domain {
        println!(
            "Note: the backup is of {}, and this config is for {}.",
            m.domain, config.server.domain
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@db.example:5432/mail?sslmode=require"),
            "postgres://u:****@db.example:5432/mail?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(without_password("postgres://u:p@h/db"), "postgres://u@h/db");
        assert_eq!(
            sqlite_file("sqlite://some/where/x.db?mode=rwc"),
            Some(PathBuf::from("some/where/x.db"))
        );
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }
}
