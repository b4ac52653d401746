//! `nodes`: the cluster's nodes as the answering node sees them
//! (`GET /v1/admin/nodes`).

use super::output::Out;
use super::{Failure, Target, exit};

pub(crate) async fn run(target: &Target) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let nodes = target.client()?.admin_nodes().await?.nodes;
    if out.json {
        for node in &nodes {
            out.json(node);
        }
        return Ok(exit::COMPLETED);
    }
    if nodes.is_empty() {
        eprintln!("no cluster: this server runs in local mode");
        return Ok(exit::COMPLETED);
    }
    out.line(&format!(
        "{:<24}  {:<8}  {:>7}  {:>5}  {:>4}  {:<24}  {}",
        "NODE", "STATE", "WORKERS", "SLOTS", "BUSY", "STARTED", "SEEN"
    ));
    for node in &nodes {
        // The node that answered is marked, as `kubectl config` marks the
        // current context.
        let name = if node.this {
            format!("{} *", node.name)
        } else {
            node.name.clone()
        };
        out.line(&format!(
            "{:<24}  {:<8}  {:>7}  {:>5}  {:>4}  {:<24}  {}",
            name, node.state, node.workers, node.slots, node.busy, node.started_at, node.seen_at
        ));
    }
    Ok(exit::COMPLETED)
}
