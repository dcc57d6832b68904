//! Peer identity, end to end through a real Envoy 1.40 configured as an Istio sidecar's
//! inbound side (PERMISSIVE: an mTLS chain and a plaintext chain, meshguard on both,
//! delivered by ECDS), with SVIDs minted for this run.
//!
//! Every test asserts what an operator would see: the status the client got, what the echo
//! upstream (the application) actually received, the decision-log line in Envoy's log, and
//! the counters in Envoy's `/stats/prometheus`.

use harness::client::{self, Request, TlsIdentity};
use harness::mesh::{ensure_wasm, Mesh, MeshOptions, PolicyUpdate};
use harness::Result;
use meshguard_e2e::{decision_for, finding_counter, no_decision_for, prom_counter, wait_prom_counter};
use serde_json::{json, Value};

const WEB: &str = "spiffe://cluster.local/ns/web/sa/web";
const ADMIN: &str = "spiffe://cluster.local/ns/ops/sa/admin";
const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/batch";

fn rules_policy(mode: &str) -> Value {
    json!({
        "version": 1,
        "mode": mode,
        "identity": {
            "requirePeerIdentity": true,
            "trustDomains": ["cluster.local"],
            "defaultAction": "allow",
            "rules": [
                {"id": "batch-never-admin", "action": "deny", "match": {"paths": [{"prefix": "/admin"}]},
                 "principals": ["spiffe://cluster.local/ns/batch/sa/*"]},
                {"id": "ops-admin", "action": "allow", "match": {"paths": [{"prefix": "/admin"}]},
                 "principals": ["spiffe://cluster.local/ns/ops/sa/*"]},
                {"id": "web-reads-api", "action": "allow", "match": {"paths": [{"prefix": "/api"}], "methods": ["GET", "HEAD"]},
                 "principals": [WEB]},
                {"id": "ops-writes-api", "action": "allow", "match": {"paths": [{"prefix": "/api"}], "methods": ["POST"]},
                 "principals": ["spiffe://cluster.local/ns/ops/sa/*"]}
            ]
        }
    })
}

fn start(policy: &Value) -> Result<Mesh> {
    Mesh::start(MeshOptions { wasm: Some(ensure_wasm()?), ..MeshOptions::with_policy(policy.to_string()) })
}

fn tls(mesh: &Mesh, caller: &str) -> Result<Option<TlsIdentity>> {
    Ok(match caller {
        "plaintext" => None,
        name => Some(mesh.tls(name)?),
    })
}

/// One request of the shared scenario and what the enforcing policy must answer.
struct Case {
    id: &'static str,
    caller: &'static str,
    method: &'static str,
    path: &'static str,
    /// None: allowed. Some((code, rule)): denied by that finding.
    denied: Option<(&'static str, &'static str)>,
    /// The principal the decision names (None where no identity was established).
    principal: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { id: "ok-web", caller: "web", method: "GET", path: "/api/items?page=2", denied: None, principal: Some(WEB) },
    Case { id: "ok-admin", caller: "admin", method: "GET", path: "/admin/users", denied: None, principal: Some(ADMIN) },
    Case { id: "ok-batch", caller: "batch", method: "GET", path: "/healthz", denied: None, principal: Some(BATCH) },
    Case {
        id: "plaintext",
        caller: "plaintext",
        method: "GET",
        path: "/api/items",
        denied: Some(("peer_identity_missing", "identity.requirePeerIdentity")),
        principal: None,
    },
    Case {
        id: "no-uri-san",
        caller: "no-uri-san",
        method: "GET",
        path: "/api/items",
        denied: Some(("peer_identity_no_uri_san", "identity.requirePeerIdentity")),
        principal: None,
    },
    Case {
        id: "two-uri-sans",
        caller: "two-uri-sans",
        method: "GET",
        path: "/api/items",
        denied: Some(("peer_identity_multiple_uri_sans", "identity.requirePeerIdentity")),
        principal: None,
    },
    Case {
        id: "foreign",
        caller: "foreign",
        method: "GET",
        path: "/api/items",
        denied: Some(("peer_identity_trust_domain_not_allowed", "identity.trustDomains")),
        principal: None,
    },
    Case {
        id: "not-spiffe",
        caller: "not-spiffe",
        method: "GET",
        path: "/api/items",
        denied: Some(("peer_identity_invalid_spiffe_id", "identity.requirePeerIdentity")),
        principal: None,
    },
    Case {
        id: "bad-spiffe",
        caller: "bad-spiffe",
        method: "GET",
        path: "/api/items",
        denied: Some(("peer_identity_invalid_spiffe_id", "identity.requirePeerIdentity")),
        principal: None,
    },
    Case {
        id: "web-writes",
        caller: "web",
        method: "POST",
        path: "/api/items",
        denied: Some(("peer_identity_principal_not_allowed", "ops-writes-api")),
        principal: Some(WEB),
    },
    Case {
        id: "batch-admin",
        caller: "batch",
        method: "GET",
        path: "/admin/users",
        denied: Some(("peer_identity_principal_denied", "batch-never-admin")),
        principal: Some(BATCH),
    },
    Case {
        id: "batch-admin-respelled",
        caller: "batch",
        method: "GET",
        path: "/%61dmin//users",
        denied: Some(("peer_identity_principal_denied", "batch-never-admin")),
        principal: Some(BATCH),
    },
    Case {
        id: "batch-admin-dotdot",
        caller: "batch",
        method: "GET",
        path: "/public/../admin/users",
        denied: Some(("peer_identity_principal_denied", "batch-never-admin")),
        principal: Some(BATCH),
    },
];

