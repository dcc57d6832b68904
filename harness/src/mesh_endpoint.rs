//! A mesh workload's endpoint as an upstream: TLS with a workload certificate from the test
//! PKI (an X.509-SVID), answering every HTTP/1.1 request with `200 application/json`
//! `{"endpoint": "<label>", "method": ..., "path": ...}` and counting what reached it.
//!
//! The outbound sidecar's pinned services resolve to these (see
//! `envoy-config/sidecar-outbound.yaml`): `payments` to the endpoint with the right SPIFFE ID,
//! `ledger` to an impostor that holds a valid mesh certificate with the wrong one (a poisoned
//! registry). The request count is how a test shows the honest limit of upstream pinning: the
//! impostor did receive the request; the client never saw its answer.
//!
//! HTTP/1.1 only, keep-alive, `Content-Length` bodies (read and dropped). One thread per
//! connection; [`MeshEndpoint::stop`] (or drop) closes everything.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::server::Server;
use crate::Result;

const IDLE: Duration = Duration::from_secs(120);
const MAX_HEAD: usize = 64 * 1024;

/// A running TLS endpoint on `127.0.0.1:<ephemeral>`.
pub struct MeshEndpoint {
    label: String,
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    server: Server,
}

impl std::fmt::Debug for MeshEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshEndpoint").field("label", &self.label).field("addr", &self.addr).finish()
    }
}

impl MeshEndpoint {
    /// Serves TLS with `cert` (PEM chain) and `key` (PEM); `label` names it in its answers.
    pub fn start(label: &str, cert: &Path, key: &Path) -> Result<MeshEndpoint> {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?,
        );
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a mesh endpoint")?;
        let requests = Arc::new(AtomicU64::new(0));
        let (conn_requests, conn_label) = (Arc::clone(&requests), label.to_string());
        let server = Server::start(listener, "mesh-endpoint", move |stream, _| {
            let _ = serve(stream, Arc::clone(&config), &conn_label, &conn_requests);
        })?;
        Ok(MeshEndpoint { label: label.to_string(), addr: server.addr(), requests, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// HTTP requests that reached this endpoint so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every connection, joins every thread. Idempotent.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>, label: &str, requests: &AtomicU64) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = BufReader::new(StreamOwned::new(conn, stream));
    loop {
        // The request head.
        let mut head = Vec::new();
        loop {
            let n = tls.by_ref().take(MAX_HEAD as u64).read_until(b'\n', &mut head)?;
            if n == 0 {
                return Ok(());
            }
            if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
                break;
            }
            if head.len() >= MAX_HEAD {
                return Ok(());
            }
        }
        if head == b"\r\n" {
            continue;
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut first = text.lines().next().unwrap_or_default().split(' ');
        let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
        let length: u64 = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        io::copy(&mut tls.by_ref().take(length), &mut io::sink())?;
        requests.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({"endpoint": label, "method": method, "path": path}).to_string();
        // One write, one TLS record: several small records would each wait for an ACK.
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = tls.get_mut();
        out.write_all(response.as_bytes())?;
        out.flush()?;
    }
}
