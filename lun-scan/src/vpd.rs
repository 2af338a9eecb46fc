//! Decoders for the VPD pages the kernel exposes in sysfs (`vpd_pg83`, `vpd_pg80`), producing
//! exactly the identifiers udev derives from them.
//!
//! On current distributions `55-scsi-sg3_id.rules` imports `sg_inq --export --raw --inhex=
//! .../vpd_pg83` (`SCSI_IDENT_<ASSOC>_<TYPE>=...` properties) and sets `ID_SERIAL`, the WWID
//! multipath-tools uses by default, from the first of these that is non-empty:
//!
//! | property                    | ID_SERIAL            |
//! |-----------------------------|----------------------|
//! | `SCSI_IDENT_LUN_ATA`        | value as is          |
//! | `SCSI_IDENT_LUN_NAA_REGEXT` | `3` + lowercase hex  |
//! | `SCSI_IDENT_LUN_NAA_REG`    | `3` + lowercase hex  |
//! | `SCSI_IDENT_LUN_NAA_EXT`    | `3` + lowercase hex  |
//! | `SCSI_IDENT_LUN_EUI64`      | `2` + lowercase hex  |
//! | `SCSI_IDENT_LUN_NAME`       | `8` + name string    |
//! | `SCSI_IDENT_LUN_T10`        | `1` + vendor id text |
//!
//! NAA locally assigned (`NAA_LOCAL`), vendor-specific designators and the unit serial number
//! are not used by default (`.SCSI_ID_SERIAL_SRC` defaults to `T`). Only designators associated
//! with the logical unit count; target-port and target-device designators do not.
//!
//! Text designators are cleaned the way sg_inq does: leading blanks and control characters
//! dropped, trailing blanks and NULs dropped, each run of blanks turned into one `_` (no `_`
//! after an existing `_`), a single NUL skipped and two consecutive NULs ending the string,
//! other non-printable bytes turned into `.`; then every byte outside `[0-9A-Za-z#+-.:=@_]` is
//! written as the four characters `\xNN` (udev's encoding). A designator whose declared length
//! runs past the end of the page ends the decoding; what came before it still counts; a
//! designator with association 3 (reserved) also ends it, as in sg_inq.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One designation descriptor of the Device Identification page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Designator {
    pub protocol_id: u8,
    pub code_set: u8,
    pub piv: bool,
    /// 0 = logical unit, 1 = target port, 2 = target device, 3 = reserved.
    pub association: u8,
    /// 0 vendor specific, 1 T10 vendor id, 2 EUI-64, 3 NAA, 4 relative target port,
    /// 5 target port group, 6 logical unit group, 7 MD5, 8 SCSI name string, 9 protocol
    /// specific port, 0xa UUID.
    pub designator_type: u8,
    pub value: Vec<u8>,
}

/// A decoded Device Identification page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceIdPage {
    pub designators: Vec<Designator>,
    /// Why decoding stopped early or what is wrong with the page, if anything.
    pub problem: Option<String>,
}

/// What lun-scan needs from page 0x83.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pg83Summary {
    /// udev's `ID_SERIAL` for this page, if the page yields one.
    pub id_serial: Option<String>,
    pub target_port_group: Option<u16>,
    pub relative_port: Option<u16>,
    /// Set when the page is malformed (the other fields hold what could still be decoded).
    pub problem: Option<String>,
}

fn be16(b: &[u8]) -> usize {
    usize::from(b[0]) << 8 | usize::from(b[1])
}

/// Checks the 4-byte header of a VPD page and returns its payload (after the header), limited to
/// the declared length, plus a problem if the page is shorter than declared.
fn payload(page: &[u8], code: u8) -> Result<(&[u8], Option<String>), String> {
    if page.len() < 4 {
        return Err(format!(
            "it is {} bytes long, shorter than the 4-byte page header",
            page.len()
        ));
    }
    if page[1] != code {
        return Err(format!(
            "its page code is 0x{:02x}, expected 0x{code:02x}",
            page[1]
        ));
    }
    let declared = be16(&page[2..4]);
    let avail = page.len() - 4;
    if declared > avail {
        Ok((
            &page[4..],
            Some(format!(
                "the page declares {declared} bytes of data but only {avail} are present (truncated)"
            )),
        ))
    } else {
        Ok((&page[4..4 + declared], None))
    }
}

