//! Wire shapes of file inputs: uploads (`POST /v1/uploads`, WebSocket
//! `upload_*` messages) and the `inputs` of a worker's `assign`
//! (`docs/protocol.md` §8.3 to §8.5 and §19).

use serde::Serialize;

/// An upload as the server describes it: the `201` body of
/// `POST /v1/uploads`, `GET /v1/uploads/{id}`, and the fields of the
/// WebSocket `uploaded` message.
#[derive(Debug, Serialize)]
pub struct Upload<'a> {
    pub upload_id: &'a str,
    pub name: &'a str,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: &'a str,
    pub content_type: &'a str,
    /// RFC 3339 UTC: after this the id is refused (a task that already
    /// refers to it keeps its bytes).
    pub expires_at: &'a str,
}

/// One input file of a worker's attempt (`assign.inputs[]`).
#[derive(Debug, Serialize)]
pub struct AssignInput<'a> {
    /// Where its reference is in `assign.input` (`$.files[0]`).
    pub path: &'a str,
    pub name: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub content_type: &'a str,
    /// `GET` it (no key: the token in it is the capability) while the
    /// attempt runs; absolute when the server has a `public_url`.
    pub url: &'a str,
    /// Managed workers only: the file on the server's disk (read-only use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<&'a str>,
}
