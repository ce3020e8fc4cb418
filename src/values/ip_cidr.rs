//! [`IpCidr`]: an IP address range, as `trusted_proxies` /
//! `LB_TRUSTED_PROXIES` name the hops whose `X-Forwarded-*` are believed.

use std::fmt;
use std::net::IpAddr;

/// An IP range, `10.0.0.0/8`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    /// Host bits cleared; IPv4-mapped IPv6 addresses are stored as IPv4.
    network: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// Parse `ADDRESS` or `ADDRESS/PREFIX` (IPv4 or IPv6). Host bits below
    /// the prefix are ignored, as `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(raw: &str) -> Result<IpCidr, String> {
        let raw = raw.trim();
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let not_a_range =
            || format!("'{raw}' is not an IP address or CIDR range (such as 10.0.0.0/8)");
        let address: IpAddr = address.trim().parse().map_err(|_| not_a_range())?;
        let address = address.to_canonical();
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => match prefix.trim().parse::<u8>() {
                Ok(prefix) if prefix <= max => prefix,
                _ => return Err(not_a_range()),
            },
        };
        Ok(IpCidr {
            network: mask(address, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from(bits.to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from(bits.to_be_bytes())
        }
    }
}
