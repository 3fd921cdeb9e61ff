//! CoRE link-format (RFC 6690) as LwM2M uses it: Register/Update object lists and Discover
//! responses.
//!
//! [`parse`] follows the RFC grammar (targets in `<...>`, `;`-separated parameters, quoted values
//! that may hold `,` and `;`, bare parameters) and tolerates whitespace around links and
//! separators, because real clients put spaces after commas. Everything is bounded by
//! [`MAX_LINK_FORMAT_SIZE`] and returns `Err` instead of guessing.
//!
//! [`parse_registration`] turns a Register/Update payload into what EMQX publishes (alternate path,
//! object list) plus what the gateway itself needs (content formats, per-object versions).
//! Decisions where EMQX is silent or does something odd:
//! - `objectList` keeps every non-root link the way EMQX does, even ones that are not LwM2M paths
//!   (`/lwm2m/1/0` when the alternate path is `/`), so MQTT consumers see EMQX's list;
//!   [`RegisteredObjects::objects`] gives the subset that are real object/instance paths.
//! - A payload that breaks the grammar is an `Err` (the gateway answers 4.00). Unlike EMQX a bare
//!   parameter (`;obs`) is accepted: it is valid RFC 6690.
//! - `</>` without `rt="oma.lwm2m"` is treated as the root link (its `ct=` is used) and is not an
//!   object, instead of showing up as `"/"` in the object list.
//! - The alternate-path prefix is stripped only at a segment boundary (`/lwm2m/1` but not
//!   `/lwm2mx/1`); EMQX strips bytes.
//! - `ct=110,112` (unquoted, comma-separated, seen in the wild and in LwM2M examples) is read as one
//!   list, not as links `112`...; the RFC 7252 spelling `ct="110 112"` works too.
//! - A `ver=` that is not `major.minor` is ignored rather than failing the registration.

use std::fmt::Write as _;

use super::Path;

/// Largest payload [`parse`] accepts. Registration payloads of real devices are a few hundred
/// bytes; 64 KiB leaves room for big gateways-behind-gateways without letting one datagram
/// reassembly buffer turn into unbounded work.
pub const MAX_LINK_FORMAT_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("malformed link-format: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    /// Target without the angle brackets, e.g. `/3/0`.
    pub target: String,
    /// Attributes in order; the value keeps its quotes stripped; `None` for a bare attribute.
    pub attrs: Vec<(String, Option<String>)>,
}

impl Link {
    pub fn new(target: impl Into<String>) -> Link {
        Link {
            target: target.into(),
            attrs: Vec::new(),
        }
    }

    /// Value of the first attribute called `name` (`Some(None)` for a bare one).
    pub fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
    }

    /// True when `rt` lists `oma.lwm2m` (the RFC allows a space-separated list of types).
    fn is_lwm2m_root(&self) -> bool {
        self.attrs.iter().any(|(n, v)| {
            n == "rt"
                && v.as_deref()
                    .is_some_and(|v| v.split(' ').any(|t| t == "oma.lwm2m"))
        })
    }
}

fn malformed(pos: usize, what: &str) -> LinkError {
    LinkError::Malformed(format!("{what} at byte {pos}"))
}

/// Parses a link-format document. The empty string is an empty list.
pub fn parse(s: &str) -> Result<Vec<Link>, LinkError> {
    Parser::new(s, false)?.links()
}

/// Parameter names: RFC 6690 `parmname`, plus `*` for RFC 8187 extended names (`title*`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&+-.^_`|~*".contains(c)
}

/// RFC 6690 `ptokenchar`: what an unquoted value may hold.
fn is_ptoken_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(c)
}

