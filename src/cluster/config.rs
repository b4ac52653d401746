//! `[cluster]`: how a node reaches NATS and what it tells the others.
//!
//! Read like every other knob (defaults < file < `TASKWIRE_CLUSTER_*` env <
//! flags) and validated once; without a `nats_url` (file, env or flag)
//! there is no cluster and nothing of this module runs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Flags of `taskwire serve` for the cluster (each also reads its
/// `TASKWIRE_CLUSTER_<NAME>` variable).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ClusterOverrides {
    /// NATS servers (comma-separated `nats://host:port`); turns cluster mode on.
    #[arg(
        long = "cluster-nats-url",
        env = "TASKWIRE_CLUSTER_NATS_URL",
        value_name = "URLS"
    )]
    pub nats_url: Option<String>,
    /// This node's name (default: host name and a short random suffix).
    #[arg(
        long = "cluster-node",
        env = "TASKWIRE_CLUSTER_NODE",
        value_name = "NAME"
    )]
    pub node: Option<String>,
    /// NATS user (with --cluster-password).
    #[arg(
        long = "cluster-user",
        env = "TASKWIRE_CLUSTER_USER",
        value_name = "USER"
    )]
    pub user: Option<String>,
    /// NATS password.
    #[arg(
        long = "cluster-password",
        env = "TASKWIRE_CLUSTER_PASSWORD",
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,
    /// NATS token.
    #[arg(
        long = "cluster-token",
        env = "TASKWIRE_CLUSTER_TOKEN",
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(
        long = "cluster-creds-file",
        env = "TASKWIRE_CLUSTER_CREDS_FILE",
        value_name = "FILE"
    )]
    pub creds_file: Option<PathBuf>,
    /// NATS nkey seed file.
    #[arg(
        long = "cluster-nkey-file",
        env = "TASKWIRE_CLUSTER_NKEY_FILE",
        value_name = "FILE"
    )]
    pub nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS servers with.
    #[arg(
        long = "cluster-tls-ca-file",
        env = "TASKWIRE_CLUSTER_TLS_CA_FILE",
        value_name = "FILE"
    )]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --cluster-tls-key-file).
    #[arg(
        long = "cluster-tls-cert-file",
        env = "TASKWIRE_CLUSTER_TLS_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(
        long = "cluster-tls-key-file",
        env = "TASKWIRE_CLUSTER_TLS_KEY_FILE",
        value_name = "FILE"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS even for nats:// URLs.
    #[arg(
        long = "cluster-tls-required",
        env = "TASKWIRE_CLUSTER_TLS_REQUIRED",
        value_name = "BOOL"
    )]
    pub tls_required: Option<bool>,
    /// Replicas of the streams and buckets (1, 3 or 5; default 1).
    #[arg(
        long = "cluster-replicas",
        env = "TASKWIRE_CLUSTER_REPLICAS",
        value_name = "N"
    )]
    pub replicas: Option<usize>,
    /// Seconds a node's hold on a running task lasts without renewal (default 30).
    #[arg(
        long = "cluster-lease-s",
        env = "TASKWIRE_CLUSTER_LEASE_S",
        value_name = "N"
    )]
    pub lease_s: Option<u64>,
    /// Built-in task names this node's pool runs (comma-separated; default all).
    #[arg(
        long = "cluster-pool-tasks",
        env = "TASKWIRE_CLUSTER_POOL_TASKS",
        value_name = "NAMES"
    )]
    pub pool_tasks: Option<String>,
}

/// `[cluster]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCluster {
    nats_url: Option<NatsUrls>,
    node: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    creds_file: Option<PathBuf>,
    nkey_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_required: Option<bool>,
    replicas: Option<usize>,
    lease_s: Option<u64>,
    pool_tasks: Option<Vec<String>>,
}

/// One URL or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NatsUrls {
    One(String),
    Many(Vec<String>),
}

/// How the node proves itself to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: String },
    Token(String),
    CredsFile(PathBuf),
    NkeyFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NatsAuth::None => "none",
            NatsAuth::UserPassword { .. } => "user/password",
            NatsAuth::Token(_) => "token",
            NatsAuth::CredsFile(_) => "creds file",
            NatsAuth::NkeyFile(_) => "nkey file",
        })
    }
}

/// The validated `[cluster]` section.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nats_urls: Vec<String>,
    pub node: String,
    pub auth: NatsAuth,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub tls_required: bool,
    pub replicas: usize,
    /// How long a node's hold on a task (and a concurrency key) lasts
    /// without renewal; also how long before a silent node counts as gone.
    pub lease: Duration,
    /// Built-in names this node's pool runs (`None`: all).
    pub pool_tasks: Option<Vec<String>>,
}

