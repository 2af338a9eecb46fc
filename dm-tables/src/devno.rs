//! Block device numbers (`major:minor`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A block device number as the kernel prints it in tables: `major:minor`, e.g. `8:16`.
/// Serialises as that string in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

impl DevNo {
    /// A device number from its parts.
    pub const fn new(major: u32, minor: u32) -> Self {
        DevNo { major, minor }
    }

    /// The Linux `dev_t` encoding (as `makedev(3)`).
    pub fn to_dev_t(self) -> u64 {
        let (ma, mi) = (u64::from(self.major), u64::from(self.minor));
        ((ma & 0xffff_f000) << 32)
            | ((ma & 0x0000_0fff) << 8)
            | ((mi & 0xffff_ff00) << 12)
            | (mi & 0x0000_00ff)
    }

    /// Decode a Linux `dev_t`.
    pub fn from_dev_t(dev: u64) -> Self {
        let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
        let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
        // Both values are masked to at most 32 bits above.
        DevNo::new(major as u32, minor as u32)
    }
}

impl fmt::Display for DevNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevNo {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Error::InvalidValue {
            value: s.to_string(),
            expected: "a device number major:minor".to_string(),
        };
        let (ma, mi) = s.split_once(':').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ma) || !digits(mi) {
            return Err(bad());
        }
        Ok(DevNo::new(
            ma.parse().map_err(|_| bad())?,
            mi.parse().map_err(|_| bad())?,
        ))
    }
}

impl Serialize for DevNo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DevNo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d: DevNo = "8:16".parse().unwrap();
        assert_eq!(d, DevNo::new(8, 16));
        assert_eq!(d.to_string(), "8:16");
        for bad in [
            "8",
            "8:",
            ":1",
            "a:1",
            "8:1x",
            "-1:2",
            "8:16:1",
            "99999999999:1",
        ] {
            assert!(bad.parse::<DevNo>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn dev_t_round_trip() {
        for d in [
            DevNo::new(8, 0),
            DevNo::new(253, 3),
            DevNo::new(259, 70000),
            DevNo::new(4095, 1 << 20),
        ] {
            assert_eq!(DevNo::from_dev_t(d.to_dev_t()), d);
        }
        assert_eq!(DevNo::new(8, 16).to_dev_t(), 0x810);
    }

    #[test]
    fn json_is_a_string() {
        let j = serde_json::to_string(&DevNo::new(8, 32)).unwrap();
        assert_eq!(j, "\"8:32\"");
        let back: DevNo = serde_json::from_str(&j).unwrap();
        assert_eq!(back, DevNo::new(8, 32));
    }
}
