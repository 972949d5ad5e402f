//! Custody: the domain's users, their passwords, and the LNMP key each one holds through
//! the daemon — sealed at rest under the master key, exportable as 24 words so a user
//! can leave. Also each user's contacts and prices.

pub mod master_key;
pub mod password;
pub mod pricing;
pub mod vault;

use crate::config::Config;
use crate::lnmp::lookup::LookupDocument;
use crate::lnmp::{Address, Identity, Seed};
use crate::store::contacts::{self, Contact, Level};
use crate::store::pricing::{self as store_pricing, Overrides, PassKind};
use crate::store::users::{self, UserRow};
use crate::store::{self, Store, StoreError, settings};
use master_key::{MasterKey, MasterKeyError, Purpose};
use pricing::PricingPolicy;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error("{0}")]
    Invalid(String),
    #[error("the stored key of user {0} does not match their public key")]
    KeyMismatch(String),
}

pub type Result<T, E = CustodyError> = std::result::Result<T, E>;

const CHECK_SETTING: &str = "master_key_check";

/// What the rest of the daemon needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub address: Address,
    pub pubkey: crate::lnmp::PublicKey,
}

#[derive(Clone)]
pub struct Custody {
    store: Store,
    master: Arc<MasterKey>,
    domain: String,
    relay_url: String,
    pricing: crate::config::Pricing,
    /// The local part of reply addresses, which no user may take.
    reply_local_part: String,
    /// Password checks running at once: each Argon2id check takes 19 MiB and a core,
    /// so a burst of logins waits here instead of taking memory without bound.
    checks: Arc<tokio::sync::Semaphore>,
}

/// Opens the store behind `config`, checks the master key against it before changing
/// anything, then migrates. On a database that has never seen a key, a missing key file
/// is created; on one that has, a missing or wrong key is an error.
pub async fn open(config: &Config) -> Result<Custody> {
    let options = store::StoreOptions {
        max_connections: config.database.max_connections,
        sqlite_group_commit_max: config.database.sqlite_group_commit_max,
    };
    create_private_dir(&config.server.data_dir)?;
    let store = Store::open(&config.database_url(), &options).await?;
    let check = if store.has_schema().await? {
        settings::get(&store, CHECK_SETTING).await?
    } else {
        None
    };
    let key_path = config.master_key_file();
    let master = match (&check, MasterKey::load(&key_path)) {
        (Some(stored), Ok(key)) => {
            key.verify_check(stored)?;
            key
        }
        (Some(_), Err(e)) => return Err(e.into()),
        (None, Ok(key)) => key,
        (None, Err(MasterKeyError::Missing(_))) => {
            let key = MasterKey::generate();
            key.create_file(&key_path)?;
            tracing::info!(path = %key_path.display(), "created a new master key: back it up apart from the database");
            key
        }
        (None, Err(e)) => return Err(e.into()),
    };
    store.migrate().await?;
    // Several nodes may start on a fresh database at once: the first check value wins,
    // and a node holding another key stops here.
    let stored = settings::set_once(&store, CHECK_SETTING, master.check_value()).await?;
    master.verify_check(&stored)?;
    Ok(Custody {
        store,
        master: Arc::new(master),
        domain: config.server.domain.clone(),
        relay_url: config.relay_url(),
        pricing: config.pricing.clone(),
        reply_local_part: config.outbound.reply_local_part.clone(),
        checks: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
    })
}

/// The data folder holds the database and keys: only the daemon's user may enter it.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| {
        CustodyError::Invalid(format!(
            "cannot create the data folder {}: {e}",
            dir.display()
        ))
    })
}

fn seed_aad(pubkey: &str) -> Vec<u8> {
    format!("seed:{pubkey}").into_bytes()
}

/// Normalizes a contact: an LNMP address to its canonical form, an email address to
/// lower case.
pub fn normalize_contact(address: &str) -> Result<String> {
    let a = address.trim();
    if Address::looks_like(a) {
        return a
            .parse::<Address>()
            .map(|x| x.to_string())
            .map_err(|e| CustodyError::Invalid(format!("{a:?} is not a valid LNMP address: {e}")));
    }
    normalize_email(a)
        .ok_or_else(|| CustodyError::Invalid(format!("{a:?} is not an email or LNMP address")))
}