fn send_case(mesh: &Mesh, case: &Case) -> Result<client::Response> {
    let request = Request::new(case.method, case.path)
        .with_header("x-request-id", case.id)
        .with_header("authorization", "Bearer s3cr3t-token-value")
        .with_header("cookie", "session=s3cr3t-cookie");
    client::send(mesh.listener_addr(), tls(mesh, case.caller)?.as_ref(), &request)
}

fn assert_no_secrets(line: &Value) {
    let text = line.to_string();
    for secret in ["s3cr3t", "page=2"] {
        assert!(!text.contains(secret), "the decision log leaks {secret:?}: {text}");
    }
}

#[test]
fn enforce_allows_the_right_workloads_and_denies_every_bad_identity_with_its_code() -> Result<()> {
    let mesh = start(&rules_policy("enforce"))?;
    let revision = harness::policy_file::parse_value(&rules_policy("enforce").to_string())
        .map(policy::Policy::from_value)?
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .revision()
        .to_string();

    for case in CASES {
        let resp = send_case(&mesh, case)?;
        match case.denied {
            None => {
                assert_eq!(resp.status, 200, "{}: {resp:?}\n{}", case.id, mesh.envoy().log_tail(10));
                let echo = resp.json()?;
                assert_eq!(echo["path"], Value::from(case.path), "{}", case.id);
                no_decision_for(&mesh, case.id)?;
            }
            Some((code, rule)) => {
                assert_eq!(resp.status, 403, "{}: {resp:?}", case.id);
                assert_eq!(resp.header("content-type"), Some("application/json"), "{}", case.id);
                let body = resp.json()?;
                assert_eq!(body["code"], code, "{}: {body}", case.id);
                assert_eq!(body["requestId"], case.id, "{}: {body}", case.id);
                // The reason code and request id, nothing from the policy or about the peer.
                let mut keys: Vec<&String> = body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                keys.sort();
                assert_eq!(keys, ["code", "error", "requestId"], "{}: {body}", case.id);
                assert!(!body.to_string().contains(rule) && !body.to_string().contains("spiffe://"), "{body}");

                let line = decision_for(&mesh, case.id)?;
                assert_eq!(line["outcome"], "deny", "{line}");
                assert_eq!(line["enforced"], true, "{line}");
                assert_eq!(line["check"], "peer_identity", "{line}");
                assert_eq!(line["code"], code, "{line}");
                assert_eq!(line["rule"], rule, "{line}");
                assert_eq!(line["principal"], json!(case.principal), "{line}");
                assert_eq!(line["policyRevision"], Value::from(revision.as_str()), "{line}");
                assert_eq!(line["request"]["method"], case.method, "{line}");
                assert_no_secrets(&line);
            }
        }
    }

    // The application saw exactly the allowed requests, with Envoy's XFCC element naming
    // the verified caller.
    let received = mesh.echo().received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/api/items?page=2", "/admin/users", "/healthz"]);
    assert!(received[0].header("x-forwarded-client-cert").unwrap_or_default().ends_with(&format!("URI={WEB}")));

    // The counters say the same.
    let denied = CASES.iter().filter(|c| c.denied.is_some()).count() as u64;
    // The totals of allowed requests reach Envoy on meshguard's 1 s tick: wait for them.
    assert_eq!(wait_prom_counter(&mesh, "meshguard_requests_total", CASES.len() as u64)?, CASES.len() as u64);
    assert_eq!(prom_counter(&mesh, "meshguard_denied_total")?, denied);
    assert_eq!(
        wait_prom_counter(&mesh, "meshguard_allowed_total", CASES.len() as u64 - denied)?,
        CASES.len() as u64 - denied
    );
    assert_eq!(prom_counter(&mesh, "meshguard_would_deny_total")?, 0);
    assert_eq!(prom_counter(&mesh, "meshguard_errors_total")?, 0);
    for code in [
        "peer_identity_missing",
        "peer_identity_no_uri_san",
        "peer_identity_multiple_uri_sans",
        "peer_identity_trust_domain_not_allowed",
        "peer_identity_principal_not_allowed",
    ] {
        assert_eq!(finding_counter(&mesh, "peer_identity", code, "enforced")?, 1, "{code}");
    }
    assert_eq!(finding_counter(&mesh, "peer_identity", "peer_identity_invalid_spiffe_id", "enforced")?, 2);
    assert_eq!(finding_counter(&mesh, "peer_identity", "peer_identity_principal_denied", "enforced")?, 3);
    Ok(())
}

