//! The compiled policy: built once per configuration, then only read per request.

use std::collections::HashSet;

use crate::checks::egress::doc::AppliesTo;
use crate::checks::identity::doc::IdentityAppliesTo;
use crate::checks::Compiled;
use crate::decision::Decision;
use crate::document::{Mode, PolicyDocument, VERSION};
use crate::error::ConfigErrors;
use crate::reason::ReasonCode;
use crate::view::{ConnectionView, Needs, RequestView, UpstreamView};

/// What a deny looks like to the client. The body names the reason code (unless the policy
/// says not to) and the request id, never the rule or anything else from the policy.
#[derive(Debug, Clone)]
pub struct DenyResponse {
    pub status: u16,
    message: String,
    include_reason_code: bool,
}

impl DenyResponse {
    /// The JSON body of a deny reply.
    pub fn body(&self, code: Option<ReasonCode>, request_id: Option<&[u8]>) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.message.clone().into());
        if self.include_reason_code {
            if let Some(code) = code {
                body.insert("code".into(), code.as_str().into());
            }
        }
        if let Some(id) = request_id.and_then(crate::log::printable_id) {
            body.insert("requestId".into(), id.into());
        }
        let mut out = serde_json::Value::Object(body).to_string().into_bytes();
        out.push(b'\n');
        out
    }
}

/// How decisions are logged.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Allowed requests logged, per million (from `decisionLog.allowSampleRate`).
    pub(crate) allow_per_million: u32,
    pub(crate) include_headers: bool,
    /// Lowercase header names whose values never reach a log.
    pub(crate) redact: HashSet<String>,
}

/// A validated, compiled policy.
pub struct Policy {
    revision: String,
    mode: Mode,
    deny: DenyResponse,
    log: LogSettings,
    /// The compiled checks, in evaluation order (see [`crate::checks::compile_all`]).
    checks: Vec<Box<dyn Compiled>>,
    /// Folded over the checks once, here.
    needs: Needs,
    /// Checks whose denies have their own status (JWT: 401), see [`Policy::deny_status`].
    deny_statuses: Vec<(crate::reason::Check, u16)>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("revision", &self.revision)
            .field("mode", &self.mode)
            .field("deny", &self.deny)
            .field("log", &self.log)
            .field("checks", &self.checks.len())
            .field("needs", &self.needs)
            .field("deny_statuses", &self.deny_statuses)
            .finish()
    }
}