/// Anything printable except what would end or confuse the `<...>` target.
fn is_target_char(c: char) -> bool {
    !(c.is_control() || c.is_whitespace() || c == '<' || c == '>' || c == '"')
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    /// Accept `ct=110,112` by folding bare numbers after a `ct` value into that value.
    ct_lists: bool,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str, ct_lists: bool) -> Result<Parser<'a>, LinkError> {
        if s.len() > MAX_LINK_FORMAT_SIZE {
            return Err(LinkError::Malformed(format!(
                "{} bytes is more than the {MAX_LINK_FORMAT_SIZE} allowed",
                s.len()
            )));
        }
        Ok(Parser {
            s,
            pos: 0,
            ct_lists,
        })
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn links(mut self) -> Result<Vec<Link>, LinkError> {
        let mut links: Vec<Link> = Vec::new();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(links);
        }
        loop {
            links.push(self.link()?);
            loop {
                self.skip_ws();
                match self.bump() {
                    None => return Ok(links),
                    Some(',') => {}
                    Some(_) => return Err(malformed(self.pos - 1, "expected ',' or ';'")),
                }
                self.skip_ws();
                let continues_ct = self.ct_lists && self.peek().is_some_and(|c| c.is_ascii_digit());
                match links.last_mut().and_then(trailing_ct_value) {
                    Some(ct) if continues_ct => {
                        ct.push(',');
                        ct.push_str(self.take_while(|c| c.is_ascii_digit()));
                    }
                    _ => break,
                }
            }
            if self.peek().is_none() {
                return Err(malformed(self.pos, "trailing ','"));
            }
        }
    }

    fn link(&mut self) -> Result<Link, LinkError> {
        if self.bump() != Some('<') {
            return Err(malformed(self.pos.saturating_sub(1), "expected '<'"));
        }
        let target = self.take_while(is_target_char).to_string();
        if self.bump() != Some('>') {
            return Err(malformed(
                self.pos.saturating_sub(1),
                "unterminated or invalid link target",
            ));
        }
        let mut link = Link {
            target,
            attrs: Vec::new(),
        };
        loop {
            self.skip_ws();
            if self.peek() != Some(';') {
                return Ok(link);
            }
            self.bump();
            self.skip_ws();
            let name = self.take_while(is_name_char);
            if name.is_empty() {
                return Err(malformed(self.pos, "expected a parameter name"));
            }
            let name = name.to_string();
            self.skip_ws();
            if self.peek() != Some('=') {
                link.attrs.push((name, None));
                continue;
            }
            self.bump();
            self.skip_ws();
            let value = if self.peek() == Some('"') {
                self.quoted()?
            } else {
                let v = self.take_while(is_ptoken_char);
                if v.is_empty() {
                    return Err(malformed(self.pos, "empty parameter value"));
                }
                v.to_string()
            };
            link.attrs.push((name, Some(value)));
        }
    }

    /// A quoted-string with `\` escapes; the opening quote is at `self.pos`.
    fn quoted(&mut self) -> Result<String, LinkError> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(malformed(start, "unterminated quoted string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => return Err(malformed(start, "unterminated quoted string")),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// The value of `link`'s last attribute when it is `ct=` with a value, the only place a bare
/// number after a comma can belong to.
fn trailing_ct_value(link: &mut Link) -> Option<&mut String> {
    match link.attrs.last_mut() {
        Some((name, Some(value))) if name == "ct" => Some(value),
        _ => None,
    }
}

/// Writes links back in link-format. `rt`, `if`, `title` and `anchor` are always quoted (the RFC
/// grammar wants quoted-strings there), any other value only when it is not a plain token.
pub fn emit(links: &[Link]) -> String {
    let mut out = String::new();
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "<{}>", link.target);
        for (name, value) in &link.attrs {
            out.push(';');
            out.push_str(name);
            let Some(value) = value else { continue };
            out.push('=');
            let quote = matches!(name.as_str(), "rt" | "if" | "title" | "anchor")
                || value.is_empty()
                || !value.chars().all(is_ptoken_char);
            if quote {
                out.push('"');
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else {
                out.push_str(value);
            }
        }
    }
    out
}

/// What a Register/Update payload says about the device.
///
/// Kept for every registered device, so it is stored compactly: the alternate path and the
/// object-list entries back to back in one string, the rest in boxed slices (no capacity slack,
/// no allocation when empty). A million devices each with a handful of links make this one of the
/// gateway's largest per-device costs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegisteredObjects {
    /// The alternate path, then every object-list entry.
    text: Box<str>,
    /// End offset in `text` of the alternate path (index 0) and of each object-list entry.
    ends: Box<[u32]>,
    content_formats: Box<[u16]>,
    versions: Box<[(u16, Box<str>)]>,
}

