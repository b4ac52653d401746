//! Who is calling: API keys, their digests, and the Origin allow-list.
//!
//! Keys are held only as SHA-256 digests and compared in constant time
//! against every configured digest (no early exit that would tell which one
//! nearly matched). A presented key lives in [`ApiKey`], whose `Debug` is
//! redacted, so it cannot reach a log by accident.
//!
//! **Architecture Invariant:** no key, token or digest is ever logged, put in
//! an error message or echoed to a client.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{KeyConfig, KeyRole, normalize_origin};
use crate::task::{ClientId, Owner};

/// A secret presented by a client (API key or browser token).
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(secret: impl Into<String>) -> ApiKey {
        ApiKey(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The key's name; owns the tasks it submits.
    pub client: ClientId,
    /// May use the admin extension (monitoring page).
    pub admin: bool,
    /// A browser token: the tasks it may submit (`None`: any).
    pub tasks: Option<Arc<[Box<str>]>>,
    /// Authenticated by a browser token (which cannot mint tokens).
    pub token: Option<TokenRef>,
}

/// What a task sees of the browser token a caller presented.
#[derive(Clone, Debug)]
pub struct TokenRef {
    /// Unique among the tokens of this process.
    pub id: u64,
    pub scope: TokenScope,
    pub expires: Instant,
    /// Cancelled when the token is revoked.
    pub revoked: CancellationToken,
}

/// Which tasks a browser token sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// Only the tasks it submitted (the default).
    Own,
    /// Every task of the minting key.
    Key,
}

impl Principal {
    /// The owner of the tasks this caller submits.
    pub fn owner(&self) -> Owner {
        Owner {
            client: self.client.clone(),
            token: self.token.as_ref().map(|t| t.id),
        }
    }

    /// Whether this caller (of the owning client) sees a task submitted by
    /// `token` (`None`: by a key).
    pub fn sees(&self, token: Option<u64>) -> bool {
        match &self.token {
            None => true,
            Some(own) => own.scope == TokenScope::Key || token == Some(own.id),
        }
    }

    /// The one browser token whose tasks and uploads this caller sees, if
    /// it sees only its own (`None`: every one of its client's).
    pub fn only_token(&self) -> Option<u64> {
        self.token
            .as_ref()
            .filter(|own| own.scope != TokenScope::Key)
            .map(|own| own.id)
    }

    pub fn via_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the token this caller presented has expired (never for a key).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.token.as_ref().is_some_and(|t| t.expires <= now)
    }

    /// Whether this caller may submit task `name`.
    pub fn may_run(&self, name: &str) -> bool {
        self.tasks
            .as_ref()
            .is_none_or(|tasks| tasks.iter().any(|t| &**t == name))
    }
}

/// SHA-256 of a key, as stored in the config.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// A fresh API key: `tw_` and 256 random bits in hex.
pub fn generate_key() -> Result<String, getrandom::Error> {
    Ok(format!("tw_{}", hex(&random_bytes::<32>()?)))
}

/// The configured API keys.
#[derive(Clone, Debug)]
pub struct KeyStore {
    keys: Vec<KeyConfig>,
}

impl KeyStore {
    pub fn new(keys: Vec<KeyConfig>) -> KeyStore {
        KeyStore { keys }
    }

    /// The caller a client or admin key belongs to, if any (a worker key
    /// is no client: `None`). Constant time in the key and in which entry
    /// matches.
    pub fn verify(&self, key: &ApiKey) -> Option<Principal> {
        self.find(key)
            .filter(|entry| entry.role != KeyRole::Worker)
            .map(|entry| Principal {
                client: ClientId::new(&entry.name),
                admin: entry.is_admin(),
                tasks: None,
                token: None,
            })
    }

    /// The name and role of the entry a key matches (constant time).
    pub fn role_of(&self, key: &ApiKey) -> Option<(ClientId, KeyRole)> {
        self.find(key)
            .map(|entry| (ClientId::new(&entry.name), entry.role))
    }

