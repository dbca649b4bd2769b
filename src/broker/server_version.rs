//! The NATS server's version, read from its `INFO` at connect: newer servers offer features
//! (message schedules, per-message TTL) the fleet uses only where they exist.

use std::fmt;

use super::Broker;

/// `major.minor.patch` of a NATS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// Reads `2.15.1` (a leading `v` and a suffix such as `-beta` are allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().trim_start_matches('v').splitn(3, '.');
        let number = |part: Option<&str>| -> Option<u32> {
            let digits: String = part?.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(Self {
            major: number(parts.next())?,
            minor: number(parts.next())?,
            patch: number(parts.next()).unwrap_or(0),
        })
    }

    /// Whether this is `major.minor` or later.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Broker {
    /// The connected server's version, as its `INFO` says (`None` when unreadable).
    pub fn server_version(&self) -> Option<ServerVersion> {
        ServerVersion::parse(&self.client().server_info().version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_and_compared() {
        let v = ServerVersion::parse("2.15.1").unwrap();
        assert_eq!(v.to_string(), "2.15.1");
        assert!(v.at_least(2, 12) && v.at_least(2, 15) && !v.at_least(2, 16));
        let old = ServerVersion::parse("v2.9.10").unwrap();
        assert!(old < v && !old.at_least(2, 10));
        assert_eq!(
            ServerVersion::parse("2.12.0-beta.1").map(|v| v.minor),
            Some(12)
        );
        assert_eq!(ServerVersion::parse("nonsense"), None);
    }
}
