//! Target messages understood by dm-mpath (`dmsetup message NAME 0 MSG`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::devno::DevNo;
use crate::error::Error;

/// A message to the multipath target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    FailPath(DevNo),
    ReinstatePath(DevNo),
    /// Switch to this 1-based path group.
    SwitchGroup(u32),
    /// Bypass this 1-based group (`D` in status).
    DisableGroup(u32),
    /// Stop bypassing this 1-based group.
    EnableGroup(u32),
    QueueIfNoPath,
    FailIfNoPath,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::FailPath(d) => write!(f, "fail_path {d}"),
            Message::ReinstatePath(d) => write!(f, "reinstate_path {d}"),
            Message::SwitchGroup(n) => write!(f, "switch_group {n}"),
            Message::DisableGroup(n) => write!(f, "disable_group {n}"),
            Message::EnableGroup(n) => write!(f, "enable_group {n}"),
            Message::QueueIfNoPath => f.write_str("queue_if_no_path"),
            Message::FailIfNoPath => f.write_str("fail_if_no_path"),
        }
    }
}

impl FromStr for Message {
    type Err = Error;

    /// Parses `fail_path 8:16`, `switch_group 2`, `queue_if_no_path`, ... (words separated by
    /// whitespace; names compared case-insensitively like the kernel does).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidValue {
            value: s.to_string(),
            expected: "a multipath message (fail_path M:m, reinstate_path M:m, switch_group N, \
                       disable_group N, enable_group N, queue_if_no_path, fail_if_no_path)"
                .to_string(),
        };
        let words: Vec<&str> = s.split_ascii_whitespace().collect();
        let group = |w: &str| -> Result<u32, Error> {
            match w.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad()),
            }
        };
        match words.as_slice() {
            [w] if w.eq_ignore_ascii_case("queue_if_no_path") => Ok(Message::QueueIfNoPath),
            [w] if w.eq_ignore_ascii_case("fail_if_no_path") => Ok(Message::FailIfNoPath),
            [w, d] if w.eq_ignore_ascii_case("fail_path") => {
                Ok(Message::FailPath(d.parse().map_err(|_| bad())?))
            }
            [w, d] if w.eq_ignore_ascii_case("reinstate_path") => {
                Ok(Message::ReinstatePath(d.parse().map_err(|_| bad())?))
            }
            [w, n] if w.eq_ignore_ascii_case("switch_group") => Ok(Message::SwitchGroup(group(n)?)),
            [w, n] if w.eq_ignore_ascii_case("disable_group") => {
                Ok(Message::DisableGroup(group(n)?))
            }
            [w, n] if w.eq_ignore_ascii_case("enable_group") => Ok(Message::EnableGroup(group(n)?)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let all = [
            Message::FailPath(DevNo::new(8, 16)),
            Message::ReinstatePath(DevNo::new(8, 32)),
            Message::SwitchGroup(2),
            Message::DisableGroup(1),
            Message::EnableGroup(1),
            Message::QueueIfNoPath,
            Message::FailIfNoPath,
        ];
        for m in all {
            assert_eq!(m.to_string().parse::<Message>().unwrap(), m);
        }
        assert_eq!(
            Message::FailPath(DevNo::new(8, 16)).to_string(),
            "fail_path 8:16"
        );
        assert_eq!(Message::SwitchGroup(2).to_string(), "switch_group 2");
        assert_eq!(
            "FAIL_PATH 8:0".parse::<Message>().unwrap(),
            Message::FailPath(DevNo::new(8, 0))
        );
        for bad in [
            "",
            "fail_path",
            "fail_path sda",
            "switch_group 0",
            "switch_group x",
            "frobnicate",
            "queue_if_no_path 1",
        ] {
            assert!(bad.parse::<Message>().is_err(), "{bad:?} parsed");
        }
    }
}
