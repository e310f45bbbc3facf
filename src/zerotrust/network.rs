//! Network context and time: where a request comes from, and whether now is an allowed time.
//!
//! **Source address.** The address of the TCP peer, as the server's outermost layer recorded
//! it (never a header the client set). `X-Forwarded-For` is read only when that peer is one of
//! the role's `trusted_proxies`, and then from the right: the first address that is not itself
//! a trusted proxy is the client. Addresses further left were written by whoever the first
//! untrusted hop was, so they are not believed. A header that does not parse yields the last
//! trusted proxy, never a guess.
//!
//! **Zones.** A role maps networks to a zone and a region (`10.1.0.0/16 → corp, eu-west-1`);
//! the longest matching prefix wins, so a /24 inside a /16 can be its own zone.
//!
//! **Time window.** Days of the week and a `HH:MM`–`HH:MM` range in UTC (start inclusive, end
//! exclusive; a range that ends before it starts spans midnight).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::ZtError;
use crate::auth::cidr::Cidr;

/// One network of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRule {
    /// The network.
    pub cidr: String,
    /// Its zone.
    pub zone: String,
    /// Its region, if it has one.
    #[serde(default)]
    pub region: Option<String>,
}

/// Where a request comes from, as arca established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkContext {
    /// The client's address (`None` when the connection has none, e.g. a test without a
    /// socket).
    pub source: Option<IpAddr>,
    /// Whether `source` came from `X-Forwarded-For` through a trusted proxy.
    pub forwarded: bool,
    /// The zone of `source`, when a network of the role contains it.
    pub zone: Option<String>,
    /// The region of that network.
    pub region: Option<String>,
}

/// Resolves the client address: `peer`, or the right-most untrusted address of
/// `forwarded_for` when `peer` is a trusted proxy.
#[must_use]
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    proxies: &[Cidr],
) -> (Option<IpAddr>, bool) {
    let Some(peer) = peer else {
        return (None, false);
    };
    let trusted = |ip: IpAddr| proxies.iter().any(|p| p.contains(ip));
    if !trusted(peer) {
        return (Some(peer), false);
    }
    let Some(header) = forwarded_for else {
        return (Some(peer), false);
    };
    let mut last_trusted = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            return (Some(last_trusted), false);
        };
        if !trusted(ip) {
            return (Some(ip), true);
        }
        last_trusted = ip;
    }
    (Some(last_trusted), false)
}

/// The zone and region of `source` among `zones` (longest prefix first).
#[must_use]
pub fn locate(
    source: Option<IpAddr>,
    zones: &[(Cidr, ZoneRule)],
) -> (Option<String>, Option<String>) {
    let Some(ip) = source else {
        return (None, None);
    };
    zones
        .iter()
        .filter(|(cidr, _)| cidr.contains(ip))
        .max_by_key(|(cidr, _)| cidr.prefix_len())
        .map_or((None, None), |(_, rule)| {
            (Some(rule.zone.clone()), rule.region.clone())
        })
}

