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

/// One thing a check found wrong with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub code: ReasonCode,
    /// The id of the rule that fired: a policy rule id, or the built-in rule's path in the
    /// policy document (for example `identity.requirePeerIdentity`).
    pub rule: String,
    /// False when the check or the rule runs in dry-run: the finding is logged, not enforced.
    pub enforced: bool,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Every finding, in the order the checks ran. Evaluation stops at the first enforced one.
    pub findings: Vec<Finding>,
    /// The SPIFFE ID the peer-identity check established, when it established one.
    pub principal: Option<String>,
}

impl Decision {
    /// Deny when anything was found, enforced or not: dry-run findings still read "deny" with
    /// [`Decision::enforced`] false (a would-deny).
    pub fn verdict(&self) -> Verdict {
        if self.findings.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    /// True when the request must be refused.
    pub fn enforced(&self) -> bool {
        self.findings.iter().any(|f| f.enforced)
    }

    /// The finding that explains the decision: the enforced one, else the first dry-run one.
    pub fn primary(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.enforced).or_else(|| self.findings.first())
    }

    /// `allow`, `deny` or `would_deny`.
    pub fn outcome(&self) -> &'static str {
        match (self.verdict(), self.enforced()) {
            (Verdict::Allow, _) => "allow",
            (Verdict::Deny, true) => "deny",
            (Verdict::Deny, false) => "would_deny",
        }
    }
}
