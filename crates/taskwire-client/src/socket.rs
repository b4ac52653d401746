//! One WebSocket to `/v1/ws`, typed: [`Connection`].
//!
//! This is the layer without policy: it connects with header auth and the
//! `taskwire.v1` subprotocol (TCP_NODELAY on, TLS for `https`/`wss`), waits
//! for `welcome`, then sends [`outgoing::Message`]s and returns decoded
//! [`Frame`]s. It never reconnects and never routes; [`Session`] builds
//! that on top of it, and load generators use it directly (`feed` many,
//! `flush` once, read what is buffered without waiting).
//!
//! [`Session`]: crate::Session

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use taskwire_protocol::incoming::{self, Message, Welcome};
use taskwire_protocol::{SUBPROTOCOL, outgoing};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::{Client, Error, Result};

/// Largest server message accepted (a `completed` event with a large result).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What one frame from the server carried.
#[derive(Debug)]
pub enum Frame {
    /// A text frame: one server message.
    Message(Message),
    /// A binary frame of a streamed file (`delivery: "stream"`): the
    /// stream number of its `stream_begin` and a chunk of the file.
    Binary { stream: u32, bytes: Bytes },
}

/// An authenticated WebSocket connection (see the module docs).
#[derive(Debug)]
pub struct Connection {
    socket: WebSocketStream<Transport>,
    welcome: Box<Welcome>,
}

impl Connection {
    /// Connects to the client's server and waits for `welcome`.
    pub async fn open(client: &Client) -> Result<Connection> {
        Connection::open_with(client, None).await
    }

    /// [`open`](Connection::open) with a smaller read buffer (many idle
    /// connections in one process).
    pub async fn open_with(client: &Client, read_buffer: Option<usize>) -> Result<Connection> {
        let url = client.ws_url();
        let timeout = client.inner.connect_timeout;
        let connecting = async {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| Error::usage(format!("bad WebSocket URL {url}")).with(e))?;
            let mut bearer = HeaderValue::from_str(&format!("Bearer {}", client.inner.key.0))
                .map_err(|_| Error::usage("the key is not a valid header value"))?;
            bearer.set_sensitive(true);
            let headers = request.headers_mut();
            headers.insert("authorization", bearer);
            headers.insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
            let host = url
                .host_str()
                .ok_or_else(|| Error::usage(format!("no host in {url}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = url.port_or_known_default().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| Error::connect(format!("cannot reach {host}:{port}")).with(e))?;
            tcp.set_nodelay(true)
                .map_err(|e| Error::connect("cannot set TCP_NODELAY").with(e))?;
            let transport = if url.scheme() == "wss" {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| Error::usage(format!("bad TLS server name {host}")).with(e))?;
                let tls = tokio_rustls::TlsConnector::from(client.tls()?)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Error::connect(format!("TLS with {host}:{port}")).with(e))?;
                Transport::Tls(Box::new(tls))
            } else {
                Transport::Plain(tcp)
            };
            let mut config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_MESSAGE_BYTES));
            if let Some(bytes) = read_buffer {
                config = config.read_buffer_size(bytes).write_buffer_size(0);
            }
            let (socket, response) =
                tokio_tungstenite::client_async_with_config(request, transport, Some(config))
                    .await
                    .map_err(handshake_error)?;
            let selected = response.headers().get("sec-websocket-protocol");
            if selected.is_some_and(|p| p.as_bytes() != SUBPROTOCOL.as_bytes()) {
                return Err(Error::connect("the server selected another subprotocol"));
            }
            let mut socket = socket;
            loop {
                match frame_of(socket.next().await)? {
                    Some(Frame::Message(Message::Welcome(welcome))) => {
                        return Ok(Connection { socket, welcome });
                    }
                    Some(Frame::Message(Message::Error { error, .. })) => {
                        return Err(Error::server(error));
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| Error::timeout(format!("no welcome from {url} in {timeout:?}")))?
    }

    /// The server's `welcome`: its tasks and limits.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends one message and flushes.
    pub async fn send(&mut self, message: &outgoing::Message<'_>) -> Result<()> {
        self.send_text(message.to_json()).await
    }

    /// Sends one already encoded message and flushes.
    pub async fn send_text(&mut self, text: String) -> Result<()> {
        self.socket
            .send(WsMessage::text(text))
            .await
            .map_err(ws_error)
    }

    /// Queues one message without flushing; [`flush`](Connection::flush)
    /// writes everything fed so far in as few writes as possible.
    pub async fn feed(&mut self, message: &outgoing::Message<'_>) -> Result<()> {
        self.feed_text(message.to_json()).await
    }

    /// [`feed`](Connection::feed) of an already encoded message.
    pub async fn feed_text(&mut self, text: String) -> Result<()> {
        self.socket
            .feed(WsMessage::text(text))
            .await
            .map_err(ws_error)
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.socket.flush().await.map_err(ws_error)
    }

    /// The next frame. A close from the server is an error carrying its
    /// close code ([`Error::close_code`]).
    pub async fn recv(&mut self) -> Result<Frame> {
        loop {
            let next = self.socket.next().await;
            if let Some(frame) = frame_of(next)? {
                return Ok(frame);
            }
        }
    }

    /// A frame already received and buffered, without waiting; `None`
    /// when reading would wait.
    pub fn try_recv(&mut self) -> Option<Result<Frame>> {
        loop {
            let next = self.socket.next().now_or_never()?;
            match frame_of(next) {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Closes the connection (close code 1000) and waits for the echo.
    pub async fn close(mut self) -> Result<()> {
        let frame = tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        self.socket.close(Some(frame)).await.map_err(ws_error)?;
        // Read until the server's echo (or the end), briefly.
        let drain = async { while let Some(Ok(_)) = self.socket.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        Ok(())
    }
}

/// Decodes what the socket yielded; `None` for control frames.
fn frame_of(next: Option<Result<WsMessage, tungstenite::Error>>) -> Result<Option<Frame>> {
    match next {
        Some(Ok(WsMessage::Text(text))) => incoming::decode(&text)
            .map(|m| Some(Frame::Message(m)))
            .map_err(|e| Error::decode("a text frame").with(e)),
        Some(Ok(WsMessage::Binary(bytes))) => {
            if bytes.len() < 4 {
                return Err(Error::decode("a binary frame shorter than 4 bytes"));
            }
            let stream = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            Ok(Some(Frame::Binary {
                stream,
                bytes: bytes.slice(4..),
            }))
        }
        Some(Ok(WsMessage::Close(frame))) => {
            let (code, reason) = frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            let error = if code == 4401 {
                Error::auth(format!("the server closed the connection: {reason}"))
            } else {
                Error::connect(format!("the server closed the connection: {reason}"))
            };
            Err(error.with_close(code))
        }
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(ws_error(e)),
        None => Err(Error::connect("the connection was closed")),
    }
}

fn handshake_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<incoming::ErrorBody>(b).ok());
            let error = match body {
                Some(body) => Error::server(body.error),
                None if status == 401 => Error::auth("the key was refused"),
                None => Error::http(status).context("the server refused the WebSocket upgrade"),
            };
            error.with_status(status)
        }
        other => Error::connect("WebSocket handshake").with(other),
    }
}

fn ws_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Error::connect("the connection was closed")
        }
        tungstenite::Error::Capacity(e) => {
            Error::decode("a server message over the size limit").with(e)
        }
        other => Error::connect("the connection broke").with(other),
    }
}

/// A TCP stream, with TLS or without.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}
