//! A small HTTP/1.1 client for tests, over plain TCP or (m)TLS, that can send EXACT bytes.
//!
//! Smuggling and hygiene tests need to put precisely the bytes they mean on the wire (two
//! `Content-Length`s, obs-text, a bare LF), which no well-behaved client library allows. So the
//! core is [`send_raw`]: write these bytes, parse the response. [`Request`] builds ordinary
//! requests on top of it. TLS is rustls with the `ring` provider; a [`TlsIdentity`] is the
//! client side of a workload (trusts the test CA, optionally presents the workload's SVID).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::pki::{Pki, SERVER_DNS_NAME};
use crate::Result;

/// How long a read or write may block before the client gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client side of TLS: which CA to trust, which certificate (if any) to present, which
/// server name to send and verify.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl TlsIdentity {
    /// Trusts `ca_cert` (PEM); presents `client` = (cert PEM, key PEM) when given; sends and
    /// verifies `server_name`. ALPN offers `http/1.1` only (these are HTTP/1.1 bytes).
    pub fn new(ca_cert: &Path, client: Option<(&Path, &Path)>, server_name: &str) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(ca_cert).with_context(|| format!("reading CA {}", ca_cert.display()))?
        {
            roots.add(cert.with_context(|| format!("parsing CA {}", ca_cert.display()))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("parsing {}", cert.display()))?;
                let key =
                    PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading key {}", key.display()))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| anyhow!("bad TLS server name {server_name:?}: {e}"))?;
        Ok(TlsIdentity { config: Arc::new(config), server_name })
    }

    /// The client side of workload `name` from the test PKI: trusts the test CA, presents the
    /// workload's certificate, expects the sidecar's `localhost` server certificate.
    pub fn workload(pki: &Pki, name: &str) -> Result<Self> {
        let w = pki.workload(name)?;
        Self::new(&pki.ca_cert, Some((&w.cert, &w.key)), SERVER_DNS_NAME)
    }

    /// A TLS client with no client certificate (trusts the test CA).
    pub fn anonymous(pki: &Pki) -> Result<Self> {
        Self::new(&pki.ca_cert, None, SERVER_DNS_NAME)
    }

    /// The same identity offering these ALPN protocols instead (empty: no ALPN).
    pub fn with_alpn(&self, protocols: &[&[u8]]) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        TlsIdentity { config: Arc::new(config), server_name: self.server_name.clone() }
    }
}

/// An HTTP/1.1 request to build with [`Request::to_http1`] and send with [`send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, sent as is.
    pub method: String,
    /// The request target, sent as is (`/a%2Fb;x?y`).
    pub path: String,
    /// The `Host` header value, unless `headers` already has a `host`.
    pub authority: String,
    /// Extra header fields, in order, as raw bytes.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body; a `content-length` is added when it is non-empty, unless `headers` has a
    /// `content-length` or `transfer-encoding`.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with this method and target, `Host: localhost`, no headers, no body.
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            authority: SERVER_DNS_NAME.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// Sets the `Host` value.
    pub fn with_authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    /// Appends a header field (raw bytes: anything goes).
    pub fn with_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// The HTTP/1.1 bytes of this request.
    pub fn to_http1(&self) -> Vec<u8> {
        let has = |name: &str| self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()));
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !has("host") {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(self.authority.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The final status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// Header fields in order; names as received, values lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Status codes of interim (1xx) responses that came before, e.g. `[100]`.
    pub interim: Vec<u16>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The body as lossy UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (e.g. the echo's description of the request it received).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON (status {}): {}", self.status, self.text()))
    }
}

/// Everything a connection returned after some raw bytes were written on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExchange {
    /// Every byte received, as is.
    pub bytes: Vec<u8>,
    /// The responses that could be parsed out of `bytes`, in order (interim ones folded into
    /// the next final one).
    pub responses: Vec<Response>,
    /// Whether the peer closed the connection (rather than the client stopping on `wait`).
    pub closed_by_peer: bool,
}