/// An email address in lower case, or None if `a` is not one.
fn normalize_email(a: &str) -> Option<String> {
    match a.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && a.bytes().all(|b| b.is_ascii_graphic())
                && !local.contains('@') =>
        {
            Some(a.to_ascii_lowercase())
        }
        _ => None,
    }
}

impl Custody {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn info(&self, row: &UserRow) -> Result<UserInfo> {
        let pubkey = row
            .pubkey
            .parse()
            .map_err(|_| CustodyError::KeyMismatch(row.username.clone()))?;
        let address = Address::new(&pubkey, &row.username, Some(&self.domain))
            .map_err(|e| CustodyError::Invalid(e.to_string()))?;
        Ok(UserInfo {
            id: row.id,
            username: row.username.clone(),
            email: format!("{}@{}", row.username, self.domain),
            address,
            pubkey,
        })
    }

    fn seal_seed(&self, seed: &Seed) -> (String, Vec<u8>) {
        let pubkey = Identity::from_seed(seed).public_key().to_hex();
        let sealed = self
            .master
            .seal(Purpose::Seed, &seed_aad(&pubkey), seed.as_bytes());
        (pubkey, sealed)
    }

    /// Creates a user with a fresh identity and the given password.
    pub async fn add_user(&self, username: &str, password: &str) -> Result<UserInfo> {
        crate::lnmp::address::validate_username(username)
            .map_err(|e| CustodyError::Invalid(format!("user name {username:?}: {e}")))?;
        if username.eq_ignore_ascii_case(&self.reply_local_part) {
            return Err(CustodyError::Invalid(format!(
                "user name {username:?} is reserved for reply addresses (outbound.reply_local_part)"
            )));
        }
        let password_hash = hash_blocking(password).await?;
        let seed = Seed::generate(&mut rand_core::OsRng);
        let (pubkey, sealed_seed) = self.seal_seed(&seed);
        let row = users::insert(
            &self.store,
            users::NewUser {
                username: username.to_owned(),
                password_hash,
                pubkey,
                sealed_seed,
            },
        )
        .await?;
        self.info(&row)
    }

    /// The user, or None if there is no such user.
    pub async fn find_user(&self, username: &str) -> Result<Option<UserInfo>> {
        users::get(&self.store, username)
            .await?
            .map(|r| self.info(&r))
            .transpose()
    }

    /// The user created first: quickstart's admin, who gets postmaster's mail.
    pub async fn first_user(&self) -> Result<Option<UserInfo>> {
        users::first(&self.store)
            .await?
            .map(|r| self.info(&r))
            .transpose()
    }

    /// The relay URL the domain's users publish.
    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    /// The LNMP identity of an email sender, derived from the master key and the
    /// address, so the same sender always has the same key and an LNMP reply to it can
    /// be routed back to email.
    pub fn legacy_identity(&self, address: &str) -> Identity {
        let mut input = address.as_bytes().to_vec();
        // A derived value is a valid secret key except with probability ~2^-128; the
        // counter makes the derivation total anyway.
        for counter in 0u8.. {
            let bytes = self.master.derive(Purpose::LegacySender, &input);
            if let Ok(id) = Identity::from_secret_bytes(&bytes) {
                return id;
            }
            input.push(counter);
        }
        unreachable!("a valid key is found within 256 tries")
    }

    /// The local part of reply addresses.
    pub fn reply_local_part(&self) -> &str {
        &self.reply_local_part
    }

    /// The token of the reply address through which `replier` answers `peer_key`:
    /// derived from the master key, so it is the same every time and cannot be
    /// guessed: 32 lowercase hex digits (128 bits), which survive mail systems that
    /// change the case of a local part.
    pub fn reply_token(
        &self,
        replier: &crate::store::reply_routes::Replier,
        peer_key: &str,
    ) -> String {
        use crate::store::reply_routes::Replier;
        let input = match replier {
            Replier::User(id) => format!("user:{id}:{peer_key}"),
            Replier::Legacy(a) => format!("legacy:{}:{peer_key}", a.to_ascii_lowercase()),
        };
        let bytes = self.master.derive(Purpose::ReplyRoute, input.as_bytes());
        hex::encode(&bytes[..16])
    }

