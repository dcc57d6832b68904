//! The echo upstream: the "application" behind the sidecar.
//!
//! It answers every request with `200 application/json` describing exactly what reached it:
//!
//! ```json
//! {"method": "GET", "path": "/a?b", "headers": [["host", "x"], ...], "bodyLength": 0}
//! ```
//!
//! Header names are as received (order and case kept), values are lossy UTF-8. That is what
//! lets a test see what Envoy and the filter really forwarded (a stripped header, a rewritten
//! path, a smuggled second request). Every request is also recorded ([`Echo::received`]).
//!
//! HTTP/1.1 only, keep-alive, `Content-Length` and chunked bodies, `Expect: 100-continue`.
//! One thread per connection; [`Echo::stop`] (or drop) closes the listener and every open
//! connection, so nothing outlives a test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::server::{lock, Server, Tracker};
use crate::Result;

/// How long a connection may sit idle (or stall mid-request) before the echo closes it.
/// Longer than the idle timeout of the Envoy cluster in front of it, so Envoy closes first and
/// never races a request onto a connection being closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Limits that keep a broken peer from eating memory.
const MAX_HEAD_LINE: usize = 64 * 1024;
const MAX_HEADERS: usize = 512;
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// One request as the echo received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The request method.
    pub method: String,
    /// The request target, as received.
    pub path: String,
    /// The protocol version from the request line (`HTTP/1.1`).
    pub version: String,
    /// Header fields in order; names as received, values lossy UTF-8 with OWS trimmed.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The JSON document the echo answers with.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "headers": self.headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
            "bodyLength": self.body.len(),
        })
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
}

/// A running echo upstream on `127.0.0.1:<ephemeral>`.
pub struct Echo {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo").field("addr", &self.addr).finish()
    }
}

impl Echo {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> Result<Echo> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo upstream")?;
        let shared = Arc::new(Shared::default());
        let conn_shared = Arc::clone(&shared);
        let server = Server::start(listener, "echo", move |stream, tracker| {
            let _ = serve_connection(stream, &conn_shared, tracker);
        })?;
        Ok(Echo { addr: server.addr(), shared, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.received).len()
    }

    /// Forgets the recorded requests.
    pub fn clear_received(&self) {
        lock(&self.shared.received).clear();
    }

    /// Stops accepting, closes every open connection and joins every thread. Idempotent.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared, tracker: &Tracker) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        if tracker.stopping() {
            return Ok(());
        }
        let request = match read_request(&mut reader, &mut writer) {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()), // clean close between requests
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let body = format!("{{\"error\":{}}}", serde_json::Value::from(e.to_string()));
                let _ = write!(
                    writer,
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let close = wants_close(&request);
        let body = request.to_json().to_string();
        lock(&shared.received).push(request);
        let mut head =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        writer.write_all(body.as_bytes())?;
        writer.flush()?;
        if close {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

fn wants_close(req: &Received) -> bool {
    let tokens = req
        .header_all("connection")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if req.version.eq_ignore_ascii_case("HTTP/1.0") {
        !tokens.iter().any(|t| t == "keep-alive")
    } else {
        tokens.iter().any(|t| t == "close")
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one line ending in LF (CR before it removed). `Ok(None)` on EOF before any byte.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = r.by_ref().take(MAX_HEAD_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_HEAD_LINE {
            return Err(invalid("line too long"));
        }
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn read_request<R: BufRead, W: Write>(r: &mut R, w: &mut W) -> io::Result<Option<Received>> {
    // Tolerate empty lines before a request line (RFC 9112 section 2.2).
    let line = loop {
        match read_line(r) {
            Ok(None) => return Ok(None),
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Err(e) if is_idle_end(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let text = String::from_utf8_lossy(&line).into_owned();
    let mut parts = text.split(' ');
    let (Some(method), Some(path), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {text:?}")));
    };
    let (method, path, version) = (method.to_string(), path.to_string(), version.to_string());

    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| invalid("connection closed in headers"))?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| invalid("header line without colon"))?;
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        headers
            .push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(trim_ows(value)).into_owned()));
    }

    let mut req = Received { method, path, version, headers, body: Vec::new() };

    let chunked = req
        .header_all("transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .next_back()
        .is_some_and(|last| last.eq_ignore_ascii_case("chunked"));
    let content_length = match req.header("content-length") {
        Some(v) if !chunked => Some(v.trim().parse::<u64>().map_err(|_| invalid(format!("bad content-length {v:?}")))?),
        _ => None,
    };
    let has_body = chunked || content_length.is_some_and(|n| n > 0);
    if has_body && req.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(n) = content_length {
        if n > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let mut body = Vec::new();
        r.by_ref().take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in body"));
        }
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| invalid("connection closed in chunk size"))?;
        let size_text = String::from_utf8_lossy(&line);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| invalid(format!("bad chunk size {size_hex:?}")))?;
        if size == 0 {
            // Trailer section, up to the empty line.
            loop {
                let t = read_line(r)?.ok_or_else(|| invalid("connection closed in trailers"))?;
                if t.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let before = body.len();
        r.by_ref().take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size {
            return Err(invalid("connection closed in chunk"));
        }
        let crlf = read_line(r)?.ok_or_else(|| invalid("connection closed after chunk"))?;
        if !crlf.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn is_idle_end(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(raw).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn echoes_method_path_headers_and_body_length() {
        let mut echo = Echo::start().expect("start");
        let out = exchange(
            echo.addr(),
            b"POST /a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nX_Under: v \r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        let json = out.split("\r\n\r\n").nth(1).expect("body");
        let v: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/a%2Fb?x=1");
        assert_eq!(v["bodyLength"], 5);
        assert_eq!(v["headers"][1], serde_json::json!(["X_Under", "v"]));
        assert_eq!(echo.request_count(), 1);
        echo.stop();
    }

    #[test]
    fn keep_alive_and_chunked() {
        let echo = Echo::start().expect("start");
        let out = exchange(
            echo.addr(),
            b"POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        let got = echo.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, b"abcde");
        assert_eq!(got[1].path, "/2");
    }

    #[test]
    fn stop_does_not_hang_on_idle_connections() {
        let mut echo = Echo::start().expect("start");
        let _idle = TcpStream::connect(echo.addr()).expect("connect");
        let started = std::time::Instant::now();
        echo.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