/// Sends `raw` bytes on a new connection to `addr` (TLS when `tls` is given) and returns the
/// first final response. An error when the connection or TLS handshake fails, or the peer
/// closes before a complete response.
pub fn send_raw(addr: SocketAddr, tls: Option<&TlsIdentity>, raw: &[u8]) -> Result<Response> {
    let mut conn = Conn::open(addr, tls)?;
    conn.write_all(raw).context("writing the request")?;
    conn.flush().context("writing the request")?;
    let mut reader = BufReader::new(conn);
    read_response(&mut reader)?.ok_or_else(|| anyhow!("connection closed before any response"))
}

/// Sends `raw` bytes on a new connection and collects everything the peer sends until it
/// closes the connection or stays silent for `wait`; for pipelining and smuggling checks,
/// where the number of responses is the finding.
pub fn send_raw_all(addr: SocketAddr, tls: Option<&TlsIdentity>, raw: &[u8], wait: Duration) -> Result<RawExchange> {
    let mut conn = Conn::open(addr, tls)?;
    conn.tcp().set_read_timeout(Some(wait))?;
    conn.write_all(raw).context("writing the request")?;
    conn.flush().context("writing the request")?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + DEFAULT_TIMEOUT.max(wait * 4);
    let closed_by_peer = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if is_timeout(&e) => break false,
            Err(e) if is_peer_close(&e) => break true,
            Err(e) if bytes.is_empty() => return Err(e).context("reading the response"),
            Err(_) => break true,
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let mut responses = Vec::new();
    let mut reader = BufReader::new(io::Cursor::new(bytes.clone()));
    while let Ok(Some(resp)) = read_response(&mut reader) {
        responses.push(resp);
    }
    Ok(RawExchange { bytes, responses, closed_by_peer })
}

/// Opens a TLS connection to `addr` (the SNI is `tls`'s server name), writes `data` and reads
/// back until as many bytes have come back, the peer closes, or the read times out; returns
/// what came back. An error when the connection or the TLS handshake fails (for example when
/// a network filter closes the connection): for TLS passthrough tests against an echo.
pub fn tls_exchange(addr: SocketAddr, tls: &TlsIdentity, data: &[u8]) -> Result<Vec<u8>> {
    let mut conn = Conn::open(addr, Some(tls))?;
    conn.write_all(data).context("writing")?;
    conn.flush().context("writing")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while got.len() < data.len() {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if is_peer_close(&e) => break,
            Err(e) => return Err(e).context("reading"),
        }
    }
    Ok(got)
}

/// Sends `request` as HTTP/1.1 and returns the final response.
pub fn send(addr: SocketAddr, tls: Option<&TlsIdentity>, request: &Request) -> Result<Response> {
    send_raw(addr, tls, &request.to_http1())
}

