//! A throwaway SPIFFE test PKI, minted at run time.
//!
//! Istio gives every workload an X.509-SVID: a short leaf certificate whose only identity is
//! one URI SAN `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, signed by the
//! mesh CA. [`Pki::mint`] writes such a CA and a fixed set of workloads (good ones and the
//! malformed shapes the peer-identity check must refuse) as PEM files, so every test run has
//! fresh keys and nothing secret is ever committed.
//!
//! The set of workload names is part of the API: tests ask for `pki.workload("web")`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Result;

/// The Common Name of the test mesh CA (the one Envoy trusts).
pub const CA_NAME: &str = "meshguard test CA";
/// The Common Name of the second CA, which Envoy does NOT trust.
pub const UNTRUSTED_CA_NAME: &str = "meshguard untrusted CA";

/// The trust domain of the `"foreign"` workload, whatever trust domain the mesh uses.
pub const FOREIGN_TRUST_DOMAIN: &str = "other.example";

/// The DNS name in the `"server"` certificate (the local sidecar's own serving cert).
pub const SERVER_DNS_NAME: &str = "localhost";

/// The DNS name in the `"payments"` and `"impostor"` certificates.
pub const PAYMENTS_DNS_NAME: &str = "payments.prod.svc.cluster.local";

/// One workload's credentials: its certificate (PEM, leaf only) and private key (PEM, PKCS#8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The workload's name in the PKI (`"web"`, `"no-uri-san"`, ...).
    pub name: String,
    /// The SPIFFE ID it was minted for, when it has exactly one `spiffe://` URI SAN.
    pub spiffe_id: Option<String>,
    /// Every URI SAN in the certificate, in order.
    pub uri_sans: Vec<String>,
    /// Every DNS SAN in the certificate, in order.
    pub dns_sans: Vec<String>,
    /// Path of the certificate PEM file.
    pub cert: PathBuf,
    /// Path of the private key PEM file.
    pub key: PathBuf,
    /// Path of the PEM file of the CA that signed it.
    pub issuer_ca: PathBuf,
}

/// The minted PKI: the trusted CA and the standard set of workloads.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory holding every PEM file.
    pub dir: PathBuf,
    /// The trust domain the mesh's workloads were minted in (`cluster.local` by default).
    pub trust_domain: String,
    /// The CA Envoy trusts (`validation_context.trusted_ca`).
    pub ca_cert: PathBuf,
    /// A second CA that Envoy does not trust; it signed only the `"untrusted"` workload.
    pub untrusted_ca_cert: PathBuf,
    /// Workloads by name (see [`Pki::mint`] for the set).
    pub workloads: BTreeMap<String, Workload>,
}

/// What one workload's certificate looks like.
struct Spec<'a> {
    name: &'a str,
    uris: Vec<String>,
    dns: Vec<&'a str>,
    server: bool,
    untrusted: bool,
}

