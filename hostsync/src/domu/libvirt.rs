//! libvirt domain XML: the `<name>` and every `<disk>` with its `<source dev|file=...>`,
//! `<target dev=...>`, `<readonly/>` and `<shareable/>`. A small reader of the XML subset
//! libvirt writes (elements, attributes in either quote, comments, the five predefined
//! entities), so hostsync needs no XML crate for it.

use super::{Access, DiskSpec};

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    /// Opening tag (false: closing tag).
    open: bool,
    /// `<x/>`.
    empty: bool,
    /// Text right after the tag, up to the next tag.
    text: String,
}

impl Element {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn tags(xml: &str) -> Result<Vec<Element>, String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("a comment is not closed")?;
            rest = &r[end + 3..];
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest.find('>').ok_or("a declaration is not closed")?;
            rest = &rest[end + 1..];
            continue;
        }
        // Find the tag's end outside quoted attribute values.
        let mut quote = None;
        let mut end = None;
        for (i, c) in rest.char_indices().skip(1) {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("a tag is not closed")?;
        let inner = &rest[1..end];
        rest = &rest[end + 1..];
        let text = unescape(rest.split('<').next().unwrap_or("").trim());
        let (open, inner) = match inner.strip_prefix('/') {
            Some(i) => (false, i),
            None => (true, inner),
        };
        let (empty, inner) = match inner.strip_suffix('/') {
            Some(i) => (true, i),
            None => (false, inner),
        };
        let inner = inner.trim();
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let name = inner[..name_end].to_string();
        let mut attrs = Vec::new();
        let mut a = inner[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .ok_or_else(|| format!("attribute without a value in <{name}>"))?;
            let key = a[..eq].trim().to_string();
            let v = a[eq + 1..].trim_start();
            let q = v
                .chars()
                .next()
                .filter(|c| *c == '\'' || *c == '"')
                .ok_or_else(|| format!("attribute {key} of <{name}> is not quoted"))?;
            let close = v[1..]
                .find(q)
                .ok_or_else(|| format!("attribute {key} of <{name}> is not closed"))?;
            attrs.push((key, unescape(&v[1..1 + close])));
            a = v[close + 2..].trim_start();
        }
        out.push(Element {
            name,
            attrs,
            open,
            empty,
            text,
        });
    }
    Ok(out)
}

/// The domain's name and its disks, in document order.
pub fn disks(xml: &str) -> Result<(Option<String>, Vec<DiskSpec>), String> {
    let tags = tags(xml)?;
    let mut name = None;
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur: Option<DiskSpec> = None;
    for t in &tags {
        if t.open && t.name == "name" && depth == 1 && cur.is_none() {
            name = Some(t.text.clone());
        }
        if t.open && t.name == "disk" {
            let ty = t.attr("type").unwrap_or("file");
            let device = t.attr("device").unwrap_or("disk");
            cur = Some(DiskSpec {
                spec: format!("<disk type='{ty}' device='{device}'>"),
                devtype: Some(device.to_string()),
                backendtype: Some(ty.to_string()),
                access: if device == "cdrom" {
                    Access::ReadOnly
                } else {
                    Access::ReadWrite
                },
                ..DiskSpec::default()
            });
        } else if let Some(d) = cur.as_mut() {
            if t.open {
                match t.name.as_str() {
                    "source" => {
                        d.target = t
                            .attr("dev")
                            .or(t.attr("file"))
                            .or(t.attr("volume"))
                            .map(str::to_string);
                        if t.attr("dev").is_none() && t.attr("file").is_none() {
                            d.notes.push("the source names no device or file".into());
                        }
                    }
                    "target" => d.vdev = t.attr("dev").map(str::to_string),
                    "driver" => d.format = t.attr("type").map(str::to_string),
                    "readonly" => d.access = Access::ReadOnly,
                    "shareable" => d.flags.push("shareable".into()),
                    _ => {}
                }
            }
            if !t.open
                && t.name == "disk"
                && let Some(d) = cur.take()
            {
                if d.vdev.is_none() {
                    return Err(format!("{} has no <target dev=...>", d.spec));
                }
                out.push(d);
            }
        }
        if t.open && !t.empty {
            depth += 1;
        } else if !t.open {
            depth = depth.saturating_sub(1);
        }
    }
    if cur.is_some() {
        return Err("a <disk> element is not closed".into());
    }
    Ok((name, out))
}
