//! MQTT topic templates: mountpoint + translator topic (plain concatenation, as EMQX), with the
//! placeholders `%e` / `${endpoint_name}` (endpoint name) and `%a` / `${peerhost}` (device IP).
//!
//! Uplink topics are rendered per message. The command topic becomes ONE wildcard subscription
//! (each level holding a placeholder turns into `+`), and the endpoint is read back out of the topic
//! of each incoming command; this keeps the broker's subscription table at one entry instead of one
//! per device.

use std::fmt::Write as _;
use std::net::IpAddr;

/// One MQTT topic template with its QoS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translator {
    pub topic: String,
    pub qos: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translators {
    pub command: Translator,
    pub response: Translator,
    pub notify: Translator,
    pub register: Translator,
    pub update: Translator,
    pub deregister: Translator,
}

impl Default for Translators {
    /// EMQX's defaults (with mountpoint `lwm2m/%e/`).
    fn default() -> Self {
        let t = |topic: &str| Translator {
            topic: topic.to_string(),
            qos: 1,
        };
        Translators {
            command: t("dn/#"),
            response: t("up/resp"),
            notify: t("up/notify"),
            register: t("up/resp"),
            update: t("up/resp"),
            deregister: t("up/resp"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Endpoint,
    PeerHost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    pub qos: u8,
}

fn parse_template(s: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (tok, len) = if rest.starts_with("%e") {
            (Some(Piece::Endpoint), 2)
        } else if rest.starts_with("%a") {
            (Some(Piece::PeerHost), 2)
        } else if rest.starts_with("${endpoint_name}") {
            (Some(Piece::Endpoint), "${endpoint_name}".len())
        } else if rest.starts_with("${peerhost}") {
            (Some(Piece::PeerHost), "${peerhost}".len())
        } else {
            (None, rest.chars().next().map_or(1, char::len_utf8))
        };
        match tok {
            Some(p) => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(p);
            }
            None => lit.push_str(&rest[..len]),
        }
        rest = &rest[len..];
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    pieces
}

/// Matches `topic` against `pieces`; the endpoint it holds, if the template has one (`Some(None)`:
/// it matches without one). A placeholder takes any non-empty text; the first split that lets the
/// rest match wins (topics are short).
fn match_pieces<'t>(pieces: &[Piece], topic: &'t str) -> Option<Option<&'t str>> {
    let Some((first, rest)) = pieces.split_first() else {
        return topic.is_empty().then_some(None);
    };
    match first {
        Piece::Lit(l) => match_pieces(rest, topic.strip_prefix(l.as_str())?),
        Piece::Endpoint | Piece::PeerHost => {
            let ends = topic.char_indices().map(|(i, _)| i).skip(1);
            for end in ends.chain(std::iter::once(topic.len())) {
                if let Some(found) = match_pieces(rest, &topic[end..]) {
                    return Some(match first {
                        Piece::Endpoint => Some(&topic[..end]),
                        _ => found,
                    });
                }
            }
            None
        }
    }
}

impl Template {
    /// The endpoint in `topic`, if this template renders `topic`.
    pub fn endpoint_in<'t>(&self, topic: &'t str) -> Option<&'t str> {
        match_pieces(&self.pieces, topic).flatten()
    }

    fn new(mountpoint: &str, t: &Translator) -> Template {
        Template {
            pieces: parse_template(&format!("{mountpoint}{}", t.topic)),
            qos: t.qos,
        }
    }

    pub fn render(&self, endpoint: &str, peerhost: &str) -> String {
        self.render_with(endpoint, |s| s.push_str(peerhost))
    }

    /// As [`Template::render`], formatting the device address only if the template uses it:
    /// sessions keep the address, not its text.
    /// `None` (no session to take it from) renders as an empty string.
    pub fn render_ip(&self, endpoint: &str, peerhost: Option<IpAddr>) -> String {
        self.render_with(endpoint, |s| {
            if let Some(ip) = peerhost {
                let _ = write!(s, "{ip}");
            }
        })
    }

    fn render_with(&self, endpoint: &str, mut host: impl FnMut(&mut String)) -> String {
        let mut s = String::with_capacity(64);
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => s.push_str(l),
                Piece::Endpoint => s.push_str(endpoint),
                Piece::PeerHost => host(&mut s),
            }
        }
        s
    }

    fn uses_peerhost(&self) -> bool {
        self.pieces.contains(&Piece::PeerHost)
    }
}