/// Splits a Device Identification page (including its 4-byte header) into designators.
pub fn parse_pg83(page: &[u8]) -> Result<DeviceIdPage, String> {
    let (body, mut problem) = payload(page, 0x83)?;
    let mut out = DeviceIdPage::default();
    if body.len() >= 3 && body[2] != 0 {
        // Pre-SPC-2 reply (some old EMC Symmetrix): the whole payload is one NAA designator,
        // which is how sg_inq treats it.
        out.designators.push(Designator {
            protocol_id: 0xf,
            code_set: 1,
            piv: false,
            association: 0,
            designator_type: 3,
            value: body.to_vec(),
        });
        out.problem = problem;
        return Ok(out);
    }
    let len = body.len();
    let mut k = 0usize;
    while k < len {
        if k + 4 > len {
            problem.get_or_insert_with(|| {
                format!(
                    "a designator header at payload offset {k} is cut off by the end of the page"
                )
            });
            break;
        }
        let h = &body[k..k + 4];
        let i_len = usize::from(h[3]);
        if k + 4 + i_len > len {
            problem.get_or_insert_with(|| {
                format!(
                    "the designator at payload offset {k} declares {i_len} bytes but only {} remain",
                    len - k - 4
                )
            });
            break;
        }
        out.designators.push(Designator {
            protocol_id: h[0] >> 4,
            code_set: h[0] & 0xf,
            piv: h[1] & 0x80 != 0,
            association: (h[1] >> 4) & 0x3,
            designator_type: h[1] & 0xf,
            value: body[k + 4..k + 4 + i_len].to_vec(),
        });
        k += 4 + i_len;
    }
    out.problem = problem;
    Ok(out)
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_print(c: u8) -> bool {
    (0x20..0x7f).contains(&c)
}

/// sg_inq's whitespace clean-up of text designators (see the module documentation).
pub fn encode_whitespaces(s: &[u8]) -> Vec<u8> {
    let mut j = 0;
    while j < s.len() && is_blank(s[j]) {
        j += 1;
    }
    while j < s.len() && s[j] < 0x20 {
        j += 1;
    }
    let mut end = s.len();
    while end > j && (is_blank(s[end - 1]) || s[end - 1] == 0) {
        end -= 1;
    }
    let mut out: Vec<u8> = Vec::with_capacity(end.saturating_sub(j));
    let mut valid = false;
    let mut zeroes = 0;
    for &c in &s[j..end] {
        if is_blank(c) {
            if out.last().is_some_and(|&l| l != b'_') {
                out.push(b'_');
                valid = true;
            }
            zeroes = 0;
        } else if !is_print(c) {
            if c == 0 {
                if zeroes > 0 {
                    break;
                }
                zeroes += 1;
                continue;
            }
            out.push(b'.');
            zeroes = 0;
        } else {
            out.push(c);
            valid = true;
            zeroes = 0;
        }
    }
    if !valid {
        out.clear();
    }
    out
}

/// udev's property encoding as sg_inq applies it: bytes outside `[0-9A-Za-z#+-.:=@_]` become
/// `\xNN`.
pub fn udev_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s {
        if c.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&c) {
            out.push(char::from(c));
        } else {
            let _ = write!(out, "\\x{c:02x}");
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The `SCSI_IDENT_*` properties `sg_inq --export` prints for this page, as udev would hold them
/// after importing (a later line replaces an earlier one; an empty value unsets the property).
pub fn export_properties(
    page: &[u8],
) -> Result<(BTreeMap<String, String>, Option<String>), String> {
    let parsed = parse_pg83(page)?;
    let mut props = BTreeMap::new();
    let mut set = |k: String, v: String| {
        if v.is_empty() {
            props.remove(&k);
        } else {
            props.insert(k, v);
        }
    };
    for d in &parsed.designators {
        let assoc = match d.association {
            0 => "LUN",
            1 => "PORT",
            2 => "TARGET",
            _ => break,
        };
        let ip = &d.value;
        let text = d.code_set == 2 || d.code_set == 3;
        match d.designator_type {
            0 => {
                if ip.is_empty() || ip.len() > 128 {
                    continue;
                }
                if text {
                    let e = encode_whitespaces(ip);
                    if !e.is_empty() {
                        set(format!("SCSI_IDENT_{assoc}_VENDOR"), udev_encode(&e));
                    }
                } else {
                    set(format!("SCSI_IDENT_{assoc}_VENDOR"), hex(ip));
                }
            }
            1 => {
                if text {
                    let e = encode_whitespaces(ip);
                    set(format!("SCSI_IDENT_{assoc}_T10"), udev_encode(&e));
                    if e.starts_with(b"ATA_") {
                        set(
                            format!("SCSI_IDENT_{assoc}_ATA"),
                            String::from_utf8_lossy(&e[4..]).into_owned(),
                        );
                    }
                } else {
                    set(format!("SCSI_IDENT_{assoc}_T10"), hex(ip));
                }
            }
            2 if d.code_set == 1 => set(format!("SCSI_IDENT_{assoc}_EUI64"), hex(ip)),
            3 if d.code_set == 1 => {
                let suffix = match ip.first().map(|b| b >> 4) {
                    Some(6) => "REGEXT",
                    Some(5) => "REG",
                    Some(2) => "EXT",
                    _ => "LOCAL",
                };
                set(format!("SCSI_IDENT_{assoc}_NAA_{suffix}"), hex(ip));
            }
            4 if d.code_set == 1 && d.association == 1 && ip.len() == 4 => set(
                format!("SCSI_IDENT_{assoc}_RELATIVE"),
                be16(&ip[2..4]).to_string(),
            ),
            5 if d.code_set == 1 && d.association == 1 && ip.len() == 4 => set(
                format!("SCSI_IDENT_{assoc}_TARGET_PORT_GROUP"),
                format!("0x{:x}", be16(&ip[2..4])),
            ),
            6 if d.code_set == 1 && d.association == 0 && ip.len() == 4 => set(
                format!("SCSI_IDENT_{assoc}_LOGICAL_UNIT_GROUP"),
                format!("0x{:x}", be16(&ip[2..4])),
            ),
            7 if d.code_set == 1 && d.association == 0 => {
                set(format!("SCSI_IDENT_{assoc}_MD5"), hex(ip))
            }
            8 if d.code_set == 3 => {
                // printf("%.*s") stops at the first NUL; a newline would end udev's line.
                let end = ip
                    .iter()
                    .position(|&c| c == 0 || c == b'\n')
                    .unwrap_or(ip.len());
                set(
                    format!("SCSI_IDENT_{assoc}_NAME"),
                    String::from_utf8_lossy(&ip[..end]).into_owned(),
                );
            }
            0xa if d.code_set == 1 && ip.len() >= 18 => {
                let mut s = String::new();
                for (m, b) in ip.iter().enumerate().skip(2) {
                    if matches!(m, 6 | 8 | 10 | 12) {
                        s.push('-');
                    }
                    let _ = write!(s, "{b:02x}");
                }
                set(format!("SCSI_IDENT_{assoc}_UUID"), s);
            }
            _ => {}
        }
    }
    Ok((props, parsed.problem))
}

/// udev's `ID_SERIAL` from the exported properties (55-scsi-sg3_id.rules, default settings).
pub fn id_serial_from_properties(props: &BTreeMap<String, String>) -> Option<String> {
    if let Some(v) = props.get("SCSI_IDENT_LUN_ATA") {
        return Some(v.clone());
    }
    for (key, prefix) in [
        ("SCSI_IDENT_LUN_NAA_REGEXT", "3"),
        ("SCSI_IDENT_LUN_NAA_REG", "3"),
        ("SCSI_IDENT_LUN_NAA_EXT", "3"),
        ("SCSI_IDENT_LUN_EUI64", "2"),
        ("SCSI_IDENT_LUN_NAME", "8"),
        ("SCSI_IDENT_LUN_T10", "1"),
    ] {
        if let Some(v) = props.get(key) {
            return Some(format!("{prefix}{v}"));
        }
    }
    None
}

/// Decodes a `vpd_pg83` file: udev's ID_SERIAL, the ALUA target port group and the relative
/// target port. Never panics; a page that is not a device identification page at all is an
/// `Err` with the reason.
pub fn decode_pg83(page: &[u8]) -> Result<Pg83Summary, String> {
    let (props, problem) = export_properties(page)?;
    let num = |k: &str| -> Option<u16> {
        let v = props.get(k)?;
        match v.strip_prefix("0x") {
            Some(h) => u16::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    };
    Ok(Pg83Summary {
        id_serial: id_serial_from_properties(&props),
        target_port_group: num("SCSI_IDENT_PORT_TARGET_PORT_GROUP"),
        relative_port: num("SCSI_IDENT_PORT_RELATIVE"),
        problem,
    })
}

/// Decodes a `vpd_pg80` file (Unit Serial Number): the serial number cleaned like sg_inq does
/// (`SCSI_IDENT_SERIAL`), or None when it is empty.
pub fn decode_pg80(page: &[u8]) -> Result<(Option<String>, Option<String>), String> {
    let (body, problem) = payload(page, 0x80)?;
    let e = encode_whitespaces(body);
    if e.is_empty() {
        return Ok((None, problem));
    }
    Ok((Some(String::from_utf8_lossy(&e).into_owned()), problem))
}

/// Builds a VPD 0x83 page from designators (used by the fixture generator and tests).
pub fn build_pg83(designators: &[Designator]) -> Vec<u8> {
    let mut body = Vec::new();
    for d in designators {
        body.push((d.protocol_id << 4) | (d.code_set & 0xf));
        body.push(
            (if d.piv { 0x80 } else { 0 }) | ((d.association & 3) << 4) | (d.designator_type & 0xf),
        );
        body.push(0);
        let len = d.value.len().min(255);
        body.push(len as u8);
        body.extend_from_slice(&d.value[..len]);
    }
    let mut page = vec![0, 0x83, (body.len() >> 8) as u8, (body.len() & 0xff) as u8];
    page.extend(body);
    page
}

/// Builds a VPD 0x80 page for `serial`.
pub fn build_pg80(serial: &str) -> Vec<u8> {
    let b = serial.as_bytes();
    let len = b.len().min(0xffff);
    let mut page = vec![0, 0x80, (len >> 8) as u8, (len & 0xff) as u8];
    page.extend_from_slice(&b[..len]);
    page
}

/// Convenience constructors for designators.
impl Designator {
    fn new(code_set: u8, association: u8, designator_type: u8, value: Vec<u8>) -> Self {
        Designator {
            protocol_id: 0,
            code_set,
            piv: false,
            association,
            designator_type,
            value,
        }
    }
    /// T10 vendor id: vendor padded to 8 bytes followed by the vendor-specific text.
    pub fn t10(vendor: &str, rest: &str) -> Self {
        let mut v = format!("{vendor:<8}").into_bytes();
        v.truncate(8);
        v.extend_from_slice(rest.as_bytes());
        Designator::new(2, 0, 1, v)
    }
    /// NAA designator (logical unit) from its bytes.
    pub fn naa(bytes: &[u8]) -> Self {
        Designator::new(1, 0, 3, bytes.to_vec())
    }
    /// EUI-64 designator (logical unit).
    pub fn eui64(bytes: &[u8]) -> Self {
        Designator::new(1, 0, 2, bytes.to_vec())
    }
    /// SCSI name string (logical unit), NUL-padded to a multiple of 4 as SPC requires.
    pub fn name(name: &str, association: u8) -> Self {
        let mut v = name.as_bytes().to_vec();
        v.push(0);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        Designator::new(3, association, 8, v)
    }
    /// Relative target port (association: target port).
    pub fn relative_port(port: u16) -> Self {
        let mut d = Designator::new(1, 1, 4, vec![0, 0, (port >> 8) as u8, port as u8]);
        d.piv = true;
        d
    }
    /// Target port group (association: target port).
    pub fn target_port_group(group: u16) -> Self {
        let mut d = Designator::new(1, 1, 5, vec![0, 0, (group >> 8) as u8, group as u8]);
        d.piv = true;
        d
    }
    /// Vendor-specific designator (logical unit).
    pub fn vendor_specific(code_set: u8, value: &[u8]) -> Self {
        Designator::new(code_set, 0, 0, value.to_vec())
    }
    /// Returns the designator with another association.
    pub fn with_association(mut self, association: u8) -> Self {
        self.association = association;
        self
    }
}

/// Parses a hex string ("60014055d1b3...") into bytes.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_start_matches("0x");
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(ds: &[Designator]) -> Option<String> {
        decode_pg83(&build_pg83(ds)).unwrap().id_serial
    }

    #[test]
    fn reference_scsi_debug_page_gives_t10_id() {
        let page = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/ref-sd2x2-tcmloop2/sys/devices/pseudo_0/adapter0/host0/target0:0:0/0:0:0:0/vpd_pg83"
        ))
        .unwrap();
        let s = decode_pg83(&page).unwrap();
        assert_eq!(s.id_serial.as_deref(), Some("1Linux_scsi_debug_2000"));
        assert_eq!(s.relative_port, Some(1));
        assert_eq!(s.target_port_group, Some(0x100));
        assert_eq!(s.problem, None);
    }

    #[test]
    fn reference_lio_page_gives_naa6() {
        let page = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/ref-sd2x2-tcmloop2/sys/devices/tcm_loop_0/tcm_loop_adapter_0/host2/target2:0:1/2:0:1:0/vpd_pg83"
        ))
        .unwrap();
        let s = decode_pg83(&page).unwrap();
        assert_eq!(
            s.id_serial.as_deref(),
            Some("360014055d1b3c7a0e2f4b8a9c612f3e4")
        );
        assert_eq!(s.relative_port, Some(1));
        assert_eq!(s.target_port_group, Some(0));
    }

    #[test]
    fn naa_kinds_and_priority() {
        let regext = parse_hex("60014055d1b3c7a0e2f4b8a9c612f3e4").unwrap();
        let reg = parse_hex("5000c5006642f522").unwrap();
        let ext = parse_hex("2000000011112222").unwrap();
        let local = parse_hex("3333330000007d0a").unwrap();
        assert_eq!(
            serial(&[Designator::naa(&reg), Designator::naa(&regext)]).as_deref(),
            Some("360014055d1b3c7a0e2f4b8a9c612f3e4")
        );
        assert_eq!(
            serial(&[Designator::naa(&ext), Designator::naa(&reg)]).as_deref(),
            Some("35000c5006642f522")
        );
        assert_eq!(
            serial(&[Designator::naa(&ext)]).as_deref(),
            Some("32000000011112222")
        );
        // NAA local is skipped; nothing else -> no ID.
        assert_eq!(serial(&[Designator::naa(&local)]), None);
        // NAA beats EUI-64, name and T10.
        assert_eq!(
            serial(&[
                Designator::t10("HITACHI", "D60095920137"),
                Designator::name("naa.600a0b80", 0),
                Designator::eui64(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]),
                Designator::naa(&reg),
            ])
            .as_deref(),
            Some("35000c5006642f522")
        );
    }

    #[test]
    fn eui_name_t10_order() {
        let eui = Designator::eui64(&[0x00, 0x25, 0x38, 0x5a, 0x71, 0xb0, 0x11, 0x22]);
        let name = Designator::name("iqn.2001-04.com.example:disk1", 0);
        let t10 = Designator::t10("HITACHI", "D60095920137");
        assert_eq!(
            serial(&[t10.clone(), name.clone(), eui]).as_deref(),
            Some("20025385a71b01122")
        );
        assert_eq!(
            serial(&[t10.clone(), name]).as_deref(),
            Some("8iqn.2001-04.com.example:disk1")
        );
        assert_eq!(serial(&[t10]).as_deref(), Some("1HITACHI_D60095920137"));
    }

    #[test]
    fn non_lun_designators_do_not_count() {
        let reg = parse_hex("5000c5006642f522").unwrap();
        assert_eq!(serial(&[Designator::naa(&reg).with_association(1)]), None);
        assert_eq!(serial(&[Designator::name("naa.5000", 2)]), None);
        // Target-port NAA plus LUN T10: T10 wins.
        assert_eq!(
            serial(&[
                Designator::naa(&reg).with_association(1),
                Designator::t10("Linux", "scsi_debug      2000"),
            ])
            .as_deref(),
            Some("1Linux_scsi_debug_2000")
        );
    }

    #[test]
    fn t10_text_cleaning() {
        // Runs of blanks -> one '_', trailing blanks and NULs dropped, leading blanks dropped.
        assert_eq!(
            serial(&[Designator::t10("IBM", "  2145  \t 0200\0\0  \0")]).as_deref(),
            Some("1IBM_2145_0200")
        );
        // '_' followed by blanks gives no double underscore.
        assert_eq!(
            serial(&[Designator::t10("A_", "B")]).as_deref(),
            Some("1A_B")
        );
        // Characters outside udev's safe set are \x-encoded; non-printables become '.'.
        assert_eq!(
            serial(&[Designator::t10("ACME", "a/b\u{1}c")]).as_deref(),
            Some("1ACME_a\\x2fb.c")
        );
        // A single NUL is skipped, two end the string.
        assert_eq!(
            serial(&[Designator::t10("ACME", "ab\0cd\0\0ef")]).as_deref(),
            Some("1ACME_abcd")
        );
        // All blanks: empty T10, no ID.
        assert_eq!(serial(&[Designator::t10("", "    ")]), None);
        // Binary code set: hex.
        let mut d = Designator::t10("ACME", "x");
        d.code_set = 1;
        assert_eq!(serial(&[d]).as_deref(), Some("141434d452020202078"));
    }

    #[test]
    fn ata_t10_gives_ata_serial_without_prefix() {
        let reg = parse_hex("5000c5006642f522").unwrap();
        assert_eq!(
            serial(&[
                Designator::t10("ATA", "ST500DM002-1BD142                       Z6E0K57T"),
                Designator::naa(&reg),
            ])
            .as_deref(),
            Some("ST500DM002-1BD142_Z6E0K57T")
        );
    }

    #[test]
    fn wrong_code_sets_are_ignored() {
        let mut naa = Designator::naa(&parse_hex("5000c5006642f522").unwrap());
        naa.code_set = 2;
        let mut name = Designator::name("naa.5000", 0);
        name.code_set = 2;
        let mut eui = Designator::eui64(&[1, 2, 3, 4, 5, 6, 7, 8]);
        eui.code_set = 3;
        assert_eq!(serial(&[naa, name, eui]), None);
    }

    #[test]
    fn later_duplicate_replaces_earlier() {
        let a = parse_hex("5000000000000001").unwrap();
        let b = parse_hex("5000000000000002").unwrap();
        assert_eq!(
            serial(&[Designator::naa(&a), Designator::naa(&b)]).as_deref(),
            Some("35000000000000002")
        );
    }

    #[test]
    fn vendor_specific_and_port_designators_are_exported() {
        let page = build_pg83(&[
            Designator::vendor_specific(2, b" abc def "),
            Designator::relative_port(3),
            Designator::target_port_group(0x11),
        ]);
        let (p, problem) = export_properties(&page).unwrap();
        assert_eq!(problem, None);
        assert_eq!(p["SCSI_IDENT_LUN_VENDOR"], "abc_def");
        assert_eq!(p["SCSI_IDENT_PORT_RELATIVE"], "3");
        assert_eq!(p["SCSI_IDENT_PORT_TARGET_PORT_GROUP"], "0x11");
        // vendor specific is not used for ID_SERIAL by default
        assert_eq!(id_serial_from_properties(&p), None);
        let s = decode_pg83(&page).unwrap();
        assert_eq!(
            (s.relative_port, s.target_port_group),
            (Some(3), Some(0x11))
        );
    }

    #[test]
    fn reserved_association_stops_decoding() {
        let reg = parse_hex("5000c5006642f522").unwrap();
        assert_eq!(
            serial(&[
                Designator::t10("X", "Y").with_association(3),
                Designator::naa(&reg)
            ]),
            None
        );
    }

    #[test]
    fn truncated_pages() {
        let reg = parse_hex("5000c5006642f522").unwrap();
        let full = build_pg83(&[
            Designator::t10("HITACHI", "D60095920137"),
            Designator::naa(&reg),
        ]);
        // Cut inside the NAA designator: the T10 id still counts, a problem is reported.
        let cut = &full[..full.len() - 3];
        let s = decode_pg83(cut).unwrap();
        assert_eq!(s.id_serial.as_deref(), Some("1HITACHI_D60095920137"));
        assert!(s.problem.unwrap().contains("truncated"));
        // Declared length shorter than the designator: the designator runs past the end.
        let mut bad = full.clone();
        bad[3] = 6;
        let s = decode_pg83(&bad).unwrap();
        assert_eq!(s.id_serial, None);
        assert!(s.problem.unwrap().contains("declares"));
        // Too short for a header, wrong page code.
        assert!(decode_pg83(&[0, 0x83]).is_err());
        assert!(decode_pg83(&[0, 0x80, 0, 0]).is_err());
        // Empty page: no ID, no problem.
        assert_eq!(
            decode_pg83(&[0, 0x83, 0, 0]).unwrap(),
            Pg83Summary::default()
        );
    }

    #[test]
    fn pre_spc_page_is_one_naa() {
        // byte 2 of the first "designator" non-zero: whole payload is NAA hex.
        let page = [0u8, 0x83, 0, 8, 0x60, 0x06, 0x04, 0x80, 1, 2, 3, 4];
        assert_eq!(
            decode_pg83(&page).unwrap().id_serial.as_deref(),
            Some("36006048001020304")
        );
    }

    #[test]
    fn pg80_serial() {
        assert_eq!(
            decode_pg80(&build_pg80("  ABC 123 \0"))
                .unwrap()
                .0
                .as_deref(),
            Some("ABC_123")
        );
        assert_eq!(decode_pg80(&build_pg80("   ")).unwrap().0, None);
        assert!(decode_pg80(&[0, 0x83, 0, 0]).is_err());
        let (s, p) = decode_pg80(&[0, 0x80, 0, 9, b'A']).unwrap();
        assert_eq!(s.as_deref(), Some("A"));
        assert!(p.is_some());
    }

    #[test]
    fn uuid_designator() {
        let mut v = vec![0x10, 0];
        v.extend(1u8..=16);
        let page = build_pg83(&[Designator::vendor_specific(1, &[]), {
            let mut d = Designator::naa(&v);
            d.designator_type = 0xa;
            d
        }]);
        let (p, _) = export_properties(&page).unwrap();
        assert_eq!(
            p["SCSI_IDENT_LUN_UUID"],
            "01020304-0506-0708-090a-0b0c0d0e0f10"
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = decode_pg83(&data);
            let _ = decode_pg80(&data);
            let mut page = vec![0u8, 0x83, (data.len() >> 8) as u8, data.len() as u8];
            page.extend(&data);
            let _ = decode_pg83(&page);
        }

        #[test]
        fn naa6_always_decodes(bytes in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let mut b = bytes;
            b[0] = 0x60 | (b[0] & 0xf);
            let s = decode_pg83(&build_pg83(&[Designator::naa(&b)])).unwrap().id_serial.unwrap();
            proptest::prop_assert_eq!(s, format!("3{}", hex(&b)));
        }
    }
}
