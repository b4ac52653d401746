//! taskwire: a compute-task service. See `ARCHITECTURE.md` for the map.

pub use taskwire_protocol as protocol;

pub(crate) mod admission;
pub(crate) mod artifacts;
pub mod auth;
pub mod booklet;
pub mod catalog;
pub mod cluster;
pub mod config;
pub(crate) mod directory;
pub mod exec;
pub mod inputs;
mod pool;
pub(crate) mod scheduler;
pub mod schedules;
pub(crate) mod server;
pub mod task;
pub mod telemetry;
pub mod workers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::artifacts::{Artifacts, ArtifactsError};
use crate::auth::{Authenticator, KeyStore, OriginPolicy, Tokens};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::directory::Directory;
use crate::exec::RegisterError;
use crate::scheduler::Scheduler;
use crate::server::AppState;
use crate::telemetry::Metrics;

/// How long connections get to flush their last events at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Artifacts(#[from] ArtifactsError),
    #[error("the built-in pool could not start: {0}")]
    Pool(#[from] RegisterError),
    #[error(transparent)]
    Inputs(#[from] crate::inputs::InputsError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("[[tasks]]: {0}")]
    DeclaredTask(String),
}

/// Where `static/` is: `TASKWIRE_STATIC_DIR`, else next to the sources
/// (the checkout this binary was built from).
pub fn static_dir() -> PathBuf {
    std::env::var_os("TASKWIRE_STATIC_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static")),
        PathBuf::from,
    )
}

/// Runs the whole service on `listener` until `shutdown` resolves, then
/// drains: `readyz` turns 503, submits are refused, queued tasks are
/// cancelled, running ones get `shutdown_grace`, every client receives its
/// tasks' terminal events and a `1001` close.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let catalog = Catalog::builtin(config.files.max_temp_bytes);
    serve_with(listener, config, catalog, shutdown).await
}

/// [`serve`] with a given task catalogue (embedding, tests).
pub async fn serve_with(
    listener: TcpListener,
    config: Config,
    catalog: Catalog,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Metrics::new();
    let background = TaskTracker::new();
    let stop = CancellationToken::new();
    let artifacts = Artifacts::start(&config.files, &background, stop.clone(), metrics.clone())?;
    let inputs =
        crate::inputs::Inputs::start(&config.inputs, &artifacts, &background, stop.clone())?;
    let catalog = Arc::new(catalog);
    let directory = Arc::new(Directory::with_builtins(&catalog));
    for decl in &config.workers.tasks {
        directory
            .declare(decl, directory::Source::Config)
            .map_err(ServeError::DeclaredTask)?;
    }
    let discard = artifacts.clone();
    let orphans = move |files: Vec<task::PublishedFile>| discard.discard(&files);
    // Without `[cluster]` nothing of the cluster is built or run.
    let (scheduler, cluster) = match &config.cluster {
        None => (
            Scheduler::start(
                &config.limits,
                Arc::clone(&directory),
                metrics.clone(),
                &background,
                stop.clone(),
                orphans,
            ),
            None,
        ),
        Some(settings) => {
            let (scheduler, port) = Scheduler::start_cluster(
                &config.limits,
                Arc::clone(&directory),
                metrics.clone(),
                &background,
                stop.clone(),
                orphans,
                Arc::from(settings.node.as_str()),
                settings.lease,
            );
            let shares = cluster::Shares {
                token_ttl: config.security.max_token_ttl,
                file_ttl: config.files.file_ttl,
                file_bytes: config.files.max_temp_bytes,
            };
            let cluster = cluster::start(
                settings,
                &config.limits,
                shares,
                port,
                &background,
                stop.clone(),
            )
            .await?;
            artifacts.share_with(Arc::new(cluster.clone()));
            inputs.share_with(Arc::new(cluster.clone()));
            tracing::info!(
                node = settings.node,
                "cluster mode: this node shares its queue on NATS"
            );
            (scheduler, Some(cluster))
        }
    };
    let pool_tasks = config.cluster.as_ref().and_then(|c| c.pool_tasks.clone());
    pool::start(
        &scheduler,
        Arc::clone(&catalog),
        artifacts.clone(),
        inputs.clone(),
        config.limits.workers,
        pool_tasks.as_deref(),
        &background,
    )
    .await?;
    let admission = Admission::new(Arc::clone(&directory), config.limits.max_timeout)
        .with_inputs(inputs.clone());
    for schedule in &config.schedules {
        if directory.get(&schedule.task).is_none() {
            tracing::warn!(schedule = %schedule.name, task = %schedule.task,
                "no task of this name is offered yet: its runs are refused until a worker declares it");
        }
    }
    let schedules = crate::schedules::Schedules::start(
        config.schedules.clone(),
        admission.clone(),
        scheduler.clone(),
        &background,
        stop.clone(),
    );
    let tokens = Tokens::start(config.security.max_token_ttl, &background, stop.clone());
    if let Some(cluster) = &cluster {
        cluster.follow_tokens(Arc::clone(&tokens), &background, stop.clone());
        cluster.serve_uploads(inputs.uploads().clone(), &background, stop.clone());
    }
    let workers = workers::Workers::new(
        &config,
        scheduler.clone(),
        artifacts.clone(),
        inputs.clone(),
        metrics.clone(),
    );
    let supervisor = workers::supervisor::Supervisor::start(&workers);
    let draining = CancellationToken::new();
    let drained = CancellationToken::new();
    let streams = TaskTracker::new();
    let state = AppState::new(server::Inner {
        welcome: std::sync::Mutex::new((0, Default::default())),
        admission,
        inputs,
        directory,
        schedules,
        auth: Authenticator {
            keys: KeyStore::new(config.security.api_keys.clone()),
            tokens,
        },
        origins: OriginPolicy::new(
            config.security.allowed_origins.clone(),
            config.files.public_url.as_deref(),
            listener.local_addr()?,
        ),
        links: server::encode::Links {
            public_url: config.files.public_url.clone(),
        },
        config,
        scheduler: scheduler.clone(),
        artifacts,
        metrics,
        connections: AtomicUsize::new(0),
        draining: draining.clone(),
        drained: drained.clone(),
        streams: streams.clone(),
        static_dir: static_dir(),
        cluster: cluster.clone(),
        workers,
    });
    let app = server::router(state.clone());
    let server = tokio::spawn(server::listener::serve(
        listener,
        app,
        state.config.http.clone(),
        state.metrics.clone(),
        drained.clone(),
    ));

    shutdown.await;
    tracing::info!("shutdown: draining");
    draining.cancel();
    scheduler.drain().await;
    if let Some(cluster) = &cluster {
        // The last events of this node's tasks reach the stream first.
        cluster.flush(CLOSE_GRACE).await;
    }
    // Every task has ended: managed workers are drained and stopped
    // (stdin closed, then SIGTERM and SIGKILL to each process group).
    supervisor.shutdown().await;
    tracing::info!("shutdown: every task has ended; closing connections");
    drained.cancel();
    streams.close();
    if tokio::time::timeout(CLOSE_GRACE, streams.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some connections did not close in time");
    }
    match tokio::time::timeout(CLOSE_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("shutdown: HTTP connections did not close in time"),
    }
    if let Some(cluster) = &cluster {
        cluster.leave().await;
    }
    stop.cancel();
    background.close();
    let _ = tokio::time::timeout(CLOSE_GRACE, background.wait()).await;
    drop(state);
    tracing::info!("shutdown: done");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