/// One level of the command topic template: literal text around at most one placeholder.
#[derive(Debug, Clone)]
enum Level {
    Exact(String),
    /// `+` or a level with `%a`: any value.
    Any,
    /// The level holding `%e`, with its literal prefix and suffix.
    Endpoint {
        prefix: String,
        suffix: String,
    },
    /// `#`: the rest.
    Rest,
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub response: Template,
    pub notify: Template,
    pub register: Template,
    pub update: Template,
    pub deregister: Template,
    /// The single subscription covering every device's command topic.
    pub command_filter: String,
    pub command_qos: u8,
    command_levels: Vec<Level>,
    /// Whether any uplink topic needs the device IP (saves formatting it otherwise).
    pub needs_peerhost: bool,
}

impl Topics {
    pub fn new(mountpoint: &str, tr: &Translators) -> Result<Topics, String> {
        let command = format!("{mountpoint}{}", tr.command.topic);
        let mut levels = Vec::new();
        let mut filter = Vec::new();
        let mut endpoint_levels = 0;
        for (i, level) in command.split('/').enumerate() {
            let pieces = parse_template(level);
            let n_ep = pieces.iter().filter(|p| **p == Piece::Endpoint).count();
            let n_ph = pieces.iter().filter(|p| **p == Piece::PeerHost).count();
            if level == "#" {
                if i != command.split('/').count() - 1 {
                    return Err(format!(
                        "command topic {command:?}: '#' must be the last level"
                    ));
                }
                levels.push(Level::Rest);
                filter.push("#".to_string());
            } else if level == "+" || n_ph > 0 {
                if n_ep > 0 {
                    return Err(format!("command topic {command:?}: %e and %a in one level"));
                }
                levels.push(Level::Any);
                filter.push("+".to_string());
            } else if n_ep == 1 {
                endpoint_levels += 1;
                let (mut prefix, mut suffix, mut seen) = (String::new(), String::new(), false);
                for p in pieces {
                    match p {
                        Piece::Lit(l) if !seen => prefix = l,
                        Piece::Lit(l) => suffix = l,
                        _ => seen = true,
                    }
                }
                levels.push(Level::Endpoint { prefix, suffix });
                filter.push("+".to_string());
            } else if n_ep > 1 {
                return Err(format!("command topic {command:?}: %e twice in one level"));
            } else {
                if level.contains('#') || level.contains('+') {
                    return Err(format!(
                        "command topic {command:?}: wildcard inside level {level:?}"
                    ));
                }
                levels.push(Level::Exact(level.to_string()));
                filter.push(level.to_string());
            }
        }
        if endpoint_levels != 1 {
            return Err(format!(
                "command topic {command:?} must contain the endpoint placeholder %e (or ${{endpoint_name}}) exactly once, \
                 otherwise commands cannot be told apart per device"
            ));
        }
        let t = |tr: &Translator| Template::new(mountpoint, tr);
        let (response, notify, register, update, deregister) = (
            t(&tr.response),
            t(&tr.notify),
            t(&tr.register),
            t(&tr.update),
            t(&tr.deregister),
        );
        let needs_peerhost = [&response, &notify, &register, &update, &deregister]
            .iter()
            .any(|t| t.uses_peerhost());
        Ok(Topics {
            response,
            notify,
            register,
            update,
            deregister,
            command_filter: filter.join("/"),
            command_qos: tr.command.qos,
            command_levels: levels,
            needs_peerhost,
        })
    }