/// `GET path` with `Host: localhost`.
pub fn get(addr: SocketAddr, tls: Option<&TlsIdentity>, path: &str) -> Result<Response> {
    send(addr, tls, &Request::get(path))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn open(addr: SocketAddr, tls: Option<&TlsIdentity>) -> Result<Conn> {
        let tcp =
            TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
        tcp.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        tcp.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        match tls {
            None => Ok(Conn::Plain(tcp)),
            Some(id) => {
                let conn = ClientConnection::new(Arc::clone(&id.config), id.server_name.clone())?;
                let mut stream = StreamOwned::new(conn, tcp);
                // Finish the handshake now, so a refused handshake is reported as such.
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock).context("TLS handshake")?;
                }
                Ok(Conn::Tls(Box::new(stream)))
            }
        }
    }
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A peer that closes without TLS close_notify (Envoy does) or resets after its response.
fn is_peer_close(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset)
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) if is_peer_close(&e) && line.is_empty() => return Ok(None),
        Err(e) => return Err(e),
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads one final response (folding interim ones in). `Ok(None)` on a clean EOF first.
fn read_response<R: BufRead>(r: &mut R) -> Result<Option<Response>> {
    let mut interim = Vec::new();
    loop {
        let Some(status_line) = read_line(r).context("reading the status line")? else {
            if interim.is_empty() {
                return Ok(None);
            }
            bail!("connection closed after interim responses {interim:?}");
        };
        let text = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            bail!("not an HTTP/1.x status line: {text:?}");
        }
        let status: u16 =
            parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line {text:?}"))?;
        let reason = parts.next().unwrap_or_default().to_string();

        let mut headers = Vec::new();
        loop {
            let line = read_line(r)
                .context("reading response headers")?
                .ok_or_else(|| anyhow!("connection closed in response headers"))?;
            if line.is_empty() {
                break;
            }
            let colon = line.iter().position(|&b| b == b':').ok_or_else(|| anyhow!("response header without colon"))?;
            let (name, value) = line.split_at(colon);
            let value = String::from_utf8_lossy(value.get(1..).unwrap_or_default());
            headers.push((String::from_utf8_lossy(name).into_owned(), value.trim().to_string()));
        }
        let mut resp = Response { status, reason, headers, body: Vec::new(), interim: Vec::new() };
        if (100..200).contains(&status) && status != 101 {
            interim.push(status);
            continue;
        }
        resp.interim = interim;
        resp.body = read_body(r, &resp)?;
        return Ok(Some(resp));
    }
}

fn read_body<R: BufRead>(r: &mut R, resp: &Response) -> Result<Vec<u8>> {
    if resp.status == 204 || resp.status == 304 || resp.status == 101 {
        return Ok(Vec::new());
    }
    let chunked = resp.header_all("transfer-encoding").iter().any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let line = read_line(r)?.ok_or_else(|| anyhow!("closed in chunk size"))?;
            let text = String::from_utf8_lossy(&line);
            let hex = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| anyhow!("bad chunk size {hex:?}"))?;
            if size == 0 {
                while read_line(r)?.is_some_and(|l| !l.is_empty()) {}
                return Ok(body);
            }
            let before = body.len();
            r.by_ref().take(size).read_to_end(&mut body)?;
            if ((body.len() - before) as u64) < size {
                bail!("connection closed in chunk");
            }
            read_line(r)?;
        }
    }
    if let Some(len) = resp.header("content-length") {
        let len: u64 = len.parse().map_err(|_| anyhow!("bad content-length {len:?}"))?;
        let mut body = Vec::new();
        r.by_ref().take(len).read_to_end(&mut body)?;
        if (body.len() as u64) < len {
            bail!("connection closed in body ({} of {len} bytes)", body.len());
        }
        return Ok(body);
    }
    // Delimited by close.
    let mut body = Vec::new();
    match r.read_to_end(&mut body) {
        Ok(_) => Ok(body),
        Err(e) if is_peer_close(&e) => Ok(body),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let req = Request::new("POST", "/x").with_header("X-A", b"1\x80").with_body("hi");
        assert_eq!(req.to_http1(), b"POST /x HTTP/1.1\r\nhost: localhost\r\nX-A: 1\x80\r\ncontent-length: 2\r\n\r\nhi");
    }

    #[test]
    fn parses_interim_chunked_and_pipelined() -> Result<()> {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nHTTP/1.1 403 Forbidden\r\ncontent-length: 1\r\n\r\nx";
        let mut r = BufReader::new(&bytes[..]);
        let first = read_response(&mut r)?.ok_or_else(|| anyhow!("none"))?;
        assert_eq!((first.status, first.interim.clone()), (200, vec![100]));
        assert_eq!(first.body, b"ab");
        let second = read_response(&mut r)?.ok_or_else(|| anyhow!("none"))?;
        assert_eq!((second.status, second.text()), (403, "x".to_string()));
        assert!(read_response(&mut r)?.is_none());
        Ok(())
    }
}
