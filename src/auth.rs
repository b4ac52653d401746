//! Who is calling: API keys, their digests, and the Origin allow-list.
//!
//! Keys are held only as SHA-256 digests and compared in constant time
//! against every configured digest (no early exit that would tell which one
//! nearly matched). A presented key lives in [`ApiKey`], whose `Debug` is
//! redacted, so it cannot reach a log by accident.
//!
//! **Architecture Invariant:** no key, token or digest is ever logged, put in
//! an error message or echoed to a client.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{KeyConfig, normalize_origin};
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

    /// The caller a key belongs to, if any. Constant time in the key and in
    /// which entry matches.
    pub fn verify(&self, key: &ApiKey) -> Option<Principal> {
        let presented = digest(key.expose());
        let mut found: Option<&KeyConfig> = None;
        for entry in &self.keys {
            let equal: bool = entry.digest.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|entry| Principal {
            client: ClientId::new(&entry.name),
            admin: entry.admin,
            tasks: None,
            token: None,
        })
    }
}

/// Which `Origin`s may open a WebSocket or call the REST API from a browser:
/// the server's own origin (the request's `Host`, or `public_url`'s origin)
/// plus `allowed_origins`.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    public_origin: Option<String>,
}

impl OriginPolicy {
    pub fn new(allowed: Vec<String>, public_url: Option<&str>) -> OriginPolicy {
        let public_origin = public_url.and_then(|url| {
            let (scheme, rest) = url.split_once("://")?;
            let host = rest.split('/').next()?;
            normalize_origin(&format!("{scheme}://{host}")).ok()
        });
        OriginPolicy {
            allowed,
            public_origin,
        }
    }

    /// Whether a request carrying `origin` and `host` headers is allowed.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let Ok(origin) = normalize_origin(origin) else {
            return false;
        };
        if self.allowed.contains(&origin) || self.public_origin.as_ref() == Some(&origin) {
            return true;
        }
        // Same origin: the browser sets Host to the server it talks to.
        let Some(host) = host else { return false };
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        authority.eq_ignore_ascii_case(host)
    }
}

/// Prefix of browser tokens, so a token is never checked against API keys.
pub const TOKEN_PREFIX: &str = "twt_";
/// Live browser tokens at most; minting past it first drops expired ones.
const MAX_TOKENS: usize = 100_000;

/// Short-lived browser tokens (`POST /v1/tokens`, `docs/protocol.md`).
/// Held as digests in memory only; a restart revokes them all. In cluster
/// mode every node also holds the grants the others minted ([`SharedGrant`],
/// keyed by the digest, never the token). Cheap to clone (one map).
#[derive(Debug, Clone)]
pub struct Tokens {
    grants: Arc<DashMap<[u8; 32], Grant>>,
    max_ttl: Duration,
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

/// The id of a token, the same on every node: the first bits of its digest.
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

#[derive(Debug, Clone)]
struct Grant {
    client: ClientId,
    id: u64,
    scope: TokenScope,
    expires: Instant,
    tasks: Option<Arc<[Box<str>]>>,
    origin: Option<String>,
    revoked: CancellationToken,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("browser tokens cannot mint tokens")]
    NotAKey,
    #[error("too many live tokens; try again later")]
    TooMany,
    #[error("no randomness available: {0}")]
    Random(String),
}

/// The default lifetime of a browser token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

impl Tokens {
    pub fn new(max_ttl: Duration) -> Tokens {
        Tokens {
            grants: Arc::new(DashMap::new()),
            max_ttl,
        }
    }

