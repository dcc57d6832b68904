//! A TLS stand-in for "the internet": the upstream of the outbound sidecar's TLS passthrough
//! listener.
//!
//! It serves TLS with a certificate for a few external names (`api.example.com`,
//! `*.example.com`, ...) signed by its own throwaway CA ([`TlsEcho::ca_cert`], which test
//! clients trust), and echoes back every byte it receives. It counts what reached it: TCP
//! connections accepted, TLS handshakes completed, the SNI of each, bytes echoed. That is how a
//! test proves that a connection the network filter closed never got here.
//!
//! One thread per connection; [`TlsEcho::stop`] (or drop) closes the listener and every
//! connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::server::{lock, Server};
use crate::Result;

/// The names the echo's certificate covers.
pub const DEFAULT_NAMES: &[&str] = &["api.example.com", "*.example.com", "*.example.net", "localhost"];

/// How long a connection may stay idle before the echo closes it.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Shared {
    accepted: AtomicU64,
    handshakes: AtomicU64,
    bytes: AtomicU64,
    server_names: Mutex<Vec<String>>,
}

/// A running TLS echo on `127.0.0.1:<ephemeral>`.
pub struct TlsEcho {
    addr: SocketAddr,
    ca_cert: PathBuf,
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for TlsEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsEcho").field("addr", &self.addr).finish()
    }
}

impl TlsEcho {
    /// Mints a CA and a server certificate for `names` into `dir`, binds `127.0.0.1:0` and
    /// starts serving.
    pub fn start(dir: &Path, names: &[&str]) -> Result<TlsEcho> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (ca_cert, cert_pem, key_pem) = mint(dir, names)?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").context("binding the TLS echo")?;
        let shared = Arc::new(Shared::default());
        let conn_shared = Arc::clone(&shared);
        let server = Server::start(listener, "tls-echo", move |stream, _| {
            conn_shared.accepted.fetch_add(1, Ordering::SeqCst);
            let _ = serve(stream, Arc::clone(&config), &conn_shared);
        })?;
        Ok(TlsEcho { addr: server.addr(), ca_cert, shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA (PEM) that signed the echo's certificate: what a test client trusts.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// TCP connections accepted so far (whatever happened next).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Bytes received (and echoed) so far, over all connections.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }

    /// The SNI of each completed handshake (`""` for none), in order.
    pub fn server_names(&self) -> Vec<String> {
        lock(&self.shared.server_names).clone()
    }

    /// Stops accepting, closes every connection, joins every thread. Idempotent.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    shared.handshakes.fetch_add(1, Ordering::SeqCst);
    lock(&shared.server_names).push(tls.conn.server_name().unwrap_or_default().to_string());
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => return Err(e),
        };
        shared.bytes.fetch_add(n as u64, Ordering::SeqCst);
        tls.write_all(buf.get(..n).unwrap_or_default())?;
        tls.flush()?;
    }
}

/// A CA and a leaf for `names` (DNS SANs, wildcards allowed); returns (CA path, leaf PEM, key PEM).
fn mint(dir: &Path, names: &[&str]) -> Result<(PathBuf, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "meshguard internet stand-in CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_path = dir.join("internet-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("internet"));
    for name in names {
        let ia5 = (*name).try_into().map_err(|e| anyhow!("DNS SAN {name:?} refused by rcgen: {e}"))?;
        leaf.subject_alt_names.push(SanType::DnsName(ia5));
    }
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_path, cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::TlsIdentity;

    #[test]
    fn handshakes_and_echoes() -> Result<()> {
        let dir = crate::scratch_dir("tls-echo-unit")?;
        let mut echo = TlsEcho::start(&dir, DEFAULT_NAMES)?;
        let id = TlsIdentity::new(echo.ca_cert(), None, "api.example.com")?;
        let got = crate::client::tls_exchange(echo.addr(), &id, b"ping\n")?;
        assert_eq!(got, b"ping\n");
        let id = TlsIdentity::new(echo.ca_cert(), None, "www.example.net")?;
        assert_eq!(crate::client::tls_exchange(echo.addr(), &id, b"x")?, b"x");
        assert_eq!((echo.accepted(), echo.handshakes(), echo.bytes()), (2, 2, 6));
        assert_eq!(echo.server_names(), ["api.example.com", "www.example.net"]);
        echo.stop();
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