    /// The endpoint an uplink topic (response, notify, register, update, deregister) is about.
    pub fn endpoint_of_uplink<'t>(&self, topic: &'t str) -> Option<&'t str> {
        [
            &self.response,
            &self.notify,
            &self.register,
            &self.update,
            &self.deregister,
        ]
        .iter()
        .find_map(|t| t.endpoint_in(topic))
    }

    /// The endpoint a command topic is addressed to, if the topic matches the command template.
    pub fn endpoint_of_command<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut ep = None;
        let mut parts = topic.split('/');
        for level in &self.command_levels {
            match level {
                Level::Rest => return ep.filter(|e: &&str| !e.is_empty()),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Exact(l) if l != part => return None,
                        Level::Endpoint { prefix, suffix } => {
                            let e = part
                                .strip_prefix(prefix.as_str())?
                                .strip_suffix(suffix.as_str())?;
                            ep = Some(e);
                        }
                        _ => {}
                    }
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        ep.filter(|e| !e.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(mount: &str, cmd: &str) -> Result<Topics, String> {
        let mut tr = Translators::default();
        tr.command.topic = cmd.into();
        Topics::new(mount, &tr)
    }

    #[test]
    fn emqx_defaults() {
        let t = topics("lwm2m/%e/", "dn/#").unwrap();
        assert_eq!(t.command_filter, "lwm2m/+/dn/#");
        assert_eq!(t.endpoint_of_command("lwm2m/ep1/dn"), Some("ep1"));
        assert_eq!(t.endpoint_of_command("lwm2m/ep1/dn/dm"), Some("ep1"));
        assert_eq!(t.endpoint_of_command("lwm2m/ep1/up"), None);
        assert_eq!(t.endpoint_of_command("other/ep1/dn"), None);
        assert_eq!(t.response.render("ep1", "1.2.3.4"), "lwm2m/ep1/up/resp");
        assert!(!t.needs_peerhost);
        assert_eq!(t.endpoint_of_uplink("lwm2m/ep1/up/resp"), Some("ep1"));
        assert_eq!(t.endpoint_of_uplink("lwm2m/a/b/up/notify"), Some("a/b"));
        assert_eq!(t.endpoint_of_uplink("lwm2m/ep1/dn"), None);
        assert_eq!(t.endpoint_of_uplink("lwm2m//up/resp"), None);
        let p = topics("gw/%a/%e/", "dn/#").unwrap();
        assert_eq!(
            p.endpoint_of_uplink(&p.notify.render("dév", "10.0.0.1")),
            Some("dév")
        );
    }

    #[test]
    fn both_placeholder_spellings_and_prefixes() {
        let t = topics("gw/${peerhost}/dev-${endpoint_name}/", "cmd").unwrap();
        assert_eq!(t.command_filter, "gw/+/+/cmd");
        assert_eq!(
            t.endpoint_of_command("gw/10.0.0.1/dev-abc/cmd"),
            Some("abc")
        );
        assert_eq!(t.endpoint_of_command("gw/10.0.0.1/abc/cmd"), None);
        assert_eq!(t.endpoint_of_command("gw/10.0.0.1/dev-abc/cmd/x"), None);
        assert_eq!(
            t.notify.render("abc", "10.0.0.1"),
            "gw/10.0.0.1/dev-abc/up/notify"
        );
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(
            t.notify.render_ip("abc", Some(ip)),
            "gw/10.0.0.1/dev-abc/up/notify"
        );
        assert!(t.needs_peerhost);
        // legacy spelling in the translator itself
        let t = topics("", "lwm2m/%e/dn/#").unwrap();
        assert_eq!(t.command_filter, "lwm2m/+/dn/#");
    }

    #[test]
    fn rejects_unroutable_command_topics() {
        assert!(topics("lwm2m/", "dn/#").unwrap_err().contains("%e"));
        assert!(topics("lwm2m/%e/%e/", "dn").is_err());
        assert!(topics("lwm2m/%e/", "dn/#/x").is_err());
        assert!(topics("lwm2m/%e%a/", "dn").is_err());
    }
}