    /// Mints a token for `owner`; returns it and when it expires. `ttl` is
    /// capped by `max_token_ttl_s`.
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
        if self.grants.len() >= MAX_TOKENS {
            let now = Instant::now();
            self.grants.retain(|_, grant| grant.expires > now);
            if self.grants.len() >= MAX_TOKENS {
                return Err(MintError::TooMany);
            }
        }
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL).min(self.max_ttl);
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            hex(&random_bytes::<16>().map_err(|e| MintError::Random(e.to_string()))?)
        );
        let key = digest(&secret);
        self.grants.insert(
            key,
            Grant {
                client: owner.client.clone(),
                id: token_id(&key),
                scope,
                expires: Instant::now() + ttl,
                tasks: tasks.map(|t| t.into_iter().map(String::into_boxed_str).collect()),
                origin,
                revoked: CancellationToken::new(),
            },
        );
        Ok((secret, SystemTime::now() + ttl))
    }

    /// Revokes a token minted by `owner` (sockets it opened close with
    /// `4401`); false if there is none.
    pub fn revoke(&self, owner: &ClientId, token: &str) -> bool {
        match self
            .grants
            .remove_if(&digest(token), |_, grant| grant.client == *owner)
        {
            Some((_, grant)) => {
                grant.revoked.cancel();
                true
            }
            None => false,
        }
    }

    /// The grant of a live token, for the other nodes of a cluster.
    pub fn shared(&self, token: &str) -> Option<SharedGrant> {
        let grant = self.grants.get(&digest(token))?.clone();
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

    /// Holds a grant another node minted (cluster mode); false if `key` is
    /// not a digest, the grant has expired, or the map is full.
    pub fn adopt(&self, key: &str, shared: &SharedGrant) -> bool {
        let Some(key) = parse_key(key) else {
            return false;
        };
        let now = epoch_ms(SystemTime::now());
        if shared.expires_ms <= now {
            return false;
        }
        if self.grants.contains_key(&key) {
            return true;
        }
        if self.grants.len() >= MAX_TOKENS {
            let now = Instant::now();
            self.grants.retain(|_, grant| grant.expires > now);
            if self.grants.len() >= MAX_TOKENS {
                return false;
            }
        }
        let left = Duration::from_millis(shared.expires_ms - now).min(self.max_ttl);
        self.grants.insert(
            key,
            Grant {
                client: ClientId::new(&shared.client),
                id: token_id(&key),
                scope: if shared.scope == "key" {
                    TokenScope::Key
                } else {
                    TokenScope::Own
                },
                expires: Instant::now() + left,
                tasks: shared
                    .tasks
                    .clone()
                    .map(|t| t.into_iter().map(String::into_boxed_str).collect()),
                origin: shared.origin.clone(),
                revoked: CancellationToken::new(),
            },
        );
        true
    }

    /// Whether this node holds the grant shared under `key`.
    pub fn knows(&self, key: &str) -> bool {
        parse_key(key).is_some_and(|key| self.grants.contains_key(&key))
    }

    /// Drops a grant revoked on another node (cluster mode): sockets it
    /// opened here close with `4401`.
    pub fn forget(&self, key: &str) {
        if let Some(key) = parse_key(key)
            && let Some((_, grant)) = self.grants.remove(&key)
        {
            grant.revoked.cancel();
        }
    }

    /// The caller a live token stands for. A token bound to an origin is
    /// only good on requests from that origin.
    pub fn verify(&self, token: &str, origin: Option<&str>) -> Option<Principal> {
        let key = digest(token);
        let grant = self.grants.get(&key)?.clone();
        if grant.expires <= Instant::now() {
            self.grants.remove(&key);
            return None;
        }
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
}

/// API keys and browser tokens together: what every entry point asks.
#[derive(Debug)]
pub struct Authenticator {
    pub keys: KeyStore,
    pub tokens: Tokens,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;

    fn key(name: &str, secret: &str, admin: bool) -> KeyConfig {
        KeyConfig {
            name: name.to_owned(),
            digest: digest(secret),
            admin,
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
    fn generated_keys_are_long_and_distinct() {
        let a = generate_key().expect("random");
        let b = generate_key().expect("random");
        assert!(a.starts_with("tw_") && a.len() == 3 + 64);
        assert_ne!(a, b);
        assert_eq!(format!("{:?}", ApiKey::new(a)), "ApiKey(<redacted>)");
    }

    #[test]
    fn origins() {
        let policy = OriginPolicy::new(
            vec!["https://indico.example.org".to_owned()],
            Some("https://tw.example.org/base"),
        );
        assert!(policy.allows("https://indico.example.org", Some("x")));
        assert!(policy.allows("https://tw.example.org", None));
        assert!(policy.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(!policy.allows("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!policy.allows("null", Some("127.0.0.1:8080")));
    }
}
