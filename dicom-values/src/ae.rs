//! Application Entity titles and the addresses of remote AEs (`AET@HOST:PORT`).

use std::fmt;
use std::str::FromStr;

/// Why a string is not an AE title.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: an AE title is 1 to 16 characters of printable ASCII without backslash")]
pub struct AeTitleError(pub String);

/// An AE title as PS3.5 (VR AE) and PS3.8 9.3.1 define it: 1-16 characters of the default
/// repertoire, no backslash, no control character, not all spaces. Leading and trailing spaces
/// are not significant and are removed, so two titles compare as the peers mean them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AeTitle(String);

impl AeTitle {
    pub fn new(raw: impl AsRef<str>) -> Result<Self, AeTitleError> {
        let raw = raw.as_ref();
        let t = raw.trim_matches(' ');
        let ok = !t.is_empty()
            && t.len() <= 16
            && t.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
        if ok {
            Ok(AeTitle(t.to_string()))
        } else {
            Err(AeTitleError(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` (as received, possibly space-padded) names this AE.
    pub fn matches(&self, other: &str) -> bool {
        self.0 == other.trim_matches(' ')
    }
}

impl FromStr for AeTitle {
    type Err = AeTitleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AeTitle::new(s)
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AeTitle {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not an AE address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeAddrError {
    #[error("{0:?}: expected AET@HOST:PORT or dicom-tls://AET@HOST:PORT, e.g. PACS@10.0.0.5:104")]
    Syntax(String),
    #[error("{0:?}: AE title must be 1-16 printable ASCII characters")]
    AeTitle(String),
}

/// A remote AE: its title, host, port and whether it speaks DICOM TLS. Written
/// `AET@HOST:PORT` (optionally `dicom://AET@HOST:PORT`) for plain TCP and
/// `dicom-tls://AET@HOST:PORT` for TLS; an IPv6 host goes in brackets (`PACS@[::1]:104`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeAddr {
    pub ae_title: AeTitle,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl fmt::Display for AeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("dicom-tls://")?;
        }
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.ae_title, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
        }
    }
}

impl FromStr for AeAddr {
    type Err = AeAddrError;
    fn from_str(s: &str) -> Result<Self, AeAddrError> {
        let usage = || AeAddrError::Syntax(s.to_string());
        let (tls, rest) = match (s.strip_prefix("dicom-tls://"), s.strip_prefix("dicom://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            (None, None) => (false, s),
        };
        let (ae, addr) = rest.split_once('@').ok_or_else(usage)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(usage)?;
        let ae_title = AeTitle::new(ae).map_err(|_| AeAddrError::AeTitle(s.to_string()))?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(usage)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(usage());
        }
        Ok(AeAddr {
            ae_title,
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl AeAddr {
    /// `HOST:PORT` for a socket connect (IPv6 hosts bracketed).
    pub fn socket_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles() {
        assert_eq!(AeTitle::new(" PACS ").unwrap().as_str(), "PACS");
        assert!(AeTitle::new("A B").is_ok());
        assert!(AeTitle::new("ABCDEFGHIJKLMNOP").is_ok());
        for bad in ["", "    ", "ABCDEFGHIJKLMNOPQ", "A\\B", "A\tB", "Ä"] {
            assert!(AeTitle::new(bad).is_err(), "{bad:?}");
        }
        assert!(AeTitle::new("PACS").unwrap().matches("PACS            "));
    }

    #[test]
    fn addresses_parse_and_print() {
        let d: AeAddr = "PACS@10.0.0.5:104".parse().unwrap();
        assert_eq!(d.to_string(), "PACS@10.0.0.5:104");
        assert_eq!(d.socket_addr(), "10.0.0.5:104");
        assert!(!d.tls);
        let d: AeAddr = "ORTHANC@[::1]:4242".parse().unwrap();
        assert_eq!(d.host, "::1");
        assert_eq!(d.to_string(), "ORTHANC@[::1]:4242");
        assert_eq!(d.socket_addr(), "[::1]:4242");
        let d: AeAddr = "dicom-tls://PACS@pacs.example:2762".parse().unwrap();
        assert!(d.tls);
        assert_eq!(d.to_string(), "dicom-tls://PACS@pacs.example:2762");
        let d: AeAddr = "dicom://PACS@h:104".parse().unwrap();
        assert_eq!(d.to_string(), "PACS@h:104");
        for bad in [
            "PACS",
            "@h:1",
            "P@h",
            "P@h:0",
            "P@h:x",
            "ABCDEFGHIJKLMNOPQ@h:1",
            "P@:1",
        ] {
            assert!(bad.parse::<AeAddr>().is_err(), "{bad}");
        }
        assert!(matches!(
            "A\\B@h:1".parse::<AeAddr>(),
            Err(AeAddrError::AeTitle(_))
        ));
    }
}