impl Policy {
    /// Parse, validate and compile a policy document from JSON bytes (the plugin
    /// configuration). Every error names the JSON path of the field at fault.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigErrors> {
        crate::strict_json::check_json(bytes)?; // duplicate keys, a top level that is not an object
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push("", format!("not valid JSON: {e}"));
            errs
        })?;
        Self::from_value(value)
    }

    /// Validate and compile a document already parsed into a JSON value (the command line
    /// reads YAML into one).
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigErrors> {
        let revision = revision_of(&value);
        let doc: PolicyDocument = crate::document::parse(value)?;
        let mut errs = ConfigErrors::default();
        // Over budget: refused before anything is compiled (see crate::budget).
        crate::budget::check(&doc, &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
        if doc.version != VERSION {
            errs.push(
                "version",
                format!("unsupported policy version {} (this build understands {VERSION})", doc.version),
            );
        }
        let deny = compile_deny(&doc, &mut errs);
        let mut log = compile_log(&doc, &mut errs);
        let checks = crate::checks::compile_all(&doc, &mut errs);
        // Headers a check reads secrets from (JWT token sources) never reach a log either.
        log.redact.extend(checks.iter().flat_map(|c| c.redacted_headers()));
        if let (Some(id), Some(eg)) = (&doc.identity, &doc.egress) {
            // On a sidecar's outbound listener the downstream is the local app, in plaintext:
            // an identity check there denies every outbound request.
            if id.applies_to == IdentityAppliesTo::All && eg.applies_to == AppliesTo::Outbound {
                errs.push(
                    "identity.appliesTo",
                    "must be inbound when the policy also has an egress check for outbound listeners \
                     (egress.appliesTo: outbound): on those the downstream is the local application, \
                     which has no peer identity",
                );
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let needs = checks.iter().fold(Needs::default(), |n, c| n | c.needs());
        let deny_statuses = checks.iter().filter_map(|c| c.deny_status()).collect();
        Ok(Self { revision, mode: doc.mode, deny, log, checks, needs, deny_statuses })
    }

    /// The providers whose JWKS the filter fetches (`jwt.providers[].jwks.remote`).
    pub fn remote_jwks(&self) -> Vec<crate::RemoteJwks> {
        self.checks.iter().flat_map(|c| c.remote_jwks()).collect()
    }

    /// Hand a fetched JWKS to the remote provider `provider`: parsed with the inline keys'
    /// reader; an invalid key set is an error and the last good one stays. A changed key set
    /// drops the provider's cached tokens. Through `&self`: the HTTP contexts of this VM share
    /// this policy and see the new keys on their next request.
    pub fn set_jwks(&self, provider: &str, body: &[u8]) -> Result<crate::JwksUpdate, String> {
        self.checks
            .iter()
            .find_map(|c| c.set_jwks(provider, body))
            .unwrap_or_else(|| Err(format!("no provider '{provider}' with jwks.remote")))
    }

    /// Whether the remote provider `provider` has a key set (a first good fetch happened).
    pub fn has_jwks(&self, provider: &str) -> bool {
        self.checks.iter().any(|c| c.jwks_body(provider).is_some())
    }

    /// Give this (new) policy the key sets `previous` fetched, for each remote provider with the
    /// same id, cluster and path: a new configuration then does not deny with
    /// `jwt_keys_unavailable` until its own first fetch. Returns the providers carried over.
    pub fn carry_jwks_from(&self, previous: &Policy) -> Vec<String> {
        let mut carried = Vec::new();
        for r in self.remote_jwks() {
            let old = previous.checks.iter().find_map(|c| c.jwks_body(&r.provider));
            if let Some((cluster, path, body)) = old {
                if cluster == r.cluster && path == r.path && self.set_jwks(&r.provider, &body).is_ok() {
                    carried.push(r.provider);
                }
            }
        }
        carried
    }

    /// A short, stable hash of the policy's content (key order and formatting do not matter).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The whole-policy mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The connection properties the checks read (worked out once, when compiled).
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// Whether the policy has an egress section (the only check a network filter runs).
    pub fn has_egress(&self) -> bool {
        self.checks.iter().any(|c| c.decides_connections())
    }

    pub fn deny_response(&self) -> &DenyResponse {
        &self.deny
    }

    /// The status of the reply to a denied request: that of the check whose finding decided
    /// when it has its own (`jwt.denyStatus`, 401 by default), else `denyResponse.status`.
    pub fn deny_status(&self, decision: &Decision) -> u16 {
        let check = decision.primary().map(|f| f.check);
        self.deny_statuses.iter().find(|(c, _)| Some(*c) == check).map_or(self.deny.status, |(_, status)| *status)
    }

    /// Run every check, in order, against one request. The first enforced rejection ends the
    /// evaluation.
    pub fn evaluate(&self, req: &RequestView<'_>) -> Decision {
        let mut decision = Decision::default();
        for check in &self.checks {
            check.evaluate(req, &mut decision);
            if decision.enforced() {
                break;
            }
        }
        decision
    }

    /// Decide one TLS/TCP connection as it opens (the network filter): the checks that decide
    /// connections (egress, on the SNI). Every other check is about HTTP and does not run here.
    pub fn evaluate_connection(&self, conn: &ConnectionView<'_>) -> Decision {
        let mut decision = Decision::default();
        for check in self.checks.iter().filter(|c| c.decides_connections()) {
            check.evaluate_connection(conn, &mut decision);
            if decision.enforced() {
                break;
            }
        }
        decision
    }

    /// Whether a check decides the upstream connection (the filter's response phase).
    pub fn has_upstream(&self) -> bool {
        self.needs.upstream
    }

    /// Decide one request's upstream connection, in the response phase (the checks that
    /// decide upstreams: identity pinning). A decision of its own: the request phase's was
    /// made, logged and counted before the connection existed.
    pub fn evaluate_upstream(&self, up: &UpstreamView<'_>) -> Decision {
        let mut decision = Decision::default();
        for check in self.checks.iter().filter(|c| c.decides_upstream()) {
            check.evaluate_upstream(up, &mut decision);
            if decision.enforced() {
                break;
            }
        }
        decision
    }

    /// Whether a check pins this destination: `up` with the cluster and authority the request
    /// phase knows (the connection facts are not read yet). False: the response phase has
    /// nothing to decide for this request, and the filter reads nothing then.
    pub fn pins_upstream(&self, up: &UpstreamView<'_>) -> bool {
        self.checks.iter().any(|c| c.pins_upstream(up))
    }

    /// Whether a response-phase decision gets a line of its own: only with a finding (a deny
    /// or would-deny). An allowed upstream adds nothing to the request phase's line.
    pub fn should_log_upstream(&self, decision: &Decision) -> bool {
        !decision.findings.is_empty()
    }

    /// The response-phase decision line: like [`Policy::decision_log_line`], with
    /// `"phase": "response"` and an `upstream` object (the observed identity and address)
    /// instead of `request`.
    pub fn upstream_log_line(
        &self,
        decision: &Decision,
        up: &UpstreamView<'_>,
        request_id: Option<&[u8]>,
        unix_millis: u64,
    ) -> String {
        crate::log::record_upstream(self, decision, up, request_id, unix_millis)
    }

    /// [`Policy::should_log`] for a connection; allows are sampled by a hash of the SNI.
    pub fn should_log_connection(&self, decision: &Decision, conn: &ConnectionView<'_>) -> bool {
        self.log_due(decision, conn.sni.unwrap_or_default())
    }

    /// The decision-log line for a connection: like [`Policy::decision_log_line`], with a
    /// `connection` object instead of `request`.
    pub fn connection_log_line(&self, decision: &Decision, conn: &ConnectionView<'_>, unix_millis: u64) -> String {
        crate::log::record_connection(self, decision, conn, unix_millis)
    }

    /// Whether this decision gets a decision-log line: every deny and would-deny, and the
    /// sampled share of allows.
    pub fn should_log(&self, decision: &Decision, req: &RequestView<'_>) -> bool {
        self.log_due(decision, req.request_id().unwrap_or_default())
    }

    /// Every decision with a finding; of the others, the share `allowSampleRate` picks by a
    /// hash of `sample_key`.
    fn log_due(&self, decision: &Decision, sample_key: &[u8]) -> bool {
        if !decision.findings.is_empty() {
            return true;
        }
        match self.log.allow_per_million {
            0 => false,
            1_000_000.. => true,
            n => crate::log::sample_bucket(sample_key) < n,
        }
    }

    /// The decision-log line (one JSON object) for a decision; `unix_millis` is the time the
    /// request was seen, handed in by the caller.
    pub fn decision_log_line(&self, decision: &Decision, req: &RequestView<'_>, unix_millis: u64) -> String {
        crate::log::record(self, &self.log, decision, req, unix_millis)
    }
}

fn compile_deny(doc: &PolicyDocument, errs: &mut ConfigErrors) -> DenyResponse {
    let d = &doc.deny_response;
    if !(400..=599).contains(&d.status) {
        errs.push("denyResponse.status", format!("must be an HTTP error status from 400 to 599, not {}", d.status));
    }
    if d.message.is_empty() || d.message.len() > 200 || !d.message.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        errs.push("denyResponse.message", "must be 1 to 200 printable ASCII characters");
    }
    DenyResponse { status: d.status, message: d.message.clone(), include_reason_code: d.include_reason_code }
}

fn compile_log(doc: &PolicyDocument, errs: &mut ConfigErrors) -> LogSettings {
    let l = &doc.decision_log;
    if !(0.0..=1.0).contains(&l.allow_sample_rate) {
        errs.push("decisionLog.allowSampleRate", "must be a number from 0 to 1");
    }
    let mut redact: HashSet<String> = crate::log::ALWAYS_REDACTED.iter().map(|s| s.to_string()).collect();
    for (i, name) in l.redact_headers.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(crate::parse::token::is_tchar) {
            errs.push(format!("decisionLog.redactHeaders[{i}]"), "must be a header name (an RFC 9110 token)");
        }
        redact.insert(name.to_ascii_lowercase());
    }
    // What egress treats as a credential is never logged either.
    if let Some(egress) = &doc.egress {
        let extra = egress.credentials.as_ref().map(|c| c.headers.as_slice()).unwrap_or_default();
        let builtin = crate::checks::egress::credentials::BUILTIN_HEADERS.iter().copied();
        redact.extend(builtin.chain(extra.iter().map(String::as_str)).map(str::to_ascii_lowercase));
    }
    // Float to an integer share; the range was checked above.
    let allow_per_million = (l.allow_sample_rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
    LogSettings { allow_per_million, include_headers: l.include_headers, redact }
}

/// FNV-1a (64-bit) over the canonical JSON of the document: serde_json's default map is
/// sorted, so the same policy in YAML, pretty or compact JSON gets one revision.
fn revision_of(value: &serde_json::Value) -> String {
    let canonical = value.to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