#[test]
fn dry_run_lets_everything_through_and_logs_would_deny() -> Result<()> {
    let mesh = start(&rules_policy("dry-run"))?;
    for case in CASES {
        let resp = send_case(&mesh, case)?;
        assert_eq!(resp.status, 200, "{}: dry-run never blocks: {resp:?}", case.id);
        if let Some((code, rule)) = case.denied {
            let line = decision_for(&mesh, case.id)?;
            assert_eq!(line["outcome"], "would_deny", "{line}");
            assert_eq!(line["enforced"], false, "{line}");
            assert_eq!((line["code"].as_str(), line["rule"].as_str()), (Some(code), Some(rule)), "{line}");
            assert_no_secrets(&line);
        }
    }
    assert_eq!(mesh.echo().request_count(), CASES.len(), "every request reached the app");
    let would = CASES.iter().filter(|c| c.denied.is_some()).count() as u64;
    assert_eq!(prom_counter(&mesh, "meshguard_would_deny_total")?, would);
    assert_eq!(prom_counter(&mesh, "meshguard_denied_total")?, 0);
    assert_eq!(finding_counter(&mesh, "peer_identity", "peer_identity_missing", "dry_run")?, 1);
    assert_eq!(finding_counter(&mesh, "peer_identity", "peer_identity_missing", "enforced")?, 0);
    Ok(())
}

/// Rolling out one new rule in dry-run while the rest of the policy enforces.
#[test]
fn a_rule_in_dry_run_only_logs_while_the_rest_enforces() -> Result<()> {
    let policy = json!({"version": 1, "identity": {"trustDomains": ["cluster.local"], "rules": [
        {"id": "lockdown-api", "action": "deny", "mode": "dry-run", "match": {"paths": [{"prefix": "/api"}]},
         "principals": ["spiffe://cluster.local/ns/web/sa/*"]}
    ]}});
    let mesh = start(&policy)?;
    let web = mesh.tls("web")?;

    let resp =
        client::send(mesh.listener_addr(), Some(&web), &Request::get("/api/x").with_header("x-request-id", "r1"))?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let line = decision_for(&mesh, "r1")?;
    assert_eq!(
        (&line["outcome"], &line["code"], &line["rule"], &line["enforced"]),
        (&json!("would_deny"), &json!("peer_identity_principal_denied"), &json!("lockdown-api"), &json!(false)),
        "{line}"
    );

    // The enforcing part of the same policy still denies.
    let resp = client::send(mesh.listener_addr(), None, &Request::get("/api/x").with_header("x-request-id", "r2"))?;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(decision_for(&mesh, "r2")?["outcome"], "deny");
    assert_eq!(mesh.echo().request_count(), 1);
    assert_eq!(finding_counter(&mesh, "peer_identity", "peer_identity_principal_denied", "dry_run")?, 1);
    Ok(())
}

