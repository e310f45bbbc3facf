//! The risk score and the decision: a pure function of verified evidence, so the same evidence
//! always gives the same decision, and every point of it is explained.
//!
//! The table (also in the README):
//!
//! | factor | condition | risk |
//! |---|---|---|
//! | `base` | every request starts untrusted | +100 |
//! | `token` | a valid arca token (not from an AppRole login) | −30 |
//! | `approle` | a valid token issued by an AppRole login | −40 |
//! | `sigv4` | a valid SigV4 signature by an arca access key | −40 |
//! | `mtls` | a client certificate that chains to the role's CA bundle and maps to an identity | −30 |
//! | `attestation` | a document that passed every check | −30 |
//! | any factor | presented but failed verification | veto |
//! | `zone` | the source is in a network of the role, in an allowed zone and region | 0 |
//! | `zone` | the source is in no network of the role | +20 (veto when `allowed_zones` is set) |
//! | `zone` | the zone or the region is not allowed | veto |
//! | `time_window` | outside the role's window | veto |
//! | `rate` | more requests in the last minute than the role allows | veto |
//! | `rate` | more than half of them | +10 |
//! | `recent_denials` | each denial of this principal in the last 15 minutes | +10, at most +30 |
//! | `identity` | none of the caller's verified identities is in `allowed_identities` | veto |
//! | `secret` | the secret is not one the role distributes | veto |
//! | `acl` | the caller's policies do not grant `read` on the secret | veto |
//!
//! The risk is the sum, clamped to 0..=100. The decision:
//!
//! - **DENY** when anything vetoes, or the risk is above [`STEP_UP_AT_MOST`];
//! - **STEP_UP** when a factor the role requires is missing (whatever the risk), or the risk is
//!   above [`PERMIT_AT_MOST`] and the role can verify a factor the caller has not presented
//!   (mTLS when it has a CA bundle, attestation when it has attestors); the decision names
//!   them. When it can verify none, such a risk is a DENY;
//! - **PERMIT** otherwise.
//!
//! Measures are tightened by risk: above [`TIGHTEN_ABOVE`] a distribution lives at most
//! [`TIGHTENED_TTL_SECS`] and can be read once, whatever the role allows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::network::NetworkContext;
use super::role::{FactorKind, Role};

/// The highest risk that is permitted.
pub const PERMIT_AT_MOST: u32 = 40;
/// The highest risk that asks for a further factor rather than denying.
pub const STEP_UP_AT_MOST: u32 = 70;
/// Above this risk, measures are tightened.
pub const TIGHTEN_ABOVE: u32 = 20;
/// The time-bound of a tightened distribution.
pub const TIGHTENED_TTL_SECS: u64 = 60;
/// The window recent denials are counted in.
pub const DENIAL_WINDOW_SECS: u64 = 900;
/// The window requests are counted in.
pub const RATE_WINDOW_SECS: u64 = 60;
/// The most principals whose activity is remembered (least recently seen forgotten first).
pub const MAX_TRACKED_PRINCIPALS: usize = 65_536;

/// PERMIT, DENY or STEP_UP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The distribution goes ahead.
    Permit,
    /// Refused.
    Deny,
    /// Refused for now: a further factor is needed.
    StepUp,
}

impl Outcome {
    /// `PERMIT`, `DENY`, `STEP_UP`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permit => "PERMIT",
            Self::Deny => "DENY",
            Self::StepUp => "STEP_UP",
        }
    }
}

/// One line of the score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// The factor (`base`, `token`, `mtls`, `zone`, ...).
    pub factor: String,
    /// Risk points added (negative: removed).
    pub points: i32,
    /// Whether this line alone denies.
    pub veto: bool,
    /// Why.
    pub reason: String,
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The outcome.
    pub outcome: Outcome,
    /// The risk, 0..=100.
    pub risk: u32,
    /// Every line of the score, in table order.
    pub contributions: Vec<Contribution>,
    /// For STEP_UP: factors that would help.
    pub step_up: Vec<FactorKind>,
}

