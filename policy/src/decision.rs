//! The outcome of evaluating one request.

use crate::reason::{Check, ReasonCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// What happened to a request (or connection), as decision logs, counters and `replay` name
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Let through (strips and log-only findings included).
    Allow,
    /// Refused.
    Deny,
    /// A rejection in dry-run: logged, let through.
    WouldDeny,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Allow, Outcome::Deny, Outcome::WouldDeny];

    /// `allow`, `deny` or `would_deny`: the decision log's `outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::WouldDeny => "would_deny",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding does to the request (when it is enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Remedy {
    /// The request is refused.
    #[default]
    Reject,
    /// The offending headers are removed (or rewritten) and the request goes on; see
    /// [`Decision::mutations`].
    Strip,
    /// Nothing happens to the request: the finding is only logged and counted.
    Log,
}

impl Remedy {
    pub fn as_str(self) -> &'static str {
        match self {
            Remedy::Reject => "reject",
            Remedy::Strip => "strip",
            Remedy::Log => "log",
        }
    }
}

/// One thing a check found wrong with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub code: ReasonCode,
    /// The id of the rule that fired: a policy rule id, or the built-in rule's path in the
    /// policy document (for example `identity.requirePeerIdentity`).
    pub rule: String,
    /// False when the check or the rule runs in dry-run (the finding is logged, not enforced),
    /// and always false for [`Remedy::Log`].
    pub enforced: bool,
    /// What the finding does when enforced: refuse the request, strip headers, or nothing.
    pub remedy: Remedy,
}

impl Finding {
    /// A finding of the check `code` belongs to. `rule` is a policy rule id or a built-in
    /// rule's path ([`crate::checks::builtin`]).
    pub fn new(code: ReasonCode, rule: &str, enforced: bool, remedy: Remedy) -> Finding {
        Finding {
            check: code.check(),
            code,
            rule: rule.to_string(),
            enforced: enforced && remedy != Remedy::Log,
            remedy,
        }
    }

    /// A finding that refuses the request (when enforced).
    pub fn reject(code: ReasonCode, rule: &str, enforced: bool) -> Finding {
        Finding::new(code, rule, enforced, Remedy::Reject)
    }
}

/// A change the filter makes to the request headers before letting the request go on (an
/// enforced [`Remedy::Strip`]). Names are lowercase, as Envoy keys its header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMutation {
    /// Remove every value of this header.
    Remove { name: Vec<u8> },
    /// Replace every value of this header with one value.
    Set { name: Vec<u8>, value: Vec<u8> },
}

impl HeaderMutation {
    pub fn name(&self) -> &[u8] {
        match self {
            HeaderMutation::Remove { name } | HeaderMutation::Set { name, .. } => name,
        }
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Every finding, in the order the checks ran. Evaluation stops at the first enforced
    /// rejection.
    pub findings: Vec<Finding>,
    /// The SPIFFE ID the peer-identity check established, when it established one.
    pub principal: Option<String>,
    /// Header changes to apply before the request goes on (only when it is not refused).
    /// Anything the filter changes here, it changes before Envoy picks the route, so the route
    /// cache is cleared after applying them.
    pub mutations: Vec<HeaderMutation>,
}

impl Decision {
    /// Deny when a rejecting finding was found, enforced or not: dry-run rejections still read
    /// "deny" with [`Decision::enforced`] false (a would-deny). Strips and log-only findings
    /// never make a deny.
    pub fn verdict(&self) -> Verdict {
        if self.findings.iter().any(|f| f.remedy == Remedy::Reject) {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }

    /// True when the request must be refused.
    pub fn enforced(&self) -> bool {
        self.findings.iter().any(|f| f.enforced && f.remedy == Remedy::Reject)
    }

    /// The finding that explains the decision: the enforced rejection, else the first
    /// rejection (dry-run), else the first finding of any kind.
    pub fn primary(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .find(|f| f.enforced && f.remedy == Remedy::Reject)
            .or_else(|| self.findings.iter().find(|f| f.remedy == Remedy::Reject))
            .or_else(|| self.findings.first())
    }

    /// What happened to the request: the verdict and whether it was enforced, in one value.
    pub fn outcome(&self) -> Outcome {
        match (self.verdict(), self.enforced()) {
            (Verdict::Allow, _) => Outcome::Allow,
            (Verdict::Deny, true) => Outcome::Deny,
            (Verdict::Deny, false) => Outcome::WouldDeny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(enforced: bool, remedy: Remedy) -> Finding {
        Finding { check: Check::Hygiene, code: ReasonCode::HygieneUnderscoreHeader, rule: "r".into(), enforced, remedy }
    }

    #[test]
    fn strips_and_logs_never_deny() {
        let mut d = Decision::default();
        d.findings.push(f(true, Remedy::Strip));
        d.findings.push(f(false, Remedy::Log));
        assert_eq!((d.verdict(), d.enforced(), d.outcome()), (Verdict::Allow, false, Outcome::Allow));
        assert_eq!(d.primary().map(|p| p.remedy), Some(Remedy::Strip));
        d.findings.push(f(false, Remedy::Reject));
        assert_eq!((d.verdict(), d.enforced(), d.outcome()), (Verdict::Deny, false, Outcome::WouldDeny));
        assert_eq!(d.primary().map(|p| p.remedy), Some(Remedy::Reject));
        d.findings.push(f(true, Remedy::Reject));
        assert_eq!((d.verdict(), d.enforced(), d.outcome()), (Verdict::Deny, true, Outcome::Deny));
        assert!(d.primary().is_some_and(|p| p.enforced));
    }
}