    fn find(&self, key: &ApiKey) -> Option<&KeyConfig> {
        let presented = digest(key.expose());
        let mut found: Option<&KeyConfig> = None;
        for entry in &self.keys {
            let equal: bool = entry.digest.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }
}

/// The secret of an `Authorization` header value: `Bearer <secret>`, the
/// scheme in any case (RFC 7235 §2.1), one or more spaces or tabs before the
/// secret, which must be one word. `None` for any other scheme or shape.
pub fn bearer_secret(header_value: &str) -> Option<&str> {
    let (scheme, rest) = header_value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let secret = rest.trim_matches([' ', '\t']);
    (!secret.is_empty() && !secret.contains(|c: char| c.is_ascii_whitespace())).then_some(secret)
}

/// Which `Origin`s may open a WebSocket or call the REST API from a browser:
/// the server's own origin plus `allowed_origins`.
///
/// The server's own origin comes from `public_url` when it is set, else from
/// the address the listener is bound to (`http://<ip>:<port>`, and
/// `http://localhost:<port>` too when that address is loopback or
/// unspecified). It is never taken from the request's `Host` header, which a
/// DNS-rebinding page controls; schemes must match (an `https` origin is not
/// this plain-HTTP listener).
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    own: Vec<String>,
}

impl OriginPolicy {
    /// `allowed`: normalized `allowed_origins`; `public_url`: the configured
    /// one, if any; `listener`: the bound address (port 0 already resolved).
    pub fn new(
        allowed: Vec<String>,
        public_url: Option<&str>,
        listener: SocketAddr,
    ) -> OriginPolicy {
        let own = match public_url {
            Some(url) => url
                .split_once("://")
                .and_then(|(scheme, rest)| {
                    let host = rest.split('/').next()?;
                    normalize_origin(&format!("{scheme}://{host}")).ok()
                })
                .into_iter()
                .collect(),
            None => listener_origins(listener),
        };
        OriginPolicy { allowed, own }
    }

    /// Whether a request whose `Origin` header is `origin` may go on.
    pub fn allows(&self, origin: &str) -> bool {
        let Ok(origin) = normalize_origin(origin) else {
            return false;
        };
        self.own.contains(&origin) || self.allowed.contains(&origin)
    }
}