impl Decision {
    /// The reasons of the lines that vetoed or added risk, joined: what a denial says.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .contributions
            .iter()
            .filter(|c| c.veto)
            .map(|c| format!("{}: {}", c.factor, c.reason))
            .collect();
        if parts.is_empty() && self.outcome != Outcome::Permit {
            parts.push(format!("risk {}", self.risk));
            if !self.step_up.is_empty() {
                let names: Vec<&str> = self.step_up.iter().map(|f| f.as_str()).collect();
                parts.push(format!("present also: {}", names.join(", ")));
            }
        }
        parts.join("; ")
    }
}

/// An identity factor arca verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFactor {
    /// Which factor.
    pub kind: FactorKind,
    /// The identity it proves (`approle:web`, `cert:payments`, `access-key:AKIA...`).
    pub identity: String,
    /// How it was verified (for the decision's explanation).
    pub detail: String,
}

/// Everything the score is computed from, all of it verified by arca.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Factors that verified.
    pub factors: Vec<VerifiedFactor>,
    /// Factors that were presented and failed, with the reason.
    pub failed: Vec<(FactorKind, String)>,
    /// Where the request comes from.
    pub network: Option<NetworkContext>,
    /// Whether now is inside the role's window (`None`: the role has none).
    pub in_window: Option<bool>,
    /// Requests of this principal in the last minute, this one included.
    pub recent_requests: u32,
    /// Denials of this principal in the last 15 minutes.
    pub recent_denials: u32,
    /// Whether the secret is one the role distributes, with the reason when not.
    pub secret_refused: Option<String>,
    /// Whether the caller's policies refuse the read, with the reason when they do.
    pub acl_refused: Option<String>,
}

fn line(factor: &str, points: i32, veto: bool, reason: impl Into<String>) -> Contribution {
    Contribution {
        factor: factor.to_owned(),
        points,
        veto,
        reason: reason.into(),
    }
}

