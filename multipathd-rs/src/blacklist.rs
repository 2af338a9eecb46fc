//! Blacklist and blacklist exceptions, with multipath-tools' semantics (multipath.conf(5)):
//!
//! * four kinds of rule: `devnode` (kernel name), `device` (vendor and/or product), `protocol`
//!   (`scsi:fcp`, `scsi:iscsi`, `scsi:sas`, `scsi:unspec`, `nvme`, `undef`, ...) and `wwid`;
//! * they are checked in that order; within one kind an exception beats a blacklist entry, and
//!   an exception only lifts a blacklist entry of the same kind (a `wwid` exception does not
//!   rescue a device blacklisted by `devnode`);
//! * a path with no WWID yet is not checked against `wwid` rules;
//! * all patterns are unanchored regular expressions (`regex` crate).
//!
//! Built-in rules (see [`builtin_blacklist`]) are always present; exceptions in the file lift
//! them like any other rule.

use std::fmt;

use serde::Serialize;

use crate::settings::{Origin, PathIdentity, Pattern};

/// One `devnode`, `wwid` or `protocol` rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// The regular expression.
    pub pattern: Pattern,
    /// Where it was written.
    #[serde(skip)]
    pub origin: Origin,
}

/// One `device` rule: vendor and/or product regexes (a missing one matches anything).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceRule {
    /// Vendor regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Pattern>,
    /// Product regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<Pattern>,
    /// Where it was written.
    #[serde(skip)]
    pub origin: Origin,
}

impl DeviceRule {
    fn matches(&self, vendor: &str, product: &str) -> bool {
        self.vendor
            .as_ref()
            .is_none_or(|v| v.is_match(vendor.trim()))
            && self
                .product
                .as_ref()
                .is_none_or(|p| p.is_match(product.trim()))
    }

    fn label(&self) -> String {
        format!(
            "{}/{}",
            self.vendor.as_ref().map_or(".*", |v| v.as_str()),
            self.product.as_ref().map_or(".*", |p| p.as_str())
        )
    }
}

/// The rules of one section (`blacklist` or `blacklist_exceptions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleSet {
    /// `devnode` rules.
    pub devnode: Vec<Rule>,
    /// `wwid` rules.
    pub wwid: Vec<Rule>,
    /// `protocol` rules.
    pub protocol: Vec<Rule>,
    /// `device` rules.
    pub device: Vec<DeviceRule>,
}

impl RuleSet {
    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.devnode.is_empty()
            && self.wwid.is_empty()
            && self.protocol.is_empty()
            && self.device.is_empty()
    }

    fn append(&mut self, other: RuleSet) {
        self.devnode.extend(other.devnode);
        self.wwid.extend(other.wwid);
        self.protocol.extend(other.protocol);
        self.device.extend(other.device);
    }
}

/// The kind of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Kernel device name.
    Devnode,
    /// Vendor / product.
    Device,
    /// Transport protocol.
    Protocol,
    /// WWID.
    Wwid,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Devnode => "devnode",
            Self::Device => "device",
            Self::Protocol => "protocol",
            Self::Wwid => "wwid",
        })
    }
}

/// A rule that matched, described for humans and JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleMatch {
    /// Its kind.
    pub kind: RuleKind,
    /// The pattern(s), e.g. `^(ram|loop)[0-9]` or `DGC/LUNZ`.
    pub pattern: String,
    /// `built-in` or `FILE line N`.
    pub origin: String,
    /// The value that was tested.
    pub value: String,
}

impl fmt::Display for RuleMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} matches {:?} ({})",
            self.kind, self.pattern, self.value, self.origin
        )
    }
}

/// An exception that lifted a blacklist entry of the same kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lifted {
    /// The exception rule.
    pub exception: RuleMatch,
    /// The blacklist rule it lifted.
    pub blacklist: RuleMatch,
}

/// The outcome of a blacklist check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The path may be multipathed. `exceptions` lists the exceptions that lifted blacklist
    /// entries on the way (empty when nothing was blacklisted).
    Allowed {
        /// Exceptions that applied, with the blacklist entries they lifted.
        exceptions: Vec<Lifted>,
    },
    /// The path is ignored because of this rule.
    Blacklisted {
        /// The rule.
        rule: RuleMatch,
    },
}