/// The origins a browser uses for a page served straight from `address`.
fn listener_origins(address: SocketAddr) -> Vec<String> {
    let port = address.port();
    let ip = address.ip();
    let mut hosts = Vec::new();
    if ip.is_unspecified() {
        // Bound to every interface: the loopback names are certain; any
        // other name needs `public_url` or `allowed_origins`.
        hosts.push("127.0.0.1".to_owned());
        hosts.push("[::1]".to_owned());
    } else {
        hosts.push(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    if ip.is_loopback() || ip.is_unspecified() {
        hosts.push("localhost".to_owned());
    }
    hosts
        .into_iter()
        .filter_map(|host| normalize_origin(&format!("http://{host}:{port}")).ok())
        .collect()
}

/// Prefix of browser tokens, so a token is never checked against API keys.
pub const TOKEN_PREFIX: &str = "twt_";
/// Live browser tokens at most; past it a mint is `rate_limited`.
pub const MAX_TOKENS: usize = 100_000;
/// Live browser tokens one client (API key name) may hold; past it a mint is
/// `rate_limited`.
pub const MAX_TOKENS_PER_KEY: usize = 10_000;
/// Distinct task names a browser token may be limited to.
pub const MAX_TOKEN_TASKS: usize = 64;

/// Short-lived browser tokens (`POST /v1/tokens`, `docs/protocol.md`).
/// Held as digests in memory only; a restart revokes them all. Expired
/// tokens are reclaimed at their deadline by [`Tokens::start`]'s loop (and
/// refused by [`Tokens::verify`] whatever that loop does).
#[derive(Debug)]
pub struct Tokens {
    /// Every section under this lock is a few map operations with no
    /// `.await`, so std's mutex fits; one lock keeps the three maps agreeing.
    state: Mutex<TokenState>,
    /// Wakes the expiry loop when a mint sets an earlier next deadline.
    wake: Arc<Notify>,
    max_ttl: Duration,
    max_live: usize,
    max_per_key: usize,
}

/// A browser token's grant as the nodes of a cluster share it: everything
/// but the token itself (the key it is shared under is its digest).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SharedGrant {
    client: String,
    /// `own` or `key`.
    scope: String,
    /// Milliseconds since the Unix epoch.
    expires_ms: u64,
    #[serde(default)]
    tasks: Option<Vec<String>>,
    #[serde(default)]
    origin: Option<String>,
}

/// The id of a token, the same on every node of a cluster: the first bits
/// of its digest.
fn token_id(digest: &[u8; 32]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // Never 0, so no token id can be mistaken for a missing one by a reader.
    u64::from_le_bytes(bytes).max(1)
}

/// The digest of a token as text: the key a grant is shared under.
pub fn token_key(token: &str) -> String {
    hex(&digest(token))
}

fn parse_key(key: &str) -> Option<[u8; 32]> {
    if key.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(key.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Default)]
struct TokenState {
    grants: HashMap<[u8; 32], Grant>,
    /// The same tokens by deadline: what the expiry loop reclaims.
    by_expiry: BTreeSet<(Instant, [u8; 32])>,
    /// Live grants per client, for `MAX_TOKENS_PER_KEY`.
    per_client: HashMap<ClientId, usize>,
}

impl TokenState {
    fn remove(&mut self, key: &[u8; 32]) -> Option<Grant> {
        let grant = self.grants.remove(key)?;
        self.by_expiry.remove(&(grant.expires, *key));
        if let Some(n) = self.per_client.get_mut(&grant.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&grant.client);
            }
        }
        Some(grant)
    }
}

#[derive(Debug, Clone)]
struct Grant {
    client: ClientId,
    id: u64,
    scope: TokenScope,
    expires: Instant,
    tasks: Option<Arc<[Box<str>]>>,
    origin: Option<String>,
    /// Cancelled by a revocation (not by expiry): open sockets close.
    revoked: CancellationToken,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("browser tokens cannot mint tokens")]
    NotAKey,
    /// Past [`MAX_TOKENS`] live tokens, or [`MAX_TOKENS_PER_KEY`] for this key.
    #[error("too many live tokens; try again later")]
    TooMany,
    #[error("tasks: more than {max} distinct task names")]
    TooManyTasks { max: usize },
    #[error("no randomness available: {0}")]
    Random(String),
}

/// The default lifetime of a browser token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

impl Tokens {
    /// An empty token store without its expiry loop (see [`Tokens::start`]).
    pub fn new(max_ttl: Duration) -> Tokens {
        Tokens {
            state: Mutex::default(),
            wake: Arc::new(Notify::new()),
            max_ttl,
            max_live: MAX_TOKENS,
            max_per_key: MAX_TOKENS_PER_KEY,
        }
    }