/// Scores `evidence` for `role` (see the table in the module documentation).
#[must_use]
pub fn decide(role: &Role, evidence: &Evidence) -> Decision {
    let definition = role.definition();
    let mut lines = vec![line("base", 100, false, "every request starts untrusted")];
    for factor in &evidence.factors {
        let points = match factor.kind {
            FactorKind::Token => -30,
            FactorKind::Approle | FactorKind::Sigv4 => -40,
            FactorKind::Mtls | FactorKind::Attestation => -30,
        };
        lines.push(line(
            factor.kind.as_str(),
            points,
            false,
            factor.detail.clone(),
        ));
    }
    for (kind, reason) in &evidence.failed {
        lines.push(line(kind.as_str(), 0, true, reason.clone()));
    }
    let present: Vec<FactorKind> = evidence.factors.iter().map(|f| f.kind).collect();
    if !definition.allowed_identities.is_empty() {
        let allowed = evidence
            .factors
            .iter()
            .find(|f| definition.allowed_identities.contains(&f.identity));
        match allowed {
            Some(f) => lines.push(line(
                "identity",
                0,
                false,
                format!("{} is allowed", f.identity),
            )),
            None => lines.push(line(
                "identity",
                0,
                true,
                "none of the caller's verified identities is allowed by the role",
            )),
        }
    }
    if let Some(network) = &evidence.network {
        let source = network
            .source
            .map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        match &network.zone {
            None if !definition.allowed_zones.is_empty() => lines.push(line(
                "zone",
                20,
                true,
                format!("{source} is in no network of the role, and zones are restricted"),
            )),
            None => lines.push(line(
                "zone",
                20,
                false,
                format!("{source} is in no network of the role"),
            )),
            Some(zone) => {
                let zone_ok =
                    definition.allowed_zones.is_empty() || definition.allowed_zones.contains(zone);
                let region_ok = definition.allowed_regions.is_empty()
                    || network
                        .region
                        .as_ref()
                        .is_some_and(|r| definition.allowed_regions.contains(r));
                if !zone_ok {
                    lines.push(line("zone", 0, true, format!("zone {zone} is not allowed")));
                } else if !region_ok {
                    lines.push(line(
                        "zone",
                        0,
                        true,
                        format!(
                            "region {} is not allowed",
                            network.region.as_deref().unwrap_or("(none)")
                        ),
                    ));
                } else {
                    lines.push(line(
                        "zone",
                        0,
                        false,
                        format!("{source} is in zone {zone}"),
                    ));
                }
            }
        }
    }
    if let Some(inside) = evidence.in_window {
        lines.push(if inside {
            line("time_window", 0, false, "inside the allowed window")
        } else {
            line("time_window", 0, true, "outside the allowed time window")
        });
    }
    let limit = role.rate_limit();
    if evidence.recent_requests > limit {
        lines.push(line(
            "rate",
            0,
            true,
            format!(
                "{} requests in the last minute; the role allows {limit}",
                evidence.recent_requests
            ),
        ));
    } else if evidence.recent_requests.saturating_mul(2) > limit {
        lines.push(line(
            "rate",
            10,
            false,
            format!(
                "{} requests in the last minute, more than half of {limit}",
                evidence.recent_requests
            ),
        ));
    }
    if evidence.recent_denials > 0 {
        let points = i32::try_from(evidence.recent_denials.min(3) * 10).unwrap_or(30);
        lines.push(line(
            "recent_denials",
            points,
            false,
            format!(
                "{} denials of this principal in the last 15 minutes",
                evidence.recent_denials
            ),
        ));
    }
    if let Some(reason) = &evidence.secret_refused {
        lines.push(line("secret", 0, true, reason.clone()));
    }
    if let Some(reason) = &evidence.acl_refused {
        lines.push(line("acl", 0, true, reason.clone()));
    }
    let sum: i32 = lines.iter().map(|c| c.points).sum();
    let risk = u32::try_from(sum.clamp(0, 100)).unwrap_or(100);
    let vetoed = lines.iter().any(|c| c.veto);
    let missing: Vec<FactorKind> = definition
        .required_factors
        .iter()
        .copied()
        .filter(|f| !present.contains(f))
        .collect();
    let (outcome, step_up) = if vetoed || risk > STEP_UP_AT_MOST {
        (Outcome::Deny, Vec::new())
    } else if !missing.is_empty() {
        (Outcome::StepUp, missing.clone())
    } else if risk > PERMIT_AT_MOST {
        let mut helpful = Vec::new();
        if !role.client_cas().is_empty() && !present.contains(&FactorKind::Mtls) {
            helpful.push(FactorKind::Mtls);
        }
        if role.has_attestors() && !present.contains(&FactorKind::Attestation) {
            helpful.push(FactorKind::Attestation);
        }
        if helpful.is_empty() {
            (Outcome::Deny, helpful)
        } else {
            (Outcome::StepUp, helpful)
        }
    } else {
        (Outcome::Permit, Vec::new())
    };
    if !missing.is_empty() && outcome == Outcome::StepUp {
        let names: Vec<&str> = missing.iter().map(|f| f.as_str()).collect();
        lines.push(line(
            "required_factors",
            0,
            false,
            format!("the role requires also: {}", names.join(", ")),
        ));
    }
    Decision {
        outcome,
        risk,
        contributions: lines,
        step_up,
    }
}

#[derive(Debug, Default)]
struct Seen {
    requests: VecDeque<u64>,
    denials: VecDeque<u64>,
    last: u64,
}

/// Recent requests and denials per principal, in memory (a restart forgets them: the score
/// is then computed as for a principal with no history, which is the lenient side of only
/// two of its lines).
#[derive(Debug, Default)]
pub struct Activity {
    seen: Mutex<HashMap<String, Seen>>,
}