impl Verdict {
    /// Whether the path is blacklisted.
    pub fn is_blacklisted(&self) -> bool {
        matches!(self, Self::Blacklisted { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blacklisted { rule } => write!(f, "blacklisted: {rule}"),
            Self::Allowed { exceptions } if exceptions.is_empty() => f.write_str("not blacklisted"),
            Self::Allowed { exceptions } => {
                f.write_str("not blacklisted")?;
                for l in exceptions {
                    write!(
                        f,
                        "; exception {} lifts blacklist {}",
                        l.exception, l.blacklist
                    )?;
                }
                Ok(())
            }
        }
    }
}

fn rule(pattern: &str) -> Rule {
    Rule {
        pattern: builtin_pattern(pattern),
        origin: Origin::Builtin,
    }
}

fn builtin_pattern(p: &str) -> Pattern {
    // The built-in patterns are literals tested below; a failure here is a programming error
    // caught by `builtin_rules_compile`.
    Pattern::new(p).unwrap_or_else(|e| panic!("built-in blacklist pattern {p:?}: {e}"))
}

/// The built-in blacklist, following multipath.conf(5)'s documented defaults:
///
/// * devnode `^(ram|zram|raw|loop|fd|md|dm-|sr|scd|st|dcssblk|nvme)[0-9]`: RAM disks, loop
///   and floppy devices, MD RAID, device-mapper nodes (our own maps), CD-ROMs, tapes, s390
///   DCSS, and NVMe namespaces (the kernel's native NVMe multipath owns those);
/// * devnode `^(td|hd|vd)[a-z]`: legacy IDE and virtio disks, never multipathed;
/// * device `(DGC|EMC)/LUNZ`: the placeholder LUN Unity/VNX present when no LUN is mapped;
/// * device `(NETAPP|LSI|ENGENIO|DELL|IBM|SGI|STK|SUN)/Universal Xport`: the E-Series / MD
///   access (management) LUN;
/// * device `IBM/S\/390.*`: s390 DASDs;
/// * device `(Intel|INTEL|Promise)/(VTrak|Vess) V-LUN`: Promise array management LUNs.
pub fn builtin_blacklist() -> RuleSet {
    BUILTIN.clone()
}

/// Compiled once: the daemon checks every path against these.
static BUILTIN: std::sync::LazyLock<RuleSet> = std::sync::LazyLock::new(make_builtin_blacklist);

fn make_builtin_blacklist() -> RuleSet {
    let dev = |v: &str, p: &str| DeviceRule {
        vendor: Some(builtin_pattern(v)),
        product: Some(builtin_pattern(p)),
        origin: Origin::Builtin,
    };
    RuleSet {
        devnode: vec![
            rule("^(ram|zram|raw|loop|fd|md|dm-|sr|scd|st|dcssblk|nvme)[0-9]"),
            rule("^(td|hd|vd)[a-z]"),
        ],
        wwid: vec![],
        protocol: vec![],
        device: vec![
            dev("^(DGC|EMC)$", "^LUNZ"),
            dev(
                "^(NETAPP|LSI|ENGENIO|DELL|IBM|SGI|STK|SUN)$",
                "^Universal Xport",
            ),
            dev("^IBM$", "^S/390"),
            dev("^(Intel|INTEL|Promise)$", "^(VTrak|Vess) V-LUN"),
        ],
    }
}

/// A blacklist with its exceptions, ready to check paths.
#[derive(Debug, Clone, Default)]
pub struct Blacklist {
    /// Blacklist rules: the file's first, then the built-ins.
    pub blacklist: RuleSet,
    /// Exceptions.
    pub exceptions: RuleSet,
}

impl Blacklist {
    /// The file's rules plus the built-in blacklist.
    pub fn with_builtins(blacklist: RuleSet, exceptions: RuleSet) -> Self {
        let mut all = blacklist;
        all.append(builtin_blacklist());
        Self {
            blacklist: all,
            exceptions,
        }
    }

    /// Only the given rules (no built-ins).
    pub fn new(blacklist: RuleSet, exceptions: RuleSet) -> Self {
        Self {
            blacklist,
            exceptions,
        }
    }

