//! A minimal HTTP/1.1 client for what the benchmark needs: `GET` with
//! `Connection: close`, counting (not keeping) the body. Enough for
//! downloads and `/readyz`, and no HTTP stack between the socket and the
//! measurement.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// `http://host:port` split into its parts (a path after it is ignored).
#[derive(Debug, Clone)]
pub struct Origin {
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn parse(url: &str) -> Result<Origin, BenchError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| BenchError::new(format!("{url}: only http:// URLs are supported")))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| BenchError::new(format!("{url}: bad port")))?,
            ),
            _ => (authority, 80),
        };
        Ok(Origin {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }

    /// The WebSocket endpoint on the same listener.
    pub fn ws_url(&self) -> String {
        if self.host.contains(':') {
            format!("ws://[{}]:{}/v1/ws", self.host, self.port)
        } else {
            format!("ws://{}:{}/v1/ws", self.host, self.port)
        }
    }
}

/// What a `GET` returned.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub content_length: Option<u64>,
    pub body_bytes: u64,
}

/// `GET path`, reading the body into `buffer` chunk by chunk and dropping it.
pub async fn get(origin: &Origin, path: &str, buffer: &mut [u8]) -> Result<Fetched, BenchError> {
    let mut stream = TcpStream::connect((origin.host.as_str(), origin.port))
        .await
        .map_err(|e| BenchError::new(format!("connect {}:{}: {e}", origin.host, origin.port)))?;
    stream.set_nodelay(true).map_err(BenchError::io)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
        origin.host, origin.port
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(BenchError::io)?;

    // Read until the end of the header block.
    let mut head = Vec::with_capacity(1024);
    let body_start = loop {
        let n = stream.read(buffer).await.map_err(BenchError::io)?;
        if n == 0 {
            return Err(BenchError::new(
                "connection closed inside the response header",
            ));
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > 64 * 1024 {
            return Err(BenchError::new("response header over 64 KiB"));
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| BenchError::new("malformed status line"))?;
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<u64>().ok());

    let mut body_bytes = (head.len() - body_start) as u64;
    loop {
        if content_length.is_some_and(|len| body_bytes >= len) {
            break;
        }
        let n = stream.read(buffer).await.map_err(BenchError::io)?;
        if n == 0 {
            break;
        }
        body_bytes += n as u64;
    }
    Ok(Fetched {
        status,
        content_length,
        body_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::Origin;

    #[test]
    fn origins_parse_and_give_the_ws_endpoint() {
        let o = Origin::parse("http://127.0.0.1:8080").unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 8080));
        assert_eq!(o.ws_url(), "ws://127.0.0.1:8080/v1/ws");
        let o = Origin::parse("http://[::1]:9/x").unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!((o.host.as_str(), o.port), ("::1", 9));
        assert_eq!(o.ws_url(), "ws://[::1]:9/v1/ws");
        assert_eq!(
            Origin::parse("http://localhost").map(|o| o.port).ok(),
            Some(80)
        );
        assert!(Origin::parse("https://x").is_err());
    }
}