impl Activity {
    /// Counts a request of `principal` at `now`; returns (requests in the last minute,
    /// this one included; denials in the last 15 minutes).
    pub fn request(&self, principal: &str, now: u64) -> (u32, u32) {
        let mut map = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED_PRINCIPALS && !map.contains_key(principal) {
            Self::forget_oldest(&mut map, now);
        }
        let seen = map.entry(principal.to_owned()).or_default();
        seen.last = now;
        while seen
            .requests
            .front()
            .is_some_and(|t| *t + RATE_WINDOW_SECS <= now)
        {
            seen.requests.pop_front();
        }
        while seen
            .denials
            .front()
            .is_some_and(|t| *t + DENIAL_WINDOW_SECS <= now)
        {
            seen.denials.pop_front();
        }
        // Bounded: past 100001 entries the count is above any allowed limit anyway.
        if seen.requests.len() <= 100_000 {
            seen.requests.push_back(now);
        }
        (
            u32::try_from(seen.requests.len()).unwrap_or(u32::MAX),
            u32::try_from(seen.denials.len()).unwrap_or(u32::MAX),
        )
    }

    /// Records a denial (or step-up) of `principal` at `now`.
    pub fn denied(&self, principal: &str, now: u64) {
        let mut map = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED_PRINCIPALS && !map.contains_key(principal) {
            Self::forget_oldest(&mut map, now);
        }
        let seen = map.entry(principal.to_owned()).or_default();
        seen.last = now;
        if seen.denials.len() < 1_000 {
            seen.denials.push_back(now);
        }
    }