impl RegisteredObjects {
    fn piece(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        // Offsets were taken at char boundaries while building `text`.
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// `"/"` unless a link carries `rt="oma.lwm2m"`.
    pub fn alternate_path(&self) -> &str {
        if self.ends.is_empty() {
            "/"
        } else {
            self.piece(0)
        }
    }

    /// Object/instance links, alternate path stripped (EMQX `objectList`), e.g. `"/3/0"`.
    pub fn object_list(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (1..self.ends.len().max(1)).map(|i| self.piece(i))
    }

    /// `ct=` of the root (`</>` or alternate path) link.
    pub fn content_formats(&self) -> &[u16] {
        &self.content_formats
    }

    /// `ver=` per object id.
    pub fn versions(&self) -> &[(u16, Box<str>)] {
        &self.versions
    }

    /// Entries of `object_list` that are LwM2M object or object-instance paths.
    pub fn objects(&self) -> Vec<Path> {
        self.object_list()
            .filter(|s| s.starts_with('/'))
            .filter_map(|s| Path::parse(s).ok())
            .filter(|p| matches!(p.len(), 1 | 2))
            .collect()
    }

    /// The version the device announced for `object`, if any.
    pub fn version(&self, object: u16) -> Option<&str> {
        find_version(&self.versions, object)
    }
}

fn find_version(versions: &[(u16, Box<str>)], object: u16) -> Option<&str> {
    versions
        .iter()
        .find(|(id, _)| *id == object)
        .map(|(_, v)| &**v)
}

/// Parses a Register/Update payload (see the module notes for the object-list rules).
pub fn parse_registration(payload: &str) -> Result<RegisteredObjects, LinkError> {
    let links = Parser::new(payload, true)?.links()?;
    let mut alternate_path = "/".to_string();
    let mut content_formats = Vec::new();
    let mut versions: Vec<(u16, Box<str>)> = Vec::new();

    let root = links
        .iter()
        .position(Link::is_lwm2m_root)
        .or_else(|| links.iter().position(|l| l.target == "/"));
    if let Some(root) = root.map(|i| &links[i]) {
        if root.is_lwm2m_root() {
            if !root.target.starts_with('/') {
                return Err(LinkError::Malformed(format!(
                    "alternate path {:?} does not start with '/'",
                    root.target
                )));
            }
            let trimmed = root.target.trim_end_matches('/');
            alternate_path = if trimmed.is_empty() {
                "/".to_string()
            } else {
                trimmed.to_string()
            };
        }
        for (name, value) in &root.attrs {
            if name != "ct" {
                continue;
            }
            let Some(value) = value else { continue };
            for token in value.split([' ', ',']).filter(|t| !t.is_empty()) {
                let cf = token.parse::<u16>().map_err(|_| {
                    LinkError::Malformed(format!(
                        "ct value {token:?} is not a content-format number"
                    ))
                })?;
                if !content_formats.contains(&cf) {
                    content_formats.push(cf);
                }
            }
        }
    }

    let mut text = String::with_capacity(payload.len());
    text.push_str(&alternate_path);
    let mut ends = Vec::with_capacity(links.len() + 1);
    // The payload is at most MAX_LINK_FORMAT_SIZE bytes, so every offset fits a u32.
    ends.push(text.len() as u32);
    for link in &links {
        if link.is_lwm2m_root() || link.target == "/" {
            continue;
        }
        let target = strip_alternate_path(&link.target, &alternate_path);
        if target.is_empty() {
            // The alternate path itself listed again without `rt`: not an object.
            continue;
        }
        if let Some(Some(ver)) = link.attr("ver") {
            let object = Path::parse(target)
                .ok()
                .filter(|p| target.starts_with('/') && !p.is_root());
            if let (Some(object), true) = (object.and_then(|p| p.object()), is_version(ver)) {
                if find_version(&versions, object).is_none() {
                    versions.push((object, ver.into()));
                }
            }
        }
        text.push_str(target);
        ends.push(text.len() as u32);
    }
    Ok(RegisteredObjects {
        text: text.into_boxed_str(),
        ends: ends.into_boxed_slice(),
        content_formats: content_formats.into_boxed_slice(),
        versions: versions.into_boxed_slice(),
    })
}

fn strip_alternate_path<'a>(target: &'a str, alternate: &str) -> &'a str {
    if alternate == "/" {
        return target;
    }
    match target.strip_prefix(alternate) {
        Some(rest) if rest.is_empty() || rest == "/" => "",
        Some(rest) if rest.starts_with('/') => rest,
        _ => target,
    }
}