    /// Checks a path: devnode, then device, then protocol, then WWID (if known).
    pub fn verdict(&self, id: &PathIdentity) -> Verdict {
        verdict(&[&self.blacklist], &self.exceptions, id)
    }
}

/// Checks a path against the file's rules plus the built-in blacklist without copying any
/// rule (what [`crate::config::Config::blacklist_verdict`] uses for every path).
pub fn verdict_with_builtins(
    blacklist: &RuleSet,
    exceptions: &RuleSet,
    id: &PathIdentity,
) -> Verdict {
    verdict(&[blacklist, &BUILTIN], exceptions, id)
}

fn first_match<'a>(
    sets: &[&'a RuleSet],
    get: fn(&'a RuleSet) -> &'a Vec<Rule>,
    value: &str,
) -> Option<&'a Rule> {
    sets.iter()
        .flat_map(|s| get(s).iter())
        .find(|r| r.pattern.is_match(value))
}

/// Picks one kind of rule out of a set.
type RulesOf = fn(&RuleSet) -> &Vec<Rule>;

fn verdict(blacklists: &[&RuleSet], exceptions: &RuleSet, id: &PathIdentity) -> Verdict {
    let mut lifted = Vec::new();
    let kinds: [(RuleKind, Option<&str>, RulesOf); 3] = [
        (RuleKind::Devnode, Some(id.kernel_name()), |s| &s.devnode),
        (
            RuleKind::Protocol,
            Some(id.protocol.as_deref().unwrap_or("undef")),
            |s| &s.protocol,
        ),
        (RuleKind::Wwid, id.wwid.as_deref(), |s| &s.wwid),
    ];
    for (i, (kind, value, get)) in kinds.into_iter().enumerate() {
        if i == 1 {
            // device rules sit between devnode and protocol.
            if let Some(v) = check_device(blacklists, exceptions, id, &mut lifted) {
                return v;
            }
        }
        let Some(value) = value else { continue };
        let describe = |r: &Rule| RuleMatch {
            kind,
            pattern: r.pattern.as_str().to_string(),
            origin: r.origin.to_string(),
            value: value.to_string(),
        };
        let Some(black) = first_match(blacklists, get, value) else {
            continue;
        };
        match first_match(&[exceptions], get, value) {
            Some(e) => lifted.push(Lifted {
                exception: describe(e),
                blacklist: describe(black),
            }),
            None => {
                return Verdict::Blacklisted {
                    rule: describe(black),
                };
            }
        }
    }
    Verdict::Allowed { exceptions: lifted }
}

fn check_device(
    blacklists: &[&RuleSet],
    exceptions: &RuleSet,
    id: &PathIdentity,
    lifted: &mut Vec<Lifted>,
) -> Option<Verdict> {
    let found = |sets: &[&RuleSet]| {
        sets.iter()
            .flat_map(|s| s.device.iter())
            .find(|r| r.matches(&id.vendor, &id.product))
            .map(|r| RuleMatch {
                kind: RuleKind::Device,
                pattern: r.label(),
                origin: r.origin.to_string(),
                value: format!("{}/{}", id.vendor.trim(), id.product.trim()),
            })
    };
    let black = found(blacklists)?;
    match found(&[exceptions]) {
        Some(e) => {
            lifted.push(Lifted {
                exception: e,
                blacklist: black,
            });
            None
        }
        None => Some(Verdict::Blacklisted { rule: black }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(
        devnode: &str,
        vendor: &str,
        product: &str,
        wwid: Option<&str>,
        protocol: Option<&str>,
    ) -> PathIdentity {
        PathIdentity {
            devnode: devnode.into(),
            wwid: wwid.map(str::to_string),
            vendor: vendor.into(),
            product: product.into(),
            protocol: protocol.map(str::to_string),
        }
    }

    fn file_rule(p: &str) -> Rule {
        Rule {
            pattern: Pattern::new(p).unwrap(),
            origin: Origin::File {
                path: "/etc/x.toml".into(),
                line: 3,
            },
        }
    }

    #[test]
    fn builtin_rules_compile() {
        let b = builtin_blacklist();
        assert_eq!(b.devnode.len(), 2);
        assert_eq!(b.device.len(), 4);
    }

    #[test]
    fn builtin_devnodes() {
        let bl = Blacklist::with_builtins(RuleSet::default(), RuleSet::default());
        for name in [
            "ram0", "zram1", "loop3", "md127", "dm-0", "sr0", "st1", "nvme0n1", "vda", "/dev/hda",
            "dcssblk0",
        ] {
            assert!(
                bl.verdict(&id(name, "X", "Y", None, None)).is_blacklisted(),
                "{name}"
            );
        }
        for name in ["sda", "sdab", "dasda", "/dev/sdc"] {
            assert!(
                !bl.verdict(&id(name, "X", "Y", None, None)).is_blacklisted(),
                "{name}"
            );
        }
    }

    #[test]
    fn builtin_devices() {
        let bl = Blacklist::with_builtins(RuleSet::default(), RuleSet::default());
        let v = bl.verdict(&id("sda", "DGC     ", "LUNZ            ", None, None));
        match v {
            Verdict::Blacklisted { rule } => {
                assert_eq!(rule.kind, RuleKind::Device);
                assert_eq!(rule.origin, "built-in");
                assert_eq!(rule.value, "DGC/LUNZ");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            bl.verdict(&id("sda", "NETAPP", "Universal Xport", None, None))
                .is_blacklisted()
        );
        assert!(
            !bl.verdict(&id("sda", "DGC", "VRAID", None, None))
                .is_blacklisted()
        );
    }

    #[test]
    fn exception_beats_blacklist_of_same_kind() {
        let mut bl = RuleSet::default();
        bl.wwid.push(file_rule(".*"));
        let mut exc = RuleSet::default();
        exc.wwid.push(file_rule("^3600a0980"));
        let b = Blacklist::new(bl, exc);
        let v = b.verdict(&id("sda", "NETAPP", "LUN", Some("3600a098038303053"), None));
        match &v {
            Verdict::Allowed { exceptions } => {
                assert_eq!(exceptions.len(), 1);
                assert_eq!(exceptions[0].exception.pattern, "^3600a0980");
                assert_eq!(exceptions[0].blacklist.pattern, ".*");
            }
            other => panic!("{other:?}"),
        }
        assert!(v.to_string().contains("lifts blacklist"));
        assert!(
            b.verdict(&id("sdb", "X", "Y", Some("36000"), None))
                .is_blacklisted()
        );
        // No WWID known yet: wwid rules are not consulted.
        assert!(!b.verdict(&id("sdb", "X", "Y", None, None)).is_blacklisted());
    }

    #[test]
    fn exception_of_other_kind_does_not_lift() {
        let mut bl = RuleSet::default();
        bl.devnode.push(file_rule("^sd[a-z]"));
        let mut exc = RuleSet::default();
        exc.wwid.push(file_rule("^36"));
        let b = Blacklist::new(bl, exc);
        let v = b.verdict(&id("sda", "X", "Y", Some("3600"), None));
        match v {
            Verdict::Blacklisted { rule } => {
                assert_eq!(rule.kind, RuleKind::Devnode);
                assert_eq!(rule.origin, "/etc/x.toml line 3");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_rules() {
        let mut bl = RuleSet::default();
        bl.protocol.push(file_rule("scsi:unspec"));
        bl.protocol.push(file_rule("^undef$"));
        let b = Blacklist::new(bl, RuleSet::default());
        assert!(
            b.verdict(&id("sda", "X", "Y", None, Some("scsi:unspec")))
                .is_blacklisted()
        );
        assert!(
            b.verdict(&id("sda", "X", "Y", None, None)).is_blacklisted(),
            "unknown protocol is undef"
        );
        assert!(
            !b.verdict(&id("sda", "X", "Y", None, Some("scsi:fcp")))
                .is_blacklisted()
        );

        // Blacklist everything but FC and iSCSI, the multipath.conf(5) idiom.
        let mut bl = RuleSet::default();
        bl.protocol.push(file_rule(".*"));
        let mut exc = RuleSet::default();
        exc.protocol.push(file_rule("scsi:(fcp|iscsi)"));
        let b = Blacklist::new(bl, exc);
        assert!(
            !b.verdict(&id("sda", "X", "Y", None, Some("scsi:iscsi")))
                .is_blacklisted()
        );
        assert!(
            b.verdict(&id("sda", "X", "Y", None, Some("scsi:sas")))
                .is_blacklisted()
        );
    }

    #[test]
    fn device_rule_with_vendor_only_and_exception_lifting_builtin() {
        let mut bl = RuleSet::default();
        bl.device.push(DeviceRule {
            vendor: Some(Pattern::new("^HP$").unwrap()),
            product: None,
            origin: Origin::Builtin,
        });
        let mut exc = RuleSet::default();
        exc.device.push(DeviceRule {
            vendor: Some(Pattern::new("IBM").unwrap()),
            product: Some(Pattern::new("S/390").unwrap()),
            origin: Origin::Builtin,
        });
        let b = Blacklist::with_builtins(bl, exc);
        assert!(
            b.verdict(&id("sda", "HP", "anything", None, None))
                .is_blacklisted()
        );
        assert!(
            !b.verdict(&id("sda", "HPE", "anything", None, None))
                .is_blacklisted()
        );
        assert!(
            !b.verdict(&id("sda", "IBM", "S/390 DASD", None, None))
                .is_blacklisted()
        );
    }
}