    fn forget_oldest(map: &mut HashMap<String, Seen>, now: u64) {
        map.retain(|_, s| s.last + DENIAL_WINDOW_SECS > now);
        if map.len() >= MAX_TRACKED_PRINCIPALS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zerotrust::network::ZoneRule;
    use crate::zerotrust::role::RoleDefinition;

    fn factor(kind: FactorKind) -> VerifiedFactor {
        VerifiedFactor {
            kind,
            identity: format!("{}:x", kind.as_str()),
            detail: String::new(),
        }
    }

    fn role(definition: RoleDefinition) -> Role {
        Role::parse("r", definition).unwrap()
    }

    fn zoned() -> RoleDefinition {
        RoleDefinition {
            zones: vec![ZoneRule {
                cidr: "10.0.0.0/8".into(),
                zone: "corp".into(),
                region: None,
            }],
            attestors: vec![crate::zerotrust::role::AttestorDefinition {
                name: "a".into(),
                public_key: "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".into(),
            }],
            ..RoleDefinition::default()
        }
    }

    fn evidence(factors: &[FactorKind], ip: &str, zone: Option<&str>) -> Evidence {
        Evidence {
            factors: factors.iter().copied().map(factor).collect(),
            network: Some(NetworkContext {
                source: ip.parse().ok(),
                forwarded: false,
                zone: zone.map(str::to_owned),
                region: None,
            }),
            recent_requests: 1,
            ..Evidence::default()
        }
    }

    /// Each row: factors, zone, denials → risk and outcome, as the table in the module
    /// documentation says.
    #[test]
    fn the_decision_table() {
        use FactorKind as F;
        let r = role(zoned());
        /// Factors, zone, recent denials → risk and outcome.
        type Row<'a> = (&'a [FactorKind], Option<&'a str>, u32, u32, Outcome);
        let rows: &[Row<'_>] = &[
            (&[], Some("corp"), 0, 100, Outcome::Deny),
            (&[F::Token], Some("corp"), 0, 70, Outcome::StepUp),
            (&[F::Approle], Some("corp"), 0, 60, Outcome::StepUp),
            (&[F::Approle, F::Mtls], Some("corp"), 0, 30, Outcome::Permit),
            (
                &[F::Approle, F::Attestation],
                Some("corp"),
                0,
                30,
                Outcome::Permit,
            ),
            (
                &[F::Token, F::Attestation],
                Some("corp"),
                0,
                40,
                Outcome::Permit,
            ),
            // The role offers no further factor (no client CA): a risk above 40 is a DENY.
            (&[F::Token, F::Attestation], None, 0, 60, Outcome::Deny),
            (
                &[F::Token, F::Attestation],
                Some("corp"),
                1,
                50,
                Outcome::Deny,
            ),
            (&[F::Token], Some("corp"), 3, 100, Outcome::Deny),
            (&[F::Approle], Some("corp"), 1, 70, Outcome::StepUp),
            (
                &[F::Sigv4, F::Approle, F::Mtls, F::Attestation],
                Some("corp"),
                0,
                0,
                Outcome::Permit,
            ),
            (&[F::Token], None, 3, 100, Outcome::Deny),
        ];
        for (factors, zone, denials, risk, outcome) in rows {
            let mut e = evidence(factors, "10.1.1.1", *zone);
            e.recent_denials = *denials;
            let d = decide(&r, &e);
            assert_eq!(
                (d.risk, d.outcome),
                (*risk, *outcome),
                "{factors:?} {zone:?} {denials}: {d:?}"
            );
            let sum: i32 = d.contributions.iter().map(|c| c.points).sum();
            assert_eq!(
                u32::try_from(sum.clamp(0, 100)).unwrap(),
                d.risk,
                "the lines add up"
            );
        }
    }

    #[test]
    fn vetoes_deny_whatever_the_score_and_required_factors_step_up() {
        use FactorKind as F;
        let strong = [F::Sigv4, F::Approle, F::Mtls, F::Attestation];
        let r = role(zoned());
        let mut e = evidence(&strong, "10.1.1.1", Some("corp"));
        e.failed.push((F::Token, "bad".into()));
        assert_eq!(decide(&r, &e).outcome, Outcome::Deny);
        let mut e = evidence(&strong, "10.1.1.1", Some("corp"));
        e.in_window = Some(false);
        assert_eq!(decide(&r, &e).outcome, Outcome::Deny);
        let mut e = evidence(&strong, "10.1.1.1", Some("corp"));
        e.recent_requests = 61;
        let d = decide(&r, &e);
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.summary().contains("61 requests"), "{}", d.summary());
        let mut e = evidence(&strong, "10.1.1.1", Some("corp"));
        e.acl_refused = Some("no".into());
        assert_eq!(decide(&r, &e).outcome, Outcome::Deny);
        let mut definition = zoned();
        definition.required_factors = vec![F::Approle, F::Attestation];
        let r = role(definition);
        let d = decide(
            &r,
            &evidence(&[F::Sigv4, F::Approle, F::Mtls], "10.1.1.1", Some("corp")),
        );
        assert_eq!(d.outcome, Outcome::StepUp);
        assert_eq!(d.step_up, vec![F::Attestation]);
        let mut definition = zoned();
        definition.allowed_zones = vec!["corp".into()];
        let r = role(definition);
        assert_eq!(
            decide(&r, &evidence(&strong, "192.0.2.1", None)).outcome,
            Outcome::Deny
        );
    }

    #[test]
    fn activity_counts_a_minute_of_requests_and_fifteen_of_denials() {
        let a = Activity::default();
        assert_eq!(a.request("p", 1000), (1, 0));
        a.denied("p", 1000);
        assert_eq!(a.request("p", 1030), (2, 1));
        assert_eq!(
            a.request("p", 1061),
            (2, 1),
            "the first request left the minute"
        );
        assert_eq!(
            a.request("p", 1000 + 900),
            (1, 0),
            "the denial left the 15 minutes"
        );
        assert_eq!(a.request("q", 1000), (1, 0), "per principal");
    }
}
