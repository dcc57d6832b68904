//! Istio cluster names: where Envoy's route really sends a request. A tampered control plane or
//! a wrong ServiceEntry shows here as a cluster that does not agree with the authority, or as
//! `PassthroughCluster` (wherever the application connected).

use crate::parse::host::{parse_host, Host};

/// Where Envoy's route sent the request, read from `xds.cluster_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// Istio's `PassthroughCluster` / `InboundPassthroughCluster*`: wherever the app connected.
    Passthrough,
    /// Istio's `BlackHoleCluster`.
    Blackhole,
    /// `outbound|<port>|<subset>|<host>` (or the `outbound_.<port>_.<subset>_.<host>` form).
    Istio { port: u16, host: ClusterHost },
    /// Any other name: nothing to check the authority against.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterHost {
    Exact(Host),
    /// `*.example.com` as `example.com`.
    Wildcard(String),
}

pub fn parse_cluster(name: &[u8]) -> Cluster {
    match name {
        b"PassthroughCluster" => return Cluster::Passthrough,
        b"BlackHoleCluster" => return Cluster::Blackhole,
        n if n.starts_with(b"InboundPassthroughCluster") => return Cluster::Passthrough,
        _ => {}
    }
    let parts: Option<(&[u8], &[u8])> = if let Some(rest) = name.strip_prefix(b"outbound|") {
        let mut it = rest.splitn(3, |&b| b == b'|');
        match (it.next(), it.next(), it.next()) {
            (Some(port), Some(_subset), Some(host)) => Some((port, host)),
            _ => None,
        }
    } else if let Some(rest) = name.strip_prefix(b"outbound_.") {
        // outbound_.443_._.api.example.com (Istio's SNI-DNAT form; the subset may be empty).
        let port_end = rest.iter().position(|&b| b == b'_');
        port_end.and_then(|end| {
            let port = rest.get(..end)?;
            let after = rest.get(end..)?.strip_prefix(b"_.")?;
            let sub_end = after.iter().position(|&b| b == b'_')?;
            let host = after.get(sub_end..)?.strip_prefix(b"_.")?;
            Some((port, host))
        })
    } else {
        None
    };
    let Some((port, host)) = parts else { return Cluster::Other };
    let Some(port) = std::str::from_utf8(port).ok().and_then(|p| p.parse::<u16>().ok()) else {
        return Cluster::Other;
    };
    let host = if let Some(suffix) = host.strip_prefix(b"*.") {
        match parse_host(suffix) {
            Ok(Host::Name(name)) => ClusterHost::Wildcard(name),
            _ => return Cluster::Other,
        }
    } else {
        match parse_host(host) {
            Ok(h) => ClusterHost::Exact(h),
            Err(_) => return Cluster::Other,
        }
    };
    Cluster::Istio { port, host }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters() {
        let istio = |port, host: &str| Cluster::Istio { port, host: ClusterHost::Exact(Host::Name(host.into())) };
        assert_eq!(parse_cluster(b"PassthroughCluster"), Cluster::Passthrough);
        assert_eq!(parse_cluster(b"InboundPassthroughClusterIpv4"), Cluster::Passthrough);
        assert_eq!(parse_cluster(b"BlackHoleCluster"), Cluster::Blackhole);
        assert_eq!(parse_cluster(b"outbound|443||api.example.com"), istio(443, "api.example.com"));
        assert_eq!(
            parse_cluster(b"outbound|80|v1|reviews.default.svc.cluster.local"),
            istio(80, "reviews.default.svc.cluster.local")
        );
        assert_eq!(parse_cluster(b"outbound_.443_._.api.example.com"), istio(443, "api.example.com"));
        assert_eq!(parse_cluster(b"outbound_.443_.v1_.api.example.com"), istio(443, "api.example.com"));
        assert_eq!(
            parse_cluster(b"outbound|443||*.example.com"),
            Cluster::Istio { port: 443, host: ClusterHost::Wildcard("example.com".into()) }
        );
        for other in
            [&b"inbound|8080||"[..], b"outbound|x||a.com", b"outbound|443|", b"echo", b"outbound|443||bad host"]
        {
            assert_eq!(parse_cluster(other), Cluster::Other, "{}", String::from_utf8_lossy(other));
        }
    }
}