fn is_version(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    v.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// Splits a Discover response into link strings on every comma outside quotes and `<...>`, as
/// EMQX 5.x does for the MQTT `content` array (EMQX also splits inside quotes; a quoted comma is
/// part of its value, so this does not). Pieces are trimmed and empty ones dropped.
pub fn discover_links(payload: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_target = false;
    let mut escaped = false;
    // `<` opens a target only as the first character of a link; elsewhere it is value text.
    let mut at_link_start = true;
    for (i, c) in payload.char_indices() {
        if in_quotes {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        if in_target {
            in_target = c != '>';
            continue;
        }
        match c {
            ',' => {
                push_trimmed(&mut out, &payload[start..i]);
                start = i + 1;
                at_link_start = true;
                continue;
            }
            '<' if at_link_start => in_target = true,
            '"' => in_quotes = true,
            _ => {}
        }
        if !is_ws(c) {
            at_link_start = false;
        }
    }
    push_trimmed(&mut out, &payload[start..]);
    out
}

fn push_trimmed(out: &mut Vec<String>, piece: &str) {
    let piece = piece.trim_matches(is_ws);
    if !piece.is_empty() {
        out.push(piece.to_string());
    }
}

impl crate::persist::wire::Durable for RegisteredObjects {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.str(&self.text);
        w.list(&self.ends, |w, e| w.uint(u64::from(*e)));
        w.list(&self.content_formats, |w, c| w.uint(u64::from(*c)));
        w.list(&self.versions, |w, (o, v)| {
            w.uint(u64::from(*o));
            w.str(v);
        });
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<RegisteredObjects> {
        let text: Box<str> = r.str()?.into();
        let ends = r.list(|r| r.u32())?;
        // Offsets in order, inside the text, at character boundaries: as parsing made them.
        let mut last = 0u32;
        for e in &ends {
            if *e < last || !text.is_char_boundary(*e as usize) {
                return None;
            }
            last = *e;
        }
        let content_formats = r.list(|r| r.u16())?;
        let versions = r.list(|r| Some((r.u16()?, Box::<str>::from(r.str()?))))?;
        Some(RegisteredObjects {
            text,
            ends: ends.into(),
            content_formats: content_formats.into(),
            versions: versions.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link(target: &str, attrs: &[(&str, Option<&str>)]) -> Link {
        Link {
            target: target.into(),
            attrs: attrs
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect(),
        }
    }

    fn list(r: &RegisteredObjects) -> Vec<&str> {
        r.object_list().collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_rfc6690_examples() {
        let links = parse(r#"</sensors/temp>;rt="temperature-c";if="sensor", </sensors/light>;rt="light-lux";if="sensor""#).unwrap();
        assert_eq!(
            links,
            [
                link(
                    "/sensors/temp",
                    &[("rt", Some("temperature-c")), ("if", Some("sensor"))]
                ),
                link(
                    "/sensors/light",
                    &[("rt", Some("light-lux")), ("if", Some("sensor"))]
                ),
            ]
        );
        let links =
            parse(r#"</t>;anchor="/sensors/temp";rel="alternate";title="a, b; c \"q\"""#).unwrap();
        assert_eq!(links[0].attr("title"), Some(Some(r#"a, b; c "q""#)));
        assert_eq!(links[0].attr("rel"), Some(Some("alternate")));
    }

    #[test]
    fn bare_attributes_and_whitespace() {
        let links = parse(" \r\n</3/0/1>;obs ; pmin = 10 ,\n\t</3/0/2>;dim=2 \n").unwrap();
        assert_eq!(
            links[0],
            link("/3/0/1", &[("obs", None), ("pmin", Some("10"))])
        );
        assert_eq!(links[1], link("/3/0/2", &[("dim", Some("2"))]));
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("  ").unwrap(), []);
        assert_eq!(parse("<>").unwrap(), [Link::new("")]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "/3/0",
            "<3/0",
            "</3/0>,",
            "</3/0>,,</4>",
            ",</3/0>",
            "</3/0>;",
            "</3/0>;=1",
            "</3/0>;a=",
            "</3/0>;a=\"x",
            "</3/0>;a=\"x\\",
            "</3/0> </4/0>",
            "</3 0>",
            "</3/0>;ct=110,112",
            "<<x>",
            "</3/0>x",
            "</3/0>;a=b\"c\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let big = format!("</1>{}", ";a=b".repeat(MAX_LINK_FORMAT_SIZE / 4));
        assert!(parse(&big).is_err());
        assert!(parse_registration(&big).is_err());
    }

    #[test]
    fn emits_canonical_text() {
        let links = [
            link("/", &[("rt", Some("oma.lwm2m")), ("ct", Some("110"))]),
            link("/1", &[("ver", Some("1.1"))]),
            link(
                "/3/0/1",
                &[
                    ("obs", None),
                    ("title", Some("a \"b\" \\ c")),
                    ("x", Some("")),
                ],
            ),
        ];
        let text = emit(&links);
        assert_eq!(
            text,
            r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</3/0/1>;obs;title="a \"b\" \\ c";x="""#
        );
        assert_eq!(parse(&text).unwrap(), links);
    }

    // EMQX object-list examples (emqx-lwm2m-api.md §4.2).
    #[test]
    fn emqx_example_plain_list() {
        let r = parse_registration("</1>, </2>, </3>, </4>, </5>").unwrap();
        assert_eq!(r.alternate_path(), "/");
        assert_eq!(list(&r), strings(&["/1", "/2", "/3", "/4", "/5"]));
        assert!(r.content_formats().is_empty() && r.versions().is_empty());
    }

    #[test]
    fn emqx_example_root_alternate_path_strips_nothing() {
        let r = parse_registration(
            r#"</>;rt="oma.lwm2m";ct=11543,</lwm2m/1/0>,</lwm2m/2/0>,</lwm2m/3/0>"#,
        )
        .unwrap();
        assert_eq!(r.alternate_path(), "/");
        assert_eq!(
            list(&r),
            strings(&["/lwm2m/1/0", "/lwm2m/2/0", "/lwm2m/3/0"])
        );
        assert_eq!(r.content_formats(), [11543]);
        assert!(r.objects().is_empty(), "none of these is an LwM2M path");
    }

    #[test]
    fn emqx_example_alternate_path_stripped() {
        let r = parse_registration(
            r#"</lwm2m>;rt="oma.lwm2m";ct=11543,</lwm2m/1/0>,</lwm2m/2/0>,</lwm2m/3/0>"#,
        )
        .unwrap();
        assert_eq!(r.alternate_path(), "/lwm2m");
        assert_eq!(list(&r), strings(&["/1/0", "/2/0", "/3/0"]));
        assert_eq!(r.content_formats(), [11543]);
    }

    #[test]
    fn emqx_example_links_without_prefix_kept() {
        let r =
            parse_registration(r#"</lwm2m>;rt="oma.lwm2m";ct=11543,</lwm2m/1/0>,</3/0>"#).unwrap();
        assert_eq!(r.alternate_path(), "/lwm2m");
        assert_eq!(list(&r), strings(&["/1/0", "/3/0"]));
    }

    // Register payloads captured from real clients (shared/testdata/real-clients).
    #[test]
    fn wakaama_register() {
        let r = parse_registration(r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>"#).unwrap();
        assert_eq!(r.alternate_path(), "/");
        assert_eq!(r.content_formats(), [110]);
        assert_eq!(r.versions(), [(1, "1.1".into()), (31024, "1.0".into())]);
        assert_eq!(
            list(&r),
            strings(&[
                "/1",
                "/1/0",
                "/2/0",
                "/3/0",
                "/4/0",
                "/5/0",
                "/6/0",
                "/7/0",
                "/31024",
                "/31024/10",
                "/31024/11",
                "/31024/12"
            ])
        );
        assert_eq!(r.objects().len(), 12);
        assert_eq!(r.version(1), Some("1.1"));
        assert_eq!(r.version(3), None);
    }

    #[test]
    fn wakaama_bootstrapped_register() {
        let r = parse_registration(r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/1>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>"#).unwrap();
        assert_eq!(list(&r)[..2], strings(&["/1", "/1/1"]));
    }

    #[test]
    fn anjay_register() {
        let r = parse_registration("</1/1>,</2>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</10>;ver=1.1,</10/0>,</11>,</16>,</19>,</20/0>,</3303/0>,</3313/0>,</3347/0>,</33605>,</33606/0>,</33607/0>,</33608>,</33609/0>").unwrap();
        assert_eq!(r.alternate_path(), "/");
        assert!(r.content_formats().is_empty());
        assert_eq!(r.versions(), [(10, "1.1".into())]);
        assert_eq!(list(&r).len(), 21);
        assert_eq!(list(&r)[0], "/1/1");
        assert_eq!(list(&r)[20], "/33609/0");
    }

    #[test]
    fn lwm2m_node_lib_register() {
        let r = parse_registration("</3/0>,</1/0>").unwrap();
        assert_eq!(r.alternate_path(), "/");
        assert_eq!(list(&r), strings(&["/3/0", "/1/0"]));
    }

    #[test]
    fn content_format_lists() {
        for payload in [
            r#"</>;rt="oma.lwm2m";ct="110 112",</1/0>"#,
            r#"</>;rt="oma.lwm2m";ct=110,112, </1/0>"#,
            r#"</>;rt="oma.lwm2m";ct=110;ct=112,</1/0>"#,
        ] {
            let r = parse_registration(payload).unwrap();
            assert_eq!(r.content_formats(), [110, 112], "{payload}");
            assert_eq!(list(&r), ["/1/0"], "{payload}");
        }
        // A root link without rt (minimal clients), with a trailing ct list.
        let r = parse_registration("</>;ct=110,112,11543").unwrap();
        assert_eq!(r.content_formats(), [110, 112, 11543]);
        assert!(list(&r).is_empty());
        assert!(parse_registration(r#"</>;rt="oma.lwm2m";ct="110 x",</1/0>"#).is_err());
        assert!(parse_registration(r#"</>;rt="oma.lwm2m";ct=70000,</1/0>"#).is_err());
        // A bare number is only a ct continuation right after a ct value.
        assert!(parse_registration("</1/0>;ver=1.1,112").is_err());
    }

    #[test]
    fn registration_edge_cases() {
        let r = parse_registration("").unwrap();
        assert_eq!((r.alternate_path(), list(&r).len()), ("/", 0));
        // Prefix only at a segment boundary; the alternate path itself is not an object.
        let r = parse_registration(
            r#"</lwm2m/>;rt="oma.lwm2m",</lwm2m>,</lwm2mx/1>,</lwm2m/3/0>;ver=1.1"#,
        )
        .unwrap();
        assert_eq!(r.alternate_path(), "/lwm2m");
        assert_eq!(list(&r), ["/lwm2mx/1", "/3/0"]);
        assert_eq!(r.versions(), [(3, "1.1".into())]);
        // Bare attributes are fine, bad versions ignored, first ver wins.
        let r = parse_registration("</3>;ver=x;obs,</1>;ver=1.1,</1/0>;ver=1.2").unwrap();
        assert_eq!(r.versions(), [(1, "1.1".into())]);
        // Unquoted rt is accepted too, as one of several resource types.
        let r = parse_registration(r#"</a>;rt=oma.lwm2m,</b>;rt="x oma.lwm2m",</a/3/0>"#).unwrap();
        assert_eq!(r.alternate_path(), "/a");
        assert_eq!(list(&r), ["/3/0"]);
        assert!(parse_registration(r#"<lwm2m>;rt="oma.lwm2m",</3/0>"#).is_err());
        assert!(parse_registration("</3/0>,garbage").is_err());
    }

    #[test]
    fn discover_splits_outside_quotes() {
        let payload = "</3/0>,</3/0/0>,</3/0/1>,</3/0/2>,</3/0/3>,</3/0/4>,</3/0/5>,</3/0/6>,</3/0/7>,</3/0/8>,</3/0/9>,</3/0/10>,</3/0/11>,</3/0/12>,</3/0/13>,</3/0/14>,</3/0/15>,</3/0/16>";
        let links = discover_links(payload);
        assert_eq!(links.len(), 18);
        assert_eq!(links[0], "</3/0>");
        assert_eq!(links[17], "</3/0/16>");
        assert_eq!(
            discover_links(r#"</3/0>;pmin=10;title="a,b\",c", </3/0/7>;dim=2,</x,y>,,"#),
            [
                r#"</3/0>;pmin=10;title="a,b\",c""#,
                "</3/0/7>;dim=2",
                "</x,y>"
            ]
        );
        assert!(discover_links("").is_empty());
    }

    fn arb_link() -> impl Strategy<Value = Link> {
        let target = "(/[a-z0-9._~%-]{0,6}){0,4}";
        let name = "[a-z][a-z0-9!#$&+.^_|~-]{0,5}";
        let value = prop_oneof![
            Just(None),
            "[ -~]{0,8}".prop_map(Some),
            "\\PC{0,6}".prop_map(Some)
        ];
        (target, proptest::collection::vec((name, value), 0..4))
            .prop_map(|(target, attrs)| Link { target, attrs })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
            let _ = parse_registration(&s);
            let _ = discover_links(&s);
        }

        #[test]
        fn parse_never_panics_on_link_shaped_text(s in "[<>/;,=\" a-z0-9\\\\]{0,80}") {
            let _ = parse(&s);
            let _ = parse_registration(&s);
        }

        #[test]
        fn emit_parse_round_trip(links in proptest::collection::vec(arb_link(), 0..6)) {
            let text = emit(&links);
            prop_assert_eq!(parse(&text).unwrap(), links.clone());
            prop_assert_eq!(discover_links(&text).len(), links.len());
        }
    }
}