    /// Sets or clears a user's forward address (an email address outside this domain).
    pub async fn set_forward(&self, username: &str, address: Option<&str>) -> Result<()> {
        let address = match address {
            None => None,
            Some(a) => {
                let a = a.trim();
                let a = normalize_email(a)
                    .filter(|_| {
                        !a.contains(['<', '>', '(', ')', '[', ']', ',', ';', ':', '\\', '"'])
                    })
                    .ok_or_else(|| {
                        CustodyError::Invalid(format!("{a:?} is not an email address"))
                    })?;
                if a.rsplit_once('@').is_some_and(|(_, d)| d == self.domain) {
                    return Err(CustodyError::Invalid(format!(
                        "{a} is an address of this domain; forwarding is for mail elsewhere"
                    )));
                }
                Some(a)
            }
        };
        users::set_forward(&self.store, username, address).await?;
        Ok(())
    }

    pub async fn user(&self, username: &str) -> Result<UserInfo> {
        self.info(&users::require(&self.store, username).await?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        users::list(&self.store)
            .await?
            .iter()
            .map(|r| self.info(r))
            .collect()
    }

    pub async fn remove_user(&self, username: &str) -> Result<()> {
        Ok(users::remove(&self.store, username).await?)
    }

    pub async fn set_password(&self, username: &str, password: &str) -> Result<()> {
        let hash = hash_blocking(password).await?;
        Ok(users::set_password_hash(&self.store, username, hash).await?)
    }

    /// Whether `password` is the user's. Unknown users cost the same time as known ones.
    /// A turn to check a password. Servers take it before they count the attempt
    /// against the rate limits, so correct logins arriving together (a mail client
    /// opens several connections) are never counted as failures in flight.
    pub async fn password_check_turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.checks
            .clone()
            .acquire_owned()
            .await
            .expect("the password check semaphore is never closed")
    }