impl Pki {
    /// Mints a CA "meshguard test CA" and the standard workloads into `dir` (created if
    /// missing). `trust_domain` is used for the mesh's own workloads (normally
    /// `cluster.local`); the `"foreign"` one always uses [`FOREIGN_TRUST_DOMAIN`].
    ///
    /// | name | URI SANs | DNS SANs | signed by |
    /// |---|---|---|---|
    /// | `server` | `spiffe://TD/ns/default/sa/api` | `localhost` | test CA (serverAuth + clientAuth) |
    /// | `web` | `spiffe://TD/ns/web/sa/web` | | test CA |
    /// | `batch` | `spiffe://TD/ns/batch/sa/batch` | | test CA |
    /// | `admin` | `spiffe://TD/ns/ops/sa/admin` | | test CA |
    /// | `foreign` | `spiffe://other.example/ns/web/sa/web` | | test CA |
    /// | `no-uri-san` | (none) | `no-uri-san.example` | test CA |
    /// | `two-uri-sans` | `spiffe://TD/ns/web/sa/web`, `spiffe://TD/ns/ops/sa/admin` | | test CA |
    /// | `not-spiffe` | `https://example.com/x` | | test CA |
    /// | `bad-spiffe` | `spiffe://TD/ns/web/../sa/x` | | test CA |
    /// | `untrusted` | `spiffe://TD/ns/web/sa/web` | | a second CA Envoy does not trust |
    /// | `payments` | `spiffe://TD/ns/prod/sa/payments` | `payments.prod.svc.cluster.local` | test CA (serverAuth + clientAuth) |
    /// | `impostor` | `spiffe://TD/ns/attacker/sa/impostor` | `payments.prod.svc.cluster.local` | test CA (serverAuth + clientAuth): a valid mesh workload, the wrong one |
    pub fn mint(dir: &Path, trust_domain: &str) -> Result<Pki> {
        fs::create_dir_all(dir).with_context(|| format!("creating PKI dir {}", dir.display()))?;
        let td = trust_domain;
        let spiffe = |ns: &str, sa: &str| format!("spiffe://{td}/ns/{ns}/sa/{sa}");

        let (ca_cert, ca) = mint_ca(dir, "ca", CA_NAME)?;
        let (untrusted_ca_cert, untrusted_ca) = mint_ca(dir, "untrusted-ca", UNTRUSTED_CA_NAME)?;

        let specs = vec![
            Spec {
                name: "server",
                uris: vec![spiffe("default", "api")],
                dns: vec![SERVER_DNS_NAME],
                server: true,
                untrusted: false,
            },
            Spec::client("web", vec![spiffe("web", "web")]),
            Spec::client("batch", vec![spiffe("batch", "batch")]),
            Spec::client("admin", vec![spiffe("ops", "admin")]),
            Spec::client("foreign", vec![format!("spiffe://{FOREIGN_TRUST_DOMAIN}/ns/web/sa/web")]),
            Spec { name: "no-uri-san", uris: vec![], dns: vec!["no-uri-san.example"], server: false, untrusted: false },
            Spec::client("two-uri-sans", vec![spiffe("web", "web"), spiffe("ops", "admin")]),
            Spec::client("not-spiffe", vec!["https://example.com/x".to_string()]),
            Spec::client("bad-spiffe", vec![format!("spiffe://{td}/ns/web/../sa/x")]),
            Spec { untrusted: true, ..Spec::client("untrusted", vec![spiffe("web", "web")]) },
            // The upstream endpoints of the outbound sidecar's pinned services (see
            // crate::mesh_endpoint): the right one, and an impostor with a valid mesh SVID.
            Spec {
                name: "payments",
                uris: vec![spiffe("prod", "payments")],
                dns: vec![PAYMENTS_DNS_NAME],
                server: true,
                untrusted: false,
            },
            Spec {
                name: "impostor",
                uris: vec![spiffe("attacker", "impostor")],
                dns: vec![PAYMENTS_DNS_NAME],
                server: true,
                untrusted: false,
            },
        ];

        let mut workloads = BTreeMap::new();
        for spec in specs {
            let (issuer, issuer_ca) =
                if spec.untrusted { (&untrusted_ca, &untrusted_ca_cert) } else { (&ca, &ca_cert) };
            let workload = mint_workload(dir, &spec, issuer, issuer_ca)
                .with_context(|| format!("minting workload {:?}", spec.name))?;
            workloads.insert(spec.name.to_string(), workload);
        }

        Ok(Pki {
            dir: dir.to_path_buf(),
            trust_domain: trust_domain.to_string(),
            ca_cert,
            untrusted_ca_cert,
            workloads,
        })
    }

    /// The workload called `name`, or an error naming the ones that exist.
    pub fn workload(&self, name: &str) -> Result<&Workload> {
        self.workloads.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.workloads.keys().map(String::as_str).collect();
            anyhow!("no workload {name:?} in the test PKI (known: {known:?})")
        })
    }
}

impl<'a> Spec<'a> {
    fn client(name: &'a str, uris: Vec<String>) -> Self {
        Spec { name, uris, dns: vec![], server: false, untrusted: false }
    }
}