#[test]
fn an_invalid_policy_is_refused_at_startup_naming_the_field() -> Result<()> {
    let policy = json!({"version": 1, "identity": {"rules": [
        {"id": "ok", "action": "allow", "principals": ["spiffe://cluster.local/ns/web/sa/*"]},
        {"id": "bad", "action": "allow", "principals": ["spiffe://Cluster.Local/ns/web"]}
    ]}});
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        allow_rejected_policy: true,
        ..MeshOptions::with_policy(policy.to_string())
    })?;
    let log = mesh.envoy().wait_for_log("meshguard: policy rejected:", std::time::Duration::from_secs(5))?;
    assert!(
        log.contains("meshguard: policy rejected: identity.rules[1].principals[0]:"),
        "Envoy's log must name the field:\n{log}"
    );
    assert_eq!(mesh.ecds_stat("update_success")?.unwrap_or(0), 0);

    // Nothing gets through a filter without a policy: Envoy answers 500 itself.
    let resp = client::get(mesh.listener_addr(), Some(&mesh.tls("web")?), "/api/x")?;
    assert_eq!(resp.status, 500, "{resp:?}");
    assert_eq!(mesh.echo().request_count(), 0);
    // The access log is flushed every 100 ms: under load, the line can come after the reply.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !mesh.access_log().contains("NFCF") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(mesh.access_log().contains("NFCF"), "{}", mesh.access_log());
    Ok(())
}

#[test]
fn an_invalid_live_update_leaves_the_previous_policy_enforcing() -> Result<()> {
    let mesh = start(&json!({"version": 1, "identity": {"requirePeerIdentity": true}}))?;
    let plaintext =
        |id: &str| client::send(mesh.listener_addr(), None, &Request::get("/x").with_header("x-request-id", id));
    assert_eq!(plaintext("before")?.status, 403);

    // A typo'd field and a bad status: refused, every error named by its path.
    let bad = json!({"version": 1, "denyResponse": {"status": 200}, "identity": {"requirePeerIdentity": false, "trustDomain": ["x"]}});
    let update = mesh.update_policy(&bad.to_string())?;
    let PolicyUpdate::Rejected { log } = update else { panic!("the invalid policy was applied: {update:?}") };
    assert!(log.contains("meshguard: policy rejected: identity.trustDomain: unknown field `trustDomain`"), "{log}");

    let resp = plaintext("after-rejected")?;
    assert_eq!(resp.status, 403, "the previous policy must still enforce: {resp:?}");
    assert_eq!(decision_for(&mesh, "after-rejected")?["code"], "peer_identity_missing");

    // A valid update is applied.
    let good = json!({"version": 1, "identity": {"requirePeerIdentity": false}});
    assert_eq!(mesh.update_policy(&good.to_string())?, PolicyUpdate::Applied);
    assert_eq!(plaintext("after-good")?.status, 200);
    assert!(prom_counter(&mesh, "meshguard_config_rejected_total")? >= 1);
    Ok(())
}

/// A forged `x-forwarded-client-cert` never lends a client an identity.
#[test]
fn forged_xfcc_is_ignored_by_default_and_only_envoys_element_counts_when_trusted() -> Result<()> {
    let forged = format!("By=spiffe://cluster.local/ns/default/sa/api;URI={ADMIN}");
    let write = |id: &str| {
        Request::new("POST", "/api/items")
            .with_header("x-request-id", id)
            .with_header("x-forwarded-client-cert", &forged)
    };

    // Default: the identity is the certificate on this connection.
    let mesh = start(&rules_policy("enforce"))?;
    let resp = client::send(mesh.listener_addr(), Some(&mesh.tls("web")?), &write("default-web"))?;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(decision_for(&mesh, "default-web")?["principal"], WEB);
    let resp = client::send(mesh.listener_addr(), None, &write("default-plain"))?;
    assert_eq!(decision_for(&mesh, "default-plain")?["code"], "peer_identity_missing", "{resp:?}");
    drop(mesh);

    // source: xfcc: only the element the local Envoy appended (the last, on an mTLS
    // connection) is believed; the client's own element before it is not.
    let mut policy = rules_policy("enforce");
    policy["identity"]["source"] = json!("xfcc");
    let mesh = start(&policy)?;
    let resp = client::send(mesh.listener_addr(), Some(&mesh.tls("web")?), &write("xfcc-web"))?;
    assert_eq!(resp.status, 403, "{resp:?}");
    let line = decision_for(&mesh, "xfcc-web")?;
    assert_eq!((&line["principal"], &line["code"]), (&json!(WEB), &json!("peer_identity_principal_not_allowed")));
    let resp = client::send(mesh.listener_addr(), None, &write("xfcc-plain"))?;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(decision_for(&mesh, "xfcc-plain")?["code"], "peer_identity_missing");

    let resp = client::send(mesh.listener_addr(), Some(&mesh.tls("admin")?), &write("xfcc-admin"))?;
    assert_eq!(resp.status, 200, "{resp:?}");
    // What the app got: the client's element first, Envoy's own appended last.
    let received = mesh.echo().received();
    let xfcc = received.last().and_then(|r| r.header("x-forwarded-client-cert")).unwrap_or_default();
    assert!(xfcc.starts_with(&forged) && xfcc.ends_with(&format!("URI={ADMIN}")) && xfcc.contains(','), "{xfcc}");
    Ok(())
}