/// A weekly window of allowed times, in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Allowed days, `mon` to `sun` (empty: every day).
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, inclusive.
    pub start: String,
    /// `HH:MM`, exclusive.
    pub end: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl TimeWindow {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`ZtError::InvalidRequest`] for an unknown day or a time that is not `HH:MM`.
    pub fn check(&self) -> Result<(), ZtError> {
        if minutes(&self.start).is_none() || minutes(&self.end).is_none() {
            return Err(ZtError::InvalidRequest(
                "time_window.start and end are HH:MM in UTC".into(),
            ));
        }
        if self.start == self.end {
            return Err(ZtError::InvalidRequest(
                "time_window.start and end are equal: the window is empty".into(),
            ));
        }
        if self.days.iter().any(|d| !DAYS.contains(&d.as_str())) {
            return Err(ZtError::InvalidRequest(
                "time_window.days are mon, tue, wed, thu, fri, sat, sun".into(),
            ));
        }
        Ok(())
    }

    /// Whether unix time `now` falls inside the window.
    #[must_use]
    pub fn contains(&self, now: u64) -> bool {
        let (Some(start), Some(end)) = (minutes(&self.start), minutes(&self.end)) else {
            return false;
        };
        let day_index = ((now / 86_400) + 3) % 7; // 1970-01-01 was a Thursday (index 3).
        let minute = u32::try_from((now % 86_400) / 60).unwrap_or(0);
        let in_range = if start < end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        };
        // For a range spanning midnight, the early-morning part belongs to the day it began.
        let day_of_start = if start > end && minute < end {
            (day_index + 6) % 7
        } else {
            day_index
        };
        let day_ok = self.days.is_empty()
            || usize::try_from(day_of_start)
                .ok()
                .and_then(|i| DAYS.get(i))
                .is_some_and(|d| self.days.iter().any(|x| x == d));
        in_range && day_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = cidrs(&["127.0.0.1/32", "10.9.0.0/16"]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            client_address(Some(other), Some("10.1.2.3"), &proxies),
            (Some(other), false),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_address(Some(peer), Some("10.1.2.3"), &proxies),
            (Some("10.1.2.3".parse().unwrap()), true)
        );
        assert_eq!(
            client_address(Some(peer), Some("6.6.6.6, 10.1.2.3, 10.9.0.1"), &proxies),
            (Some("10.1.2.3".parse().unwrap()), true),
            "the right-most untrusted hop is the client; what it wrote to its left is not"
        );
        assert_eq!(
            client_address(Some(peer), Some("garbage"), &proxies),
            (Some(peer), false)
        );
        assert_eq!(
            client_address(Some(peer), None, &proxies),
            (Some(peer), false)
        );
    }

    #[test]
    fn the_longest_prefix_names_the_zone() {
        let zones: Vec<(Cidr, ZoneRule)> = [
            ("10.0.0.0/8", "corp", Some("eu-west-1")),
            ("10.1.2.0/24", "lab", None),
        ]
        .iter()
        .map(|(c, z, r)| {
            (
                Cidr::parse(c).unwrap(),
                ZoneRule {
                    cidr: (*c).to_owned(),
                    zone: (*z).to_owned(),
                    region: r.map(str::to_owned),
                },
            )
        })
        .collect();
        assert_eq!(
            locate(Some("10.1.2.3".parse().unwrap()), &zones),
            (Some("lab".into()), None)
        );
        assert_eq!(
            locate(Some("10.7.0.1".parse().unwrap()), &zones),
            (Some("corp".into()), Some("eu-west-1".into()))
        );
        assert_eq!(
            locate(Some("192.0.2.1".parse().unwrap()), &zones),
            (None, None)
        );
    }

    #[test]
    fn time_windows_follow_utc_days_and_midnight() {
        // 2024-01-01 was a Monday; 10:30 UTC.
        let monday_1030 = 1_704_105_000;
        let office = TimeWindow {
            days: vec!["mon".into(), "tue".into()],
            start: "09:00".into(),
            end: "17:00".into(),
        };
        assert!(office.check().is_ok());
        assert!(office.contains(monday_1030));
        assert!(!office.contains(monday_1030 + 7 * 3600), "17:30 is outside");
        assert!(
            !office.contains(monday_1030 + 5 * 86_400),
            "Saturday is outside"
        );
        let night = TimeWindow {
            days: vec!["sun".into()],
            start: "22:00".into(),
            end: "02:00".into(),
        };
        // Monday 01:00 belongs to Sunday night's window.
        assert!(night.contains(monday_1030 - 9 * 3600 - 1800));
        assert!(!night.contains(monday_1030));
        let bad = TimeWindow {
            days: vec!["someday".into()],
            start: "9:00".into(),
            end: "17:00".into(),
        };
        assert!(bad.check().is_err());
    }
}