    /// A token store whose expiry loop runs on `tracker` until `stop`.
    pub fn start(max_ttl: Duration, tracker: &TaskTracker, stop: CancellationToken) -> Arc<Tokens> {
        let tokens = Arc::new(Tokens::new(max_ttl));
        tracker.spawn(expire_loop(
            Arc::downgrade(&tokens),
            Arc::clone(&tokens.wake),
            stop,
        ));
        tokens
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        // A panic while holding it cannot leave the maps half-changed in a
        // way that matters more than refusing every token would.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live (not yet reclaimed) tokens.
    pub fn live(&self) -> usize {
        self.lock().grants.len()
    }

    /// Mints a token for `owner`; returns it and when it expires. `ttl` is
    /// capped by `max_token_ttl_s`; `tasks` is de-duplicated (order kept).
    /// `origin` must already be normalized (`config::normalize_origin`, which
    /// also bounds its length).
    pub fn mint(
        &self,
        owner: &Principal,
        ttl: Option<Duration>,
        tasks: Option<Vec<String>>,
        origin: Option<String>,
        scope: TokenScope,
    ) -> Result<(String, SystemTime), MintError> {
        if owner.via_token() {
            return Err(MintError::NotAKey);
        }
        let tasks = match tasks {
            None => None,
            Some(list) => {
                let mut distinct: Vec<Box<str>> = Vec::new();
                for name in list {
                    if !distinct.iter().any(|t| **t == *name) {
                        if distinct.len() == MAX_TOKEN_TASKS {
                            return Err(MintError::TooManyTasks {
                                max: MAX_TOKEN_TASKS,
                            });
                        }
                        distinct.push(name.into_boxed_str());
                    }
                }
                Some(Arc::<[Box<str>]>::from(distinct))
            }
        };
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL).min(self.max_ttl);
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            hex(&random_bytes::<16>().map_err(|e| MintError::Random(e.to_string()))?)
        );
        let key = digest(&secret);
        let expires = Instant::now() + ttl;
        let earliest = {
            let mut state = self.lock();
            let held = state.per_client.get(&owner.client).copied().unwrap_or(0);
            if state.grants.len() >= self.max_live || held >= self.max_per_key {
                return Err(MintError::TooMany);
            }
            *state.per_client.entry(owner.client.clone()).or_insert(0) += 1;
            state.by_expiry.insert((expires, key));
            state.grants.insert(
                key,
                Grant {
                    client: owner.client.clone(),
                    id: token_id(&key),
                    scope,
                    expires,
                    tasks,
                    origin,
                    revoked: CancellationToken::new(),
                },
            );
            state
                .by_expiry
                .first()
                .is_some_and(|(at, k)| *at == expires && *k == key)
        };
        if earliest {
            self.wake.notify_one();
        }
        Ok((secret, SystemTime::now() + ttl))
    }

    /// Revokes a token minted by `owner` (sockets it opened close with
    /// `4401`); false if there is none.
    pub fn revoke(&self, owner: &ClientId, token: &str) -> bool {
        let key = digest(token);
        let mut state = self.lock();
        if state
            .grants
            .get(&key)
            .is_some_and(|grant| grant.client == *owner)
        {
            if let Some(grant) = state.remove(&key) {
                grant.revoked.cancel();
            }
            true
        } else {
            false
        }
    }

    /// The grant of a live token, for the other nodes of a cluster.
    pub fn shared(&self, token: &str) -> Option<SharedGrant> {
        let grant = self.lock().grants.get(&digest(token))?.clone();
        let left = grant.expires.saturating_duration_since(Instant::now());
        Some(SharedGrant {
            client: grant.client.as_str().to_owned(),
            scope: match grant.scope {
                TokenScope::Own => "own",
                TokenScope::Key => "key",
            }
            .to_owned(),
            expires_ms: epoch_ms(SystemTime::now() + left),
            tasks: grant
                .tasks
                .as_ref()
                .map(|t| t.iter().map(|t| t.to_string()).collect()),
            origin: grant.origin,
        })
    }

    /// Whether this node holds the grant shared under `key`.
    pub fn knows(&self, key: &str) -> bool {
        parse_key(key).is_some_and(|key| self.lock().grants.contains_key(&key))
    }

    /// Holds a grant another node minted (cluster mode), within the same
    /// bounds as a mint; false if `key` is not a digest, the grant has
    /// expired, or a bound is reached.
    pub fn adopt(&self, key: &str, shared: &SharedGrant) -> bool {
        let Some(key) = parse_key(key) else {
            return false;
        };
        let now = epoch_ms(SystemTime::now());
        if shared.expires_ms <= now {
            return false;
        }
        let client = ClientId::new(&shared.client);
        let expires =
            Instant::now() + Duration::from_millis(shared.expires_ms - now).min(self.max_ttl);
        let earliest = {
            let mut state = self.lock();
            if state.grants.contains_key(&key) {
                return true;
            }
            let held = state.per_client.get(&client).copied().unwrap_or(0);
            if state.grants.len() >= self.max_live || held >= self.max_per_key {
                return false;
            }
            *state.per_client.entry(client.clone()).or_insert(0) += 1;
            state.by_expiry.insert((expires, key));
            state.grants.insert(
                key,
                Grant {
                    client,
                    id: token_id(&key),
                    scope: if shared.scope == "key" {
                        TokenScope::Key
                    } else {
                        TokenScope::Own
                    },
                    expires,
                    tasks: shared.tasks.as_ref().map(|t| {
                        t.iter()
                            .take(MAX_TOKEN_TASKS)
                            .map(|t| t.clone().into_boxed_str())
                            .collect()
                    }),
                    origin: shared.origin.clone(),
                    revoked: CancellationToken::new(),
                },
            );
            state
                .by_expiry
                .first()
                .is_some_and(|(at, k)| *at == expires && *k == key)
        };
        if earliest {
            self.wake.notify_one();
        }
        true
    }

    /// Drops a grant revoked on another node (cluster mode): sockets it
    /// opened here close with `4401`.
    pub fn forget(&self, key: &str) {
        let Some(key) = parse_key(key) else { return };
        let removed = self.lock().remove(&key);
        if let Some(grant) = removed {
            grant.revoked.cancel();
        }
    }

    /// The caller a live token stands for. A token bound to an origin is
    /// only good on requests from that origin.
    pub fn verify(&self, token: &str, origin: Option<&str>) -> Option<Principal> {
        let key = digest(token);
        let grant = {
            let mut state = self.lock();
            let grant = state.grants.get(&key)?.clone();
            if grant.expires <= Instant::now() {
                state.remove(&key);
                return None;
            }
            grant
        };
        if let Some(bound) = &grant.origin {
            let matches = origin
                .and_then(|o| normalize_origin(o).ok())
                .is_some_and(|o| o == *bound);
            if !matches {
                return None;
            }
        }
        Some(Principal {
            client: grant.client,
            admin: false,
            tasks: grant.tasks,
            token: Some(TokenRef {
                id: grant.id,
                scope: grant.scope,
                expires: grant.expires,
                revoked: grant.revoked,
            }),
        })
    }

    /// Drops every token whose deadline is at or before `now`; returns the
    /// next deadline.
    fn reclaim(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        while let Some(&(at, key)) = state.by_expiry.first() {
            if at > now {
                return Some(at);
            }
            state.remove(&key);
        }
        None
    }
}

