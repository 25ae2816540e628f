//! Published ports: `[ip:]host:container[/tcp|/udp]`, with ranges.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port (ranges are expanded into one mapping per port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on; `None` means every address (0.0.0.0).
    pub host_ip: Option<IpAddr>,
    /// Host port; `None` lets the engine pick a free one, as `docker run -p 80` does.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl PortMapping {
    /// True when two mappings would claim the same host socket.
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port.is_some()
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
                _ => true,
            }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        if let Some(p) = self.host_port {
            write!(f, "{p}:")?;
        } else if self.host_ip.is_some() {
            write!(f, ":")?;
        }
        write!(f, "{}/{}", self.container_port, self.protocol)
    }
}

fn port_range(s: &str, what: &str, whole: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!(
                "{what} port \"{p}\" in \"{whole}\" must be a number from 1 to 65535"
            )),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(format!(
                    "{what} port range \"{s}\" in \"{whole}\" is backwards"
                ));
            }
            Ok((a, b))
        }
        None => one(s).map(|p| (p, p)),
    }
}

/// Parses one port entry into one mapping per port of its range.
pub fn parse(s: &str) -> Result<Vec<PortMapping>, String> {
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, other)) => {
            return Err(format!(
                "protocol \"{other}\" in \"{s}\" must be tcp or udp"
            ));
        }
        None => (s, Protocol::Tcp),
    };
    // An IPv6 host address is written in brackets: [::1]:8080:80.
    let (host_ip, rest) = if let Some(after) = spec.strip_prefix('[') {
        let (ip, rest) = after
            .split_once("]:")
            .ok_or_else(|| format!("port \"{s}\" has an unclosed '[' around its address"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("host address \"{ip}\" in \"{s}\" is not an IP address"))?;
        (Some(ip), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            1 | 2 => (None, spec),
            3 => {
                let ip: IpAddr = parts[0].parse().map_err(|_| {
                    format!(
                        "host address \"{}\" in \"{s}\" is not an IP address",
                        parts[0]
                    )
                })?;
                (Some(ip), &spec[parts[0].len() + 1..])
            }
            _ => {
                return Err(format!(
                    "port \"{s}\" must look like [ip:]host:container[/tcp|/udp]"
                ));
            }
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h), c),
        None if host_ip.is_none() => (None, rest),
        None => {
            return Err(format!(
                "port \"{s}\" must look like [ip:]host:container[/tcp|/udp]"
            ));
        }
    };
    let (c_lo, c_hi) = port_range(container, "container", s)?;
    let host = match host {
        Some("") | None => None,
        Some(h) => Some(port_range(h, "host", s)?),
    };
    if let Some((h_lo, h_hi)) = host
        && h_hi - h_lo != c_hi - c_lo
    {
        return Err(format!(
            "host and container port ranges in \"{s}\" have different lengths"
        ));
    }
    Ok((c_lo..=c_hi)
        .enumerate()
        .map(|(i, container_port)| PortMapping {
            host_ip,
            host_port: host.map(|(lo, _)| lo + i as u16),
            container_port,
            protocol,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> String {
        let m = parse(s).unwrap();
        assert_eq!(m.len(), 1, "{s}");
        m[0].to_string()
    }

    #[test]
    fn forms() {
        let table = [
            ("8080:80", "8080:80/tcp"),
            ("80", "80/tcp"),
            ("53:53/udp", "53:53/udp"),
            ("127.0.0.1:8080:80", "127.0.0.1:8080:80/tcp"),
            ("127.0.0.1::80", "127.0.0.1::80/tcp"),
            ("[::1]:8080:80/tcp", "[::1]:8080:80/tcp"),
        ];
        for (s, want) in table {
            assert_eq!(one(s), want, "{s}");
        }
        let range = parse("8000-8002:9000-9002/udp").unwrap();
        assert_eq!(range.len(), 3);
        assert_eq!(range[2].host_port, Some(8002));
        assert_eq!(range[2].container_port, 9002);
    }

    #[test]
    fn rejects_bad_ports() {
        for bad in [
            "",
            "0:80",
            "80:0",
            "65536:80",
            "a:80",
            "80:80/sctp",
            "1.2.3:80:80",
            "8000-8001:80",
            "90-80:90-80",
            "1:2:3:4",
            "[::1:80:80",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn conflicts() {
        let p = |s: &str| parse(s).unwrap().remove(0);
        assert!(p("8080:80").conflicts_with(&p("8080:81")));
        assert!(p("0.0.0.0:8080:80").conflicts_with(&p("127.0.0.1:8080:80")));
        assert!(!p("127.0.0.2:8080:80").conflicts_with(&p("127.0.0.1:8080:80")));
        assert!(!p("8080:80/udp").conflicts_with(&p("8080:80/tcp")));
        assert!(!p("80").conflicts_with(&p("80")));
    }
}
