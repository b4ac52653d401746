//! The SSRF guard: which addresses a URL input may reach.
//!
//! A URL input is fetched by the server, from inside its network, on behalf
//! of a client: without a guard a client could make the server read its own
//! metadata service (`169.254.169.254`), an admin port on loopback, or a
//! host on the private network. So only globally routable unicast addresses
//! are allowed, unless an operator lists a network in `fetch_allow`.
//!
//! The check is on addresses, never on names: a name is resolved once, every
//! address it gives is checked, and the connection is made only to the
//! addresses that passed ([`GuardedResolver`]), so a name cannot change its
//! answer between the check and the connection (DNS rebinding).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// A network: an address and a prefix length (`10.0.0.0/8`, `::1/128`; a
/// bare address is the network of that one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
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

impl FromStr for Cidr {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Cidr, &'static str> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "expected an address or address/prefix, e.g. 127.0.0.1/32")?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or("the prefix length is out of range")?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Which addresses URL inputs may reach.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allow: Arc<[Cidr]>,
}

impl Guard {
    pub fn new(allow: Vec<Cidr>) -> Guard {
        Guard {
            allow: allow.into(),
        }
    }

    /// Why `ip` may not be reached, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(ip)) {
            return None;
        }
        match ip {
            IpAddr::V4(v4) => refuses_v4(v4),
            IpAddr::V6(v6) => refuses_v6(v6),
        }
    }
}

fn refuses_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let why = if ip.is_unspecified() || a == 0 {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        "a cloud metadata address"
    } else if ip.is_link_local() {
        "a link-local address"
    } else if ip.is_private() {
        "a private address"
    } else if a == 100 && (64..128).contains(&b) {
        "a shared (carrier-grade NAT) address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_broadcast() || a >= 240 {
        "a reserved address"
    } else if (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 192 && b == 88 && c == 99)
    {
        "a special-purpose address"
    } else {
        return None;
    };
    Some(why)
}

fn refuses_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |high: u128| {
        let low = u128::from(ip) & 0xffff_ffff;
        (u128::from(ip) >> 32 == high).then(|| Ipv4Addr::from(low as u32))
    };
    let why = if ip.is_unspecified() {
        "an unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if segments[0] & 0xffc0 == 0xfe80 || segments[0] & 0xffc0 == 0xfec0 {
        "a link-local address"
    } else if segments[0] & 0xfe00 == 0xfc00 {
        // Unique local, AWS's fd00:ec2::254 metadata address among them.
        "a private (unique local) address"
    } else if let Some(v4) = embedded_v4(0).filter(|_| segments[5] == 0) {
        // IPv4-compatible (deprecated): judged as the IPv4 address.
        return refuses_v4(v4).or(Some("an IPv4-compatible address"));
    } else if let Some(v4) = embedded_v4(0x0064_ff9b_0000_0000_0000_0000) {
        // NAT64 reaches an IPv4 address: judge that one.
        return refuses_v4(v4);
    } else if segments[0] == 0x2002 {
        // 6to4 carries an IPv4 address in bits 16..48.
        let v4 = Ipv4Addr::new(
            (segments[1] >> 8) as u8,
            segments[1] as u8,
            (segments[2] >> 8) as u8,
            segments[2] as u8,
        );
        return refuses_v4(v4);
    } else if segments[0] == 0x2001 && segments[1] == 0 {
        "a Teredo address"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "a documentation address"
    } else if segments[0] & 0xe000 != 0x2000 {
        // Only 2000::/3 is global unicast.
        "a reserved address"
    } else {
        return None;
    };
    Some(why)
}

/// A resolver for reqwest that resolves a name once and gives the
/// connector only the addresses the guard allows; a name with none left is
/// an error naming why.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) guard: Guard,
}

/// A name resolved only to addresses the guard refuses.
#[derive(Debug, thiserror::Error)]
#[error("the host resolves only to forbidden addresses ({why})")]
pub(crate) struct ForbiddenHost {
    pub(crate) why: &'static str,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut allowed: Vec<SocketAddr> = Vec::new();
            let mut why = "no address";
            for addr in found {
                match guard.refuses(addr.ip()) {
                    None => allowed.push(addr),
                    Some(reason) => why = reason,
                }
            }
            if allowed.is_empty() {
                return Err(
                    Box::new(ForbiddenHost { why }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &Guard, text: &str) -> bool {
        guard.refuses(text.parse().expect("an address")).is_some()
    }

    #[test]
    fn forbidden_addresses() {
        let guard = Guard::default();
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
            "2001:db8::1",
            "2001:0::1",
            "::127.0.0.1",
        ] {
            assert!(refused(&guard, ip), "{ip} should be refused");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!refused(&guard, ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn the_allow_list_opens_networks() {
        let guard = Guard::new(vec![
            "127.0.0.1/32".parse().expect("cidr"),
            "10.0.0.0/8".parse().expect("cidr"),
        ]);
        assert!(!refused(&guard, "127.0.0.1"));
        assert!(!refused(&guard, "::ffff:127.0.0.1"));
        assert!(refused(&guard, "127.0.0.2"));
        assert!(!refused(&guard, "10.200.0.1"));
        assert!(refused(&guard, "169.254.169.254"));
        assert!(refused(&guard, "::1"));
    }

    #[test]
    fn cidrs_parse() {
        assert_eq!(
            "127.0.0.1".parse::<Cidr>().map(|c| c.to_string()),
            Ok("127.0.0.1/32".to_owned())
        );
        assert_eq!(
            "::1".parse::<Cidr>().map(|c| c.to_string()),
            Ok("::1/128".to_owned())
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("localhost".parse::<Cidr>().is_err());
        let any: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(any.contains("8.8.8.8".parse().expect("ip")));
    }
}