/// Reclaims expired tokens at their deadlines (never a periodic scan) until
/// `stop` or until the store is gone (it holds only a weak reference).
async fn expire_loop(tokens: Weak<Tokens>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let Some(next) = tokens.upgrade().map(|t| t.reclaim(Instant::now())) else {
            return;
        };
        // A mint between the reclaim and here left a permit: no wake is lost.
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = sleep_until_some(next) => {}
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// API keys and browser tokens together: what every entry point asks.
#[derive(Debug)]
pub struct Authenticator {
    pub keys: KeyStore,
    pub tokens: Arc<Tokens>,
}

impl Authenticator {
    /// Who `secret` (an API key or a browser token) stands for.
    pub fn authenticate(&self, secret: &str, origin: Option<&str>) -> Option<Principal> {
        if secret.starts_with(TOKEN_PREFIX) {
            self.tokens.verify(secret, origin)
        } else {
            self.keys.verify(&ApiKey::new(secret))
        }
    }

    /// Whether `secret` is a worker key (so a client route answers `403`,
    /// not `401`: the key is good, the route is not its own).
    pub fn is_worker_key(&self, secret: &str) -> bool {
        !secret.starts_with(TOKEN_PREFIX)
            && matches!(
                self.keys.role_of(&ApiKey::new(secret)),
                Some((_, KeyRole::Worker))
            )
    }

    /// The worker a key stands for on `GET /v1/worker`.
    pub fn worker(&self, secret: &str) -> Result<ClientId, WorkerAuthError> {
        if secret.starts_with(TOKEN_PREFIX) {
            return Err(WorkerAuthError::NotAWorkerKey);
        }
        match self.keys.role_of(&ApiKey::new(secret)) {
            Some((name, KeyRole::Worker)) => Ok(name),
            Some(_) => Err(WorkerAuthError::NotAWorkerKey),
            None => Err(WorkerAuthError::Unknown),
        }
    }
}

/// Why `GET /v1/worker` refuses a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WorkerAuthError {
    #[error("unknown key")]
    Unknown,
    #[error("not a worker key")]
    NotAWorkerKey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;

    fn key(name: &str, secret: &str, admin: bool) -> KeyConfig {
        KeyConfig {
            name: name.to_owned(),
            digest: digest(secret),
            role: if admin {
                KeyRole::Admin
            } else {
                KeyRole::Client
            },
            source: KeySource::File,
        }
    }

    #[test]
    fn verify_finds_the_right_key() {
        let store = KeyStore::new(vec![key("a", "tw_a", false), key("b", "tw_b", true)]);
        let b = store.verify(&ApiKey::new("tw_b")).expect("b");
        assert_eq!(b.client.as_str(), "b");
        assert!(b.admin);
        assert!(store.verify(&ApiKey::new("tw_c")).is_none());
        assert!(store.verify(&ApiKey::new("")).is_none());
    }

    #[test]
    fn worker_keys_serve_only() {
        let mut worker = key("pool", "tw_w", false);
        worker.role = KeyRole::Worker;
        let auth = Authenticator {
            keys: KeyStore::new(vec![key("a", "tw_a", false), worker]),
            tokens: Arc::new(Tokens::new(Duration::from_secs(60))),
        };
        assert!(auth.authenticate("tw_w", None).is_none());
        assert!(auth.is_worker_key("tw_w"));
        assert!(!auth.is_worker_key("tw_a"));
        assert_eq!(
            auth.worker("tw_w").map(|c| c.to_string()),
            Ok("pool".to_owned())
        );
        assert_eq!(auth.worker("tw_a"), Err(WorkerAuthError::NotAWorkerKey));
        assert_eq!(auth.worker("tw_x"), Err(WorkerAuthError::Unknown));
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let a = generate_key().expect("random");
        let b = generate_key().expect("random");
        assert!(a.starts_with("tw_") && a.len() == 3 + 64);
        assert_ne!(a, b);
        assert_eq!(format!("{:?}", ApiKey::new(a)), "ApiKey(<redacted>)");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let cases = [
            ("Bearer tw_a", Some("tw_a")),
            ("bearer tw_a", Some("tw_a")),
            ("BEARER tw_a", Some("tw_a")),
            ("bEaReR   tw_a  ", Some("tw_a")),
            ("Bearer\ttw_a", Some("tw_a")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearer  \t ", None),
            ("Bearer a b", None),
            ("Basic dXNlcjpwYXNz", None),
            ("Bearertw_a", None),
            ("tw_a", None),
            ("", None),
        ];
        for (value, secret) in cases {
            assert_eq!(bearer_secret(value), secret, "{value:?}");
        }
    }

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn own_origin_comes_from_public_url() {
        let policy = OriginPolicy::new(
            vec!["https://indico.example.org".to_owned()],
            Some("https://tw.example.org/base"),
            loopback(8080),
        );
        assert!(policy.allows("https://indico.example.org"));
        assert!(policy.allows("https://tw.example.org"));
        assert!(policy.allows("https://tw.example.org:443"));
        // Scheme must match: the public origin is https.
        assert!(!policy.allows("http://tw.example.org"));
        // With public_url set, the listener's address is not an origin.
        assert!(!policy.allows("http://127.0.0.1:8080"));
        assert!(!policy.allows("http://evil.example"));
        assert!(!policy.allows("null"));
    }

    #[test]
    fn own_origin_comes_from_the_listener() {
        let policy = OriginPolicy::new(Vec::new(), None, loopback(8080));
        assert!(policy.allows("http://127.0.0.1:8080"));
        assert!(policy.allows("http://localhost:8080"));
        assert!(policy.allows("http://LOCALHOST:8080/"));
        // A plain-HTTP listener is never an https origin.
        assert!(!policy.allows("https://127.0.0.1:8080"));
        assert!(!policy.allows("http://127.0.0.1:8081"));
        // What a DNS-rebinding page sends (its Host would match; ignored).
        assert!(!policy.allows("http://evil.example:8080"));

        let v6 = OriginPolicy::new(Vec::new(), None, "[::1]:9000".parse().expect("addr"));
        assert!(v6.allows("http://[::1]:9000"));
        assert!(v6.allows("http://localhost:9000"));

        let lan = OriginPolicy::new(Vec::new(), None, "192.0.2.7:80".parse().expect("addr"));
        assert!(lan.allows("http://192.0.2.7"));
        assert!(!lan.allows("http://localhost"));

        let any = OriginPolicy::new(Vec::new(), None, "0.0.0.0:8080".parse().expect("addr"));
        assert!(any.allows("http://127.0.0.1:8080"));
        assert!(any.allows("http://localhost:8080"));
        assert!(!any.allows("http://0.0.0.0:8080"));
        assert!(!any.allows("http://evil.example:8080"));
    }

    fn owner(name: &str) -> Principal {
        Principal {
            client: ClientId::new(name),
            admin: false,
            tasks: None,
            token: None,
        }
    }

    /// Lets the expiry loop run until `done` holds (paused time: each
    /// yield is a turn of the runtime, not a wait).
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened: {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_tokens_are_reclaimed_on_a_timer() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let tokens = Tokens::start(Duration::from_secs(3600), &tracker, stop.clone());
        let alice = owner("alice");
        let (short, _) = tokens
            .mint(
                &alice,
                Some(Duration::from_secs(10)),
                None,
                None,
                TokenScope::Own,
            )
            .expect("mint");
        let (long, _) = tokens
            .mint(
                &alice,
                Some(Duration::from_secs(60)),
                None,
                None,
                TokenScope::Own,
            )
            .expect("mint");
        assert_eq!(tokens.live(), 2);
        tokio::time::advance(Duration::from_secs(11)).await;
        // Reclaimed without anyone presenting it.
        until("the 10 s token is reclaimed", || tokens.live() == 1).await;
        assert!(tokens.verify(&short, None).is_none());
        assert!(tokens.verify(&long, None).is_some());
        // A later mint with an earlier deadline wakes the loop.
        tokens
            .mint(
                &alice,
                Some(Duration::from_secs(5)),
                None,
                None,
                TokenScope::Own,
            )
            .expect("mint");
        tokio::time::advance(Duration::from_secs(6)).await;
        until("the 5 s token is reclaimed", || tokens.live() == 1).await;
        tokio::time::advance(Duration::from_secs(60)).await;
        until("every token is reclaimed", || tokens.live() == 0).await;
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_a_cap_on_live_tokens() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let mut store = Tokens::new(Duration::from_secs(3600));
        store.max_per_key = 3;
        store.max_live = 5;
        let tokens = Arc::new(store);
        tracker.spawn(expire_loop(
            Arc::downgrade(&tokens),
            Arc::clone(&tokens.wake),
            stop.clone(),
        ));
        let (alice, bob, carol) = (owner("alice"), owner("bob"), owner("carol"));
        let ttl = Some(Duration::from_secs(30));
        let mut minted = Vec::new();
        for _ in 0..3 {
            minted.push(
                tokens
                    .mint(&alice, ttl, None, None, TokenScope::Own)
                    .expect("mint")
                    .0,
            );
        }
        assert!(matches!(
            tokens.mint(&alice, ttl, None, None, TokenScope::Own),
            Err(MintError::TooMany)
        ));
        // Another key is not held back by alice's tokens...
        tokens
            .mint(&bob, ttl, None, None, TokenScope::Own)
            .expect("bob");
        tokens
            .mint(&bob, ttl, None, None, TokenScope::Own)
            .expect("bob");
        // ...until the whole store is full.
        assert!(matches!(
            tokens.mint(&carol, ttl, None, None, TokenScope::Own),
            Err(MintError::TooMany)
        ));
        // Revoking frees a slot at once.
        assert!(tokens.revoke(&alice.client, &minted[0]));
        assert!(
            !tokens.revoke(&bob.client, &minted[1]),
            "only the minter revokes"
        );
        tokens
            .mint(&alice, ttl, None, None, TokenScope::Own)
            .expect("a freed slot");
        // Expiry frees every slot, without the tokens being presented.
        tokio::time::advance(Duration::from_secs(31)).await;
        until("all tokens are reclaimed", || tokens.live() == 0).await;
        for _ in 0..3 {
            tokens
                .mint(&alice, ttl, None, None, TokenScope::Own)
                .expect("slots are free again");
        }
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn token_task_lists_are_deduplicated_and_capped() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let alice = owner("alice");
        let repeated = vec!["echo".to_owned(); 100_000];
        let (token, _) = tokens
            .mint(&alice, None, Some(repeated), None, TokenScope::Own)
            .expect("mint");
        let principal = tokens.verify(&token, None).expect("live");
        assert!(principal.may_run("echo") && !principal.may_run("sleep"));
        assert_eq!(principal.tasks.expect("limited").len(), 1);
        let order = vec!["sleep".to_owned(), "echo".to_owned(), "sleep".to_owned()];
        let (token, _) = tokens
            .mint(&alice, None, Some(order), None, TokenScope::Own)
            .expect("mint");
        let tasks = tokens
            .verify(&token, None)
            .expect("live")
            .tasks
            .expect("limited");
        assert_eq!(&*tasks, &["sleep".into(), "echo".into()] as &[Box<str>]);
        let many: Vec<String> = (0..=MAX_TOKEN_TASKS).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            tokens.mint(&alice, None, Some(many), None, TokenScope::Own),
            Err(MintError::TooManyTasks {
                max: MAX_TOKEN_TASKS
            })
        ));
        assert_eq!(tokens.live(), 2);
    }

    #[test]
    fn tokens_cannot_mint_and_origin_binds() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let mut via_token = owner("alice");
        via_token.token = Some(TokenRef {
            id: 1,
            scope: TokenScope::Own,
            expires: Instant::now() + Duration::from_secs(60),
            revoked: CancellationToken::new(),
        });
        assert!(matches!(
            tokens.mint(&via_token, None, None, None, TokenScope::Own),
            Err(MintError::NotAKey)
        ));
        let (token, _) = tokens
            .mint(
                &owner("alice"),
                None,
                None,
                Some("https://indico.example.org".to_owned()),
                TokenScope::Own,
            )
            .expect("mint");
        assert!(tokens.verify(&token, None).is_none());
        assert!(
            tokens
                .verify(&token, Some("https://evil.example"))
                .is_none()
        );
        assert!(
            tokens
                .verify(&token, Some("https://indico.example.org"))
                .is_some()
        );
    }
}