/// Header bytes no UTF-8 string can hold, control bytes next to NUL, and oversized values
/// must neither trap the VM nor stop the requests after them from being served.
#[test]
fn hostile_header_bytes_neither_crash_the_vm_nor_stop_later_requests() -> Result<()> {
    let mesh = start(&rules_policy("enforce"))?;
    let addr = mesh.listener_addr();
    let hostile: Vec<Vec<u8>> = vec![
        b"GET /api/x HTTP/1.1\r\nhost: a\r\nx-request-id: h1\r\nx-bin: \xff\xfe\x80\xc3(\r\n\r\n".to_vec(),
        b"GET /api/x HTTP/1.1\r\nhost: a\r\nx-request-id: h2\r\nx-ctl: a\x01\x02\x7fb\r\n\r\n".to_vec(),
        b"GET /api/x HTTP/1.1\r\nhost: a\r\nx-request-id: h3\r\nx-nul: a\x00b\r\n\r\n".to_vec(),
        b"GET /api/x HTTP/1.1\r\nhost: \xff\xfe\r\nx-request-id: h4\r\n\r\n".to_vec(),
        b"GET /%00/%ff/\xff HTTP/1.1\r\nhost: a\r\nx-request-id: h5\r\n\r\n".to_vec(),
        b"GET /api/x HTTP/1.1\r\nhost: a\r\nx-request-id: \xff\x00\r\n\r\n".to_vec(),
        b"GET /api/x HTTP/1.1\r\nhost: a\r\nx-request-id: h7\r\nx-forwarded-client-cert: \xff\"\\;,=\r\n\r\n".to_vec(),
        [
            b"GET /api/x HTTP/1.1\r\nhost: a\r\nx-request-id: h8\r\nx-long: ".to_vec(),
            vec![0xe9; 32 * 1024],
            b"\r\n\r\n".to_vec(),
        ]
        .concat(),
    ];
    let web = mesh.tls("web")?;
    for (i, raw) in hostile.iter().enumerate() {
        for tls in [None, Some(&web)] {
            // Envoy's codec may refuse some of these itself (400) or close the connection;
            // what reaches meshguard is denied (plaintext) or decided (mTLS). Never a 5xx.
            if let Ok(resp) = client::send_raw(addr, tls, raw) {
                assert!(matches!(resp.status, 200 | 400 | 403 | 431), "hostile request {i}: {resp:?}");
            }
            let after = client::send(addr, Some(&web), &Request::get("/api/after").with_header("x-request-id", "ok"))?;
            assert_eq!(after.status, 200, "request after hostile request {i}: {after:?}\n{}", mesh.access_log());
        }
    }
    // The first one reached meshguard and was denied; its log line holds the bytes lossily.
    let line = decision_for(&mesh, "h1")?;
    assert_eq!(line["code"], "peer_identity_missing");
    assert_eq!(prom_counter(&mesh, "meshguard_errors_total")?, 0);
    assert!(!mesh.access_log().contains("wasm_fail_stream"), "the VM trapped:\n{}", mesh.access_log());
    assert!(!mesh.envoy().log_contents().contains("panicked"), "{}", mesh.envoy().log_tail(20));
    Ok(())
}