    pub async fn verify_password(&self, username: &str, password: &str) -> Result<bool> {
        // Unknown users are checked against a real hash too, so timing does not reveal
        // who exists.
        static DUMMY: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| password::hash(&password::generate()).unwrap_or_default());
        let hash = users::get(&self.store, username)
            .await?
            .map(|r| r.password_hash);
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY.clone());
        let password = zeroize::Zeroizing::new(password.to_owned());
        let ok = tokio::task::spawn_blocking(move || password::verify(&hash, &password))
            .await
            .unwrap_or(false);
        Ok(known && ok)
    }

    /// The user's seed, opened under the master key and checked against their public key.
    pub async fn seed(&self, username: &str) -> Result<Seed> {
        let row = users::require(&self.store, username).await?;
        let bytes = self
            .master
            .open(Purpose::Seed, &seed_aad(&row.pubkey), &row.sealed_seed)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CustodyError::KeyMismatch(username.to_owned()))?;
        let seed = Seed::from_bytes(bytes);
        if Identity::from_seed(&seed).public_key().to_hex() != row.pubkey {
            return Err(CustodyError::KeyMismatch(username.to_owned()));
        }
        Ok(seed)
    }

    pub async fn identity(&self, username: &str) -> Result<Identity> {
        Ok(Identity::from_seed(&self.seed(username).await?))
    }

    /// The user's 24 words: with them they can take their identity elsewhere.
    pub async fn export_key(&self, username: &str) -> Result<zeroize::Zeroizing<String>> {
        Ok(self.seed(username).await?.to_mnemonic())
    }

    /// Replaces the user's identity with the one in `mnemonic`.
    pub async fn import_key(&self, username: &str, mnemonic: &str) -> Result<UserInfo> {
        let seed =
            Seed::from_mnemonic(mnemonic).map_err(|e| CustodyError::Invalid(e.to_string()))?;
        let (pubkey, sealed) = self.seal_seed(&seed);
        users::set_identity(&self.store, username, pubkey, sealed).await?;
        self.user(username).await
    }

    /// The lookup document for `username`, or None if there is no such user.
    pub async fn lookup(&self, username: &str) -> Result<Option<LookupDocument>> {
        let Some(row) = users::get(&self.store, username).await? else {
            return Ok(None);
        };
        let info = self.info(&row)?;
        let policy = self.policy(&info).await?;
        Ok(Some(LookupDocument {
            v: crate::lnmp::VERSION,
            name: info.username,
            pubkey: row
                .pubkey
                .parse()
                .map_err(|_| CustodyError::KeyMismatch(row.username.clone()))?,
            relays: vec![self.relay_url.clone()],
            prices: policy.prices(),
        }))
    }

    pub async fn policy(&self, user: &UserInfo) -> Result<PricingPolicy> {
        let o = store_pricing::get(&self.store, user.id).await?;
        let dkim = store_pricing::free_passes(&self.store, user.id, PassKind::DkimDomain).await?;
        let lists = store_pricing::free_passes(&self.store, user.id, PassKind::ListId).await?;
        Ok(PricingPolicy::from_config(&self.pricing).with_user(&o, dkim, lists, &self.pricing))
    }

    pub async fn pricing_overrides(&self, user: &UserInfo) -> Result<Overrides> {
        Ok(store_pricing::get(&self.store, user.id).await?)
    }

    pub async fn set_pricing(&self, user: &UserInfo, o: Overrides) -> Result<()> {
        for (name, v) in [
            ("stranger", o.stranger),
            ("acquaintance", o.acquaintance),
            ("friend", o.friend),
            ("priority", o.priority),
            ("surge-threshold", o.surge_threshold),
        ] {
            if v.is_some_and(|v| v < 0) {
                return Err(CustodyError::Invalid(format!(
                    "{name} must not be negative"
                )));
            }
        }
        if o.surge_multiplier.is_some_and(|m| m < 1) {
            return Err(CustodyError::Invalid(
                "surge-multiplier must be at least 1".into(),
            ));
        }
        Ok(store_pricing::set(&self.store, user.id, o).await?)
    }

    pub async fn set_free_pass(
        &self,
        user: &UserInfo,
        kind: PassKind,
        value: &str,
        present: bool,
    ) -> Result<()> {
        let value = value.trim().to_ascii_lowercase();
        if value.is_empty() {
            return Err(CustodyError::Invalid("a free pass needs a value".into()));
        }
        Ok(store_pricing::set_free_pass(&self.store, user.id, kind, &value, present).await?)
    }

    pub async fn add_contact(
        &self,
        user: &UserInfo,
        address: &str,
        level: Level,
    ) -> Result<String> {
        let a = normalize_contact(address)?;
        contacts::upsert(&self.store, user.id, &a, level).await?;
        Ok(a)
    }

    pub async fn contacts(&self, user: &UserInfo) -> Result<Vec<Contact>> {
        Ok(contacts::list(&self.store, user.id).await?)
    }

    pub async fn remove_contact(&self, user: &UserInfo, address: &str) -> Result<()> {
        Ok(contacts::remove(&self.store, user.id, &normalize_contact(address)?).await?)
    }
}

async fn hash_blocking(password: &str) -> Result<String> {
    let p = zeroize::Zeroizing::new(password.to_owned());
    tokio::task::spawn_blocking(move || password::hash(&p))
        .await
        .map_err(|e| CustodyError::Invalid(format!("password hashing task failed: {e}")))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_normalize() {
        assert_eq!(
            normalize_contact(" Bob@Example.ORG ").unwrap(),
            "bob@example.org"
        );
        assert!(normalize_contact("bob").is_err());
        assert!(normalize_contact("bob@localhost").is_err());
        assert!(normalize_contact("b ob@x.org").is_err());
        assert!(normalize_contact("bob#zzzzzz@x.org").is_ok());
        assert!(normalize_contact("bob#0OIl00@x.org").is_err());
    }
}
