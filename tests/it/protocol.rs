//! The WebSocket protocol: auth, envelope, errors, close codes.