impl ClusterConfig {
    /// The section from its layers; `None` without a `nats_url`.
    pub(crate) fn from_layers(
        file: Option<FileCluster>,
        o: &ClusterOverrides,
        problems: &mut Vec<String>,
    ) -> Option<ClusterConfig> {
        let file = file.unwrap_or_default();
        let urls: Vec<String> = match (&o.nats_url, file.nats_url) {
            (Some(text), _) => split(text),
            (None, Some(NatsUrls::One(text))) => split(&text),
            (None, Some(NatsUrls::Many(list))) => list,
            (None, None) => return None,
        };
        if urls.is_empty() {
            problems.push("cluster.nats_url: give at least one nats://host:port".to_owned());
        }
        for url in &urls {
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
                || !url.contains("://");
            if !ok || url.contains(char::is_whitespace) {
                problems.push(format!(
                    "cluster.nats_url: `{url}` is not like nats://host:port"
                ));
            }
        }
        let node = o
            .node
            .clone()
            .or(file.node)
            .unwrap_or_else(default_node_name);
        let valid_node = !node.is_empty()
            && node.len() <= 64
            && node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_node {
            problems.push(format!(
                "cluster.node: `{node}` must be 1 to 64 characters from A-Z a-z 0-9 - _"
            ));
        }
        let user = o.user.clone().or(file.user);
        let password = o.password.clone().or(file.password);
        let token = o.token.clone().or(file.token);
        let creds = o.creds_file.clone().or(file.creds_file);
        let nkey = o.nkey_file.clone().or(file.nkey_file);
        let given = [
            user.is_some() || password.is_some(),
            token.is_some(),
            creds.is_some(),
            nkey.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given > 1 {
            problems.push(
                "cluster: give one of user/password, token, creds_file or nkey_file".to_owned(),
            );
        }
        let auth = match (user, password, token, creds, nkey) {
            (Some(user), Some(password), ..) => NatsAuth::UserPassword { user, password },
            (Some(_), None, ..) | (None, Some(_), ..) => {
                problems.push("cluster: user and password go together".to_owned());
                NatsAuth::None
            }
            (None, None, Some(token), ..) => NatsAuth::Token(token),
            (None, None, None, Some(creds), _) => NatsAuth::CredsFile(creds),
            (None, None, None, None, Some(nkey)) => NatsAuth::NkeyFile(nkey),
            (None, None, None, None, None) => NatsAuth::None,
        };
        let cert = o.tls_cert_file.clone().or(file.tls_cert_file);
        let key = o.tls_key_file.clone().or(file.tls_key_file);
        let tls_client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                problems.push("cluster: tls_cert_file and tls_key_file go together".to_owned());
                None
            }
        };
        let replicas = o.replicas.or(file.replicas).unwrap_or(1);
        if ![1, 3, 5].contains(&replicas) {
            problems.push(format!("cluster.replicas: {replicas} must be 1, 3 or 5"));
        }
        let lease_s = o.lease_s.or(file.lease_s).unwrap_or(30);
        if !(2..=3600).contains(&lease_s) {
            problems.push(format!(
                "cluster.lease_s: {lease_s} is out of range 2..=3600"
            ));
        }
        let pool_tasks = o
            .pool_tasks
            .as_deref()
            .map(split)
            .or(file.pool_tasks)
            .map(|names| names.into_iter().filter(|n| n != "none").collect());
        Some(ClusterConfig {
            nats_urls: urls,
            node,
            auth,
            tls_ca_file: o.tls_ca_file.clone().or(file.tls_ca_file),
            tls_client,
            tls_required: o.tls_required.or(file.tls_required).unwrap_or(false),
            replicas,
            lease: Duration::from_secs(lease_s),
            pool_tasks,
        })
    }

    /// The section as `taskwire config` shows it (no secrets).
    pub fn to_toml(&self) -> String {
        let urls: Vec<String> = self.nats_urls.iter().map(|u| format!("{u:?}")).collect();
        let mut out = format!(
            "\n[cluster]\nnats_url = [{}]\nnode = {:?}\n# auth: {:?}\ntls_required = {}\nreplicas = {}\nlease_s = {}\n",
            urls.join(", "),
            self.node,
            self.auth,
            self.tls_required,
            self.replicas,
            self.lease.as_secs()
        );
        if let Some(names) = &self.pool_tasks {
            let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            out.push_str(&format!("pool_tasks = [{}]\n", names.join(", ")));
        }
        out
    }
}

fn split(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The host name and four random hex digits (`warehouse-3-9f2c`), so two
/// nodes on one host differ without configuration.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(48)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = crate::auth::random_bytes::<2>().map_or(0, u16::from_be_bytes);
    format!("{host}-{suffix:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, o: &ClusterOverrides) -> (Option<ClusterConfig>, Vec<String>) {
        let file: Option<FileCluster> = if file.is_empty() {
            None
        } else {
            Some(toml::from_str(file).expect("toml"))
        };
        let mut problems = Vec::new();
        let config = ClusterConfig::from_layers(file, o, &mut problems);
        (config, problems)
    }

    #[test]
    fn no_url_no_cluster() {
        let (config, problems) = load("", &ClusterOverrides::default());
        assert!(config.is_none());
        assert!(problems.is_empty());
    }

    #[test]
    fn urls_defaults_and_flags() {
        let o = ClusterOverrides {
            lease_s: Some(5),
            ..ClusterOverrides::default()
        };
        let (config, problems) = load(
            "nats_url = [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:4223\"]\nnode = \"a\"\ntoken = \"s3cret\"",
            &o,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let config = config.expect("cluster");
        assert_eq!(config.nats_urls.len(), 2);
        assert_eq!(config.node, "a");
        assert_eq!(config.lease, Duration::from_secs(5));
        assert_eq!(config.replicas, 1);
        assert!(!config.to_toml().contains("s3cret"));
        let (config, _) = load("nats_url = \"nats://h:1\"", &ClusterOverrides::default());
        let node = config.expect("cluster").node;
        assert!(node.len() > 5 && node.contains('-'), "{node}");
    }

    #[test]
    fn problems_name_their_key() {
        let (_, problems) = load(
            "nats_url = \"nats://h:1\"\nreplicas = 2\nuser = \"u\"\nnode = \"a.b\"",
            &ClusterOverrides::default(),
        );
        let all = problems.join("\n");
        assert!(all.contains("cluster.replicas"), "{all}");
        assert!(all.contains("user and password"), "{all}");
        assert!(all.contains("cluster.node"), "{all}");
    }
}
