//! A stand-in identity provider's JWKS endpoint on loopback: a tiny HTTP/1.1 server that
//! answers every `GET` with the key set (or the status) set at run time, so a test can rotate
//! keys or make the provider fail while Envoy fetches through a cluster pointed at it
//! ([`crate::mesh::MeshOptions::extra_clusters`]). Keys come from [`crate::jwt::TokenIssuer`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::server::{lock, Server};
use crate::Result;

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    answer: Mutex<Answer>,
    requests: AtomicU64,
}

/// The running JWKS endpoint. Drop (or [`JwksServer::stop`]) closes it and joins its threads.
pub struct JwksServer {
    server: Server,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer").field("addr", &self.server.addr()).finish_non_exhaustive()
    }
}

impl JwksServer {
    /// Starts on `127.0.0.1:<free port>`, answering `status` with an empty key set body.
    pub fn start(status: u16) -> Result<JwksServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let shared = Arc::new(Shared {
            answer: Mutex::new(Answer { status, body: br#"{"keys":[]}"#.to_vec() }),
            requests: AtomicU64::new(0),
        });
        let conn_shared = Arc::clone(&shared);
        let server = Server::start(listener, "idp", move |stream, tracker| {
            let _ = serve(stream, &conn_shared, || tracker.stopping());
        })?;
        Ok(JwksServer { server, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Serve this JWKS (`{"keys": [...]}`) with 200 from now on.
    pub fn set_jwks(&self, jwks: &Value) {
        *lock(&self.shared.answer) = Answer { status: 200, body: jwks.to_string().into_bytes() };
    }

    /// Answer with this status (and a small JSON error body) from now on.
    pub fn set_status(&self, status: u16) {
        *lock(&self.shared.answer) = Answer { status, body: br#"{"error":"unavailable"}"#.to_vec() };
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stop listening and close every connection (the provider is down).
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn serve(stream: TcpStream, shared: &Shared, stopping: impl Fn() -> bool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while !stopping() {
        // Request line and headers; a body (Content-Length) is read and ignored.
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        let (status, body) = {
            let answer = lock(&shared.answer);
            (answer.status, answer.body.clone())
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let head =
            format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)?;
        writer.flush()?;
    }
    Ok(())
}