fn mint_ca(dir: &Path, file_stem: &str, common_name: &str) -> Result<(PathBuf, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().context("generating CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "meshguard");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).with_context(|| format!("self-signing {common_name}"))?;
    let cert_path = dir.join(format!("{file_stem}.pem"));
    write(&cert_path, &cert.pem())?;
    write(&dir.join(format!("{file_stem}.key.pem")), &key.serialize_pem())?;
    Ok((cert_path, Issuer::new(params, key)))
}

fn mint_workload(dir: &Path, spec: &Spec<'_>, issuer: &Issuer<'_, KeyPair>, issuer_ca: &Path) -> Result<Workload> {
    let key = KeyPair::generate().context("generating workload key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "meshguard");
    params.distinguished_name.push(DnType::CommonName, spec.name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = if spec.server {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    for uri in &spec.uris {
        let ia5 = uri.as_str().try_into().map_err(|e| anyhow!("URI SAN {uri:?} refused by rcgen: {e}"))?;
        params.subject_alt_names.push(SanType::URI(ia5));
    }
    for dns in &spec.dns {
        let ia5 = (*dns).try_into().map_err(|e| anyhow!("DNS SAN {dns:?} refused by rcgen: {e}"))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    let cert = params.signed_by(&key, issuer).with_context(|| format!("signing {}", spec.name))?;

    let cert_path = dir.join(format!("{}.pem", spec.name));
    let key_path = dir.join(format!("{}.key.pem", spec.name));
    write(&cert_path, &cert.pem())?;
    write(&key_path, &key.serialize_pem())?;

    let spiffe_ids: Vec<&String> = spec.uris.iter().filter(|u| u.starts_with("spiffe://")).collect();
    let spiffe_id = match spiffe_ids.as_slice() {
        [one] if spec.uris.len() == 1 => Some((*one).clone()),
        _ => None,
    };
    Ok(Workload {
        name: spec.name.to_string(),
        spiffe_id,
        uri_sans: spec.uris.clone(),
        dns_sans: spec.dns.iter().map(|d| d.to_string()).collect(),
        cert: cert_path,
        key: key_path,
        issuer_ca: issuer_ca.to_path_buf(),
    })
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_the_standard_set() -> Result<()> {
        let dir = crate::scratch_dir("pki-unit")?;
        let pki = Pki::mint(&dir, "cluster.local")?;
        for name in [
            "server",
            "web",
            "batch",
            "admin",
            "foreign",
            "no-uri-san",
            "two-uri-sans",
            "not-spiffe",
            "bad-spiffe",
            "untrusted",
            "payments",
            "impostor",
        ] {
            let w = pki.workload(name)?;
            assert!(w.cert.is_file() && w.key.is_file(), "{name}");
            let pem = fs::read_to_string(&w.cert)?;
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        }
        assert_eq!(pki.workload("web")?.spiffe_id.as_deref(), Some("spiffe://cluster.local/ns/web/sa/web"));
        assert_eq!(pki.workload("foreign")?.spiffe_id.as_deref(), Some("spiffe://other.example/ns/web/sa/web"));
        assert_eq!(pki.workload("no-uri-san")?.spiffe_id, None);
        assert_eq!(pki.workload("two-uri-sans")?.spiffe_id, None);
        assert_eq!(pki.workload("not-spiffe")?.spiffe_id, None);
        assert_eq!(pki.workload("untrusted")?.issuer_ca, pki.untrusted_ca_cert);
        assert_eq!(pki.workload("payments")?.spiffe_id.as_deref(), Some("spiffe://cluster.local/ns/prod/sa/payments"));
        assert_eq!(
            pki.workload("impostor")?.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/attacker/sa/impostor")
        );
        assert_ne!(fs::read(&pki.ca_cert)?, fs::read(&pki.untrusted_ca_cert)?);
        let other = Pki::mint(&dir.join("td"), "example.org")?;
        assert_eq!(other.workload("admin")?.spiffe_id.as_deref(), Some("spiffe://example.org/ns/ops/sa/admin"));
        assert_eq!(other.workload("foreign")?.spiffe_id.as_deref(), Some("spiffe://other.example/ns/web/sa/web"));
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
