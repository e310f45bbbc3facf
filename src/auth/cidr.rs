//! CIDR blocks, for AppRole's `secret_id_bound_cidrs` and tokens' `token_bound_cidrs`.
//!
//! Small enough to write out: an address and a prefix length, IPv4 or IPv6; a bare address is
//! a /32 (or /128). An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`) matches IPv4
//! blocks, so a bound of `127.0.0.1/32` means the same whichever way the server listens.

use std::fmt;
use std::net::IpAddr;

/// An IP network: `10.0.0.0/8`, `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a bare address.
    ///
    /// # Errors
    /// A message naming the malformed block.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("invalid CIDR block {text:?}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }

    /// The prefix length (32 for a bare IPv4 address); longer is more specific.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the block.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a list of blocks; Vault also accepts one comma-separated string.
///
/// # Errors
/// The first malformed block.
pub fn parse_list(items: &[String]) -> Result<Vec<Cidr>, String> {
    items
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(Cidr::parse)
        .collect()
}

/// Whether `ip` is allowed by `blocks`: any address when there are none, otherwise one in a
/// block (an unknown address never is).
#[must_use]
pub fn allowed(blocks: &[Cidr], ip: Option<IpAddr>) -> bool {
    blocks.is_empty() || ip.is_some_and(|ip| blocks.iter().any(|b| b.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_as_expected() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lo = Cidr::parse("127.0.0.1/32").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!(!lo.contains(ip("127.0.0.2")));
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")) && !net.contains(ip("10.2.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert_eq!(Cidr::parse("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        for bad in ["10.0.0.0/33", "x", "10.0.0/8", "::/129", "1.2.3.4/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let list = parse_list(&["10.0.0.0/8, 192.168.1.1".to_owned()]).unwrap();
        assert_eq!(list.len(), 2);
        assert!(allowed(&[], None));
        assert!(!allowed(&list, None));
        assert!(allowed(&list, Some(ip("192.168.1.1"))));
        assert!(!allowed(&list, Some(ip("127.0.0.1"))));
    }
}
