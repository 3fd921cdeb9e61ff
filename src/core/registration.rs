//! The LwM2M registration interface's parameters (TS Transport §6.2): parsing and validating the
//! Uri-Query of Register and Update, and the registration record kept per device.

use std::borrow::Cow;
use std::time::Duration;

use crate::coap::code;
use crate::core::peer::SecurityMode;
use crate::lwm2m::link_format::RegisteredObjects;

/// LwM2M versions this gateway registers. Anjay retries lower versions only after 4.12.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["1.0", "1.1", "1.2"];
pub const DEFAULT_LIFETIME: u32 = 86400;

/// Query keys never published on MQTT (EMQX master redacts these).
const SECRET_KEYS: [&str; 9] = [
    "password",
    "passwd",
    "passcode",
    "secret",
    "private_key",
    "access_token",
    "api_key",
    "jwt",
    "token",
];

/// Query parameters that [`Registration`] keeps in fields of their own.
pub fn is_standard(key: &str) -> bool {
    matches!(key, "ep" | "lt" | "lwm2m" | "b" | "sms")
}

/// The `lwm2m=` value as sent, as one of the strings [`check_version`] accepts.
pub fn version_sent(v: Option<&str>) -> Option<&'static str> {
    match v? {
        "1" => Some("1"),
        "1.0" => Some("1.0"),
        "1.1" => Some("1.1"),
        "1.2" => Some("1.2"),
        _ => None,
    }
}

/// A rejected Register/Update: the CoAP code to answer and a reason for the log/diagnostic payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u8,
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> Rejection {
    Rejection {
        code: code::BAD_REQUEST,
        reason: reason.into(),
    }
}

/// Parsed Uri-Query of a Register (all keys) or an Update (subset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegParams {
    pub endpoint: Option<String>,
    pub lifetime: Option<u32>,
    pub version: Option<String>,
    pub binding: Option<String>,
    pub sms: Option<String>,
    /// LwM2M 1.1 `Q` flag (queue mode), a key without value.
    pub queue_flag: bool,
    /// Every query parameter in arrival order (`Q` as `("Q", "")`), for the MQTT event.
    pub all: Vec<(String, String)>,
}

/// Validates an endpoint name: it becomes an MQTT topic level, so it must not be able to address
/// another device's topics.
pub fn check_endpoint(ep: &str) -> Result<(), Rejection> {
    if ep.is_empty() {
        return Err(bad("empty endpoint name"));
    }
    if ep.len() > 255 {
        return Err(bad("endpoint name longer than 255 bytes"));
    }
    if ep.bytes().any(|b| matches!(b, b'/' | b'+' | b'#' | 0)) {
        return Err(bad("endpoint name contains '/', '+', '#' or NUL"));
    }
    Ok(())
}

/// Parses Uri-Query options. `lifetime_range` bounds `lt`.
pub fn parse_query<'a>(
    queries: impl Iterator<Item = &'a [u8]>,
    lifetime_range: (u32, u32),
) -> Result<RegParams, Rejection> {
    let mut p = RegParams::default();
    for q in queries {
        let q = std::str::from_utf8(q).map_err(|_| bad("query parameter is not UTF-8"))?;
        let (k, v) = q.split_once('=').unwrap_or((q, ""));
        if k.is_empty() {
            return Err(bad("query parameter without a name"));
        }
        match k {
            "ep" => {
                check_endpoint(v)?;
                p.endpoint = Some(v.to_string());
            }
            "lt" => {
                let lt: u32 = v
                    .parse()
                    .map_err(|_| bad(format!("lifetime {v:?} is not a number")))?;
                if lt < lifetime_range.0 || lt > lifetime_range.1 {
                    return Err(bad(format!(
                        "lifetime {lt} outside [{}, {}]",
                        lifetime_range.0, lifetime_range.1
                    )));
                }
                p.lifetime = Some(lt);
            }
            "lwm2m" => p.version = Some(v.to_string()),
            "b" => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| matches!(b, b'U' | b'S' | b'Q' | b'T' | b'N'))
                {
                    return Err(bad(format!(
                        "binding {v:?} is not a combination of U, S, Q, T, N"
                    )));
                }
                p.binding = Some(v.to_string());
            }
            "sms" => p.sms = Some(v.to_string()),
            "Q" => {
                if !v.is_empty() {
                    return Err(bad("the Q parameter takes no value"));
                }
                p.queue_flag = true;
            }
            _ => {}
        }
        p.all.push((k.to_string(), v.to_string()));
    }
    Ok(p)
}

/// Normalises the `lwm2m=` version ("1" is what some 1.0 clients send); anything else is 4.12 so
/// that clients like Anjay fall back to a version we speak.
pub fn check_version(v: Option<&str>) -> Result<&'static str, Rejection> {
    match v {
        None | Some("1") | Some("1.0") => Ok("1.0"),
        Some("1.1") => Ok("1.1"),
        Some("1.2") => Ok("1.2"),
        Some(other) => Err(Rejection {
            code: code::PRECONDITION_FAILED,
            reason: format!("unsupported LwM2M version {other:?}"),
        }),
    }
}

/// Version strings a registration records, indexed by the `u8` codes it stores.
const VERSION_NAMES: [&str; 5] = ["", "1", "1.0", "1.1", "1.2"];

/// The code [`Registration`] stores for one of [`VERSION_NAMES`] (0 for none).
pub fn version_code(v: Option<&str>) -> u8 {
    v.and_then(|v| VERSION_NAMES.iter().position(|n| *n == v))
        .map_or(0, |i| i as u8)
}

/// A `b=` value, without an allocation for the bindings devices actually send.
fn binding_text(b: &str) -> Cow<'static, str> {
    const COMMON: [&str; 10] = ["U", "UQ", "S", "SQ", "US", "UQS", "N", "T", "Q", "UN"];
    match COMMON.iter().find(|c| **c == b) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(b.to_string()),
    }
}

/// The registration of one device as the MQTT side sees it.
///
/// One lives for every registered device, so it is laid out for size: boxed strings and slices
/// (no capacity slack), versions as one-byte codes, the binding without an allocation when it is
/// a common one, no allocation at all for absent or empty parts.
#[derive(Debug, Clone)]
pub struct Registration {
    pub endpoint: Box<str>,
    pub lifetime: u32,
    /// [`version_code`] of the negotiated version and of the `lwm2m=` parameter as the device
    /// sent it (`"1"` stays `"1"`, for the MQTT events; 0 when absent).
    version: u8,
    version_sent: u8,
    /// `b=` as sent; `None` when absent (the default `U` is not reported as if it had been sent).
    binding: Option<Cow<'static, str>>,
    pub sms: Option<Box<str>>,
    pub queue_mode: bool,
    /// The other query parameters (not ep, lt, lwm2m, b, sms, which have fields), in arrival order,
    /// merged with those of later Updates. Kept apart so that each registration stores its
    /// standard parameters once.
    pub params: Box<[(Box<str>, Box<str>)]>,
    /// `None` until a payload (object list) was received.
    pub objects: Option<RegisteredObjects>,
    /// How the device registered: plain or which DTLS mode (`"security"` in the events).
    pub security: SecurityMode,
}

impl Registration {
    /// A registration from a Register's parsed query (`version` already checked).
    pub fn new(
        endpoint: &str,
        lifetime: u32,
        version: &'static str,
        params: &RegParams,
        objects: Option<RegisteredObjects>,
    ) -> Registration {
        let binding = params.binding.as_deref().map(binding_text);
        let queue_mode = params.queue_flag || binding.as_deref().is_some_and(|b| b.contains('Q'));
        Registration {
            endpoint: endpoint.into(),
            lifetime,
            version: version_code(Some(version)),
            version_sent: version_code(version_sent(params.version.as_deref())),
            binding,
            sms: params.sms.as_deref().map(Box::from),
            queue_mode,
            params: params
                .all
                .iter()
                .filter(|(k, _)| !is_standard(k))
                .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
                .collect(),
            objects,
            security: SecurityMode::NoSec,
        }
    }

    /// The negotiated LwM2M version (`"1.0"`, `"1.1"` or `"1.2"`).
    pub fn version(&self) -> &'static str {
        VERSION_NAMES[self.version as usize]
    }

    /// The `lwm2m=` parameter as the device sent it.
    pub fn version_sent(&self) -> Option<&'static str> {
        Some(VERSION_NAMES[self.version_sent as usize]).filter(|v| !v.is_empty())
    }

    /// The binding in force (`U` unless the device sent `b=`).
    pub fn binding(&self) -> &str {
        self.binding.as_deref().unwrap_or("U")
    }

    pub fn lifetime_duration(&self) -> Duration {
        Duration::from_secs(self.lifetime as u64)
    }

    /// Merges an Update's parameters (TS: lt, b, sms, Q may change).
    pub fn apply_update(&mut self, u: &RegParams) {
        if let Some(lt) = u.lifetime {
            self.lifetime = lt;
        }
        if let Some(b) = &u.binding {
            self.binding = Some(binding_text(b));
        }
        if let Some(s) = &u.sms {
            self.sms = Some(s.as_str().into());
        }
        if u.queue_flag {
            self.queue_mode = true;
        }
        if u.binding.is_some() {
            self.queue_mode = self.binding().contains('Q')
                || self.params.iter().any(|(k, _)| &**k == "Q")
                || u.queue_flag;
        }
        let mut merged: Option<Vec<(Box<str>, Box<str>)>> = None;
        for (k, v) in u.all.iter().filter(|(k, _)| !is_standard(k)) {
            let current = match &mut merged {
                Some(m) => &mut m[..],
                None => &mut self.params[..],
            };
            if let Some(slot) = current.iter_mut().find(|(pk, _)| &**pk == k.as_str()) {
                slot.1 = v.as_str().into();
                continue;
            }
            // A key not seen before: the slice grows (rare; Updates mostly repeat keys).
            merged
                .get_or_insert_with(|| self.params.to_vec())
                .push((k.as_str().into(), v.as_str().into()));
        }
        if let Some(m) = merged {
            self.params = m.into_boxed_slice();
        }
    }

    /// The whole `register`/`update` message (EMQX 5.x shape): `{"msgType":..,"data":..}` where
    /// `data` holds every query parameter as a string except `lt` (an integer, always present),
    /// plus `alternatePath`/`objectList` once an object list was received; secret-looking keys are
    /// left out. Written straight into bytes, without a JSON tree: this runs for every
    /// registration.
    pub fn event_json(&self, msg_type: &str) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            // Writing a &str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"{\"msgType\":");
        string(&mut out, msg_type);
        out.extend_from_slice(b",\"data\":{");
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, k: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            string(out, k);
            out.push(b':');
        };
        key(&mut out, "ep");
        string(&mut out, &self.endpoint);
        key(&mut out, "lt");
        out.extend_from_slice(self.lifetime.to_string().as_bytes());
        if let Some(v) = self.version_sent() {
            key(&mut out, "lwm2m");
            string(&mut out, v);
        }
        if let Some(b) = &self.binding {
            key(&mut out, "b");
            string(&mut out, b);
        }
        if let Some(sms) = &self.sms {
            key(&mut out, "sms");
            string(&mut out, sms);
        }
        let mut seen: Vec<&str> = Vec::with_capacity(self.params.len());
        for (k, _) in &self.params {
            if seen.contains(&&**k) || SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                continue;
            }
            seen.push(k);
            // A repeated query key keeps its first position and its last value.
            let v = self
                .params
                .iter()
                .rev()
                .find(|(k2, _)| k2 == k)
                .map_or("", |(_, v)| &**v);
            key(&mut out, k);
            string(&mut out, v);
        }
        if let Some(o) = &self.objects {
            key(&mut out, "alternatePath");
            string(&mut out, o.alternate_path());
            key(&mut out, "objectList");
            out.push(b'[');
            for (i, p) in o.object_list().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(&mut out, p);
            }
            out.push(b']');
        }
        key(&mut out, "security");
        string(&mut out, self.security.as_str());
        out.extend_from_slice(b"}}");
        out
    }
}

impl crate::persist::wire::Durable for Registration {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.str(&self.endpoint);
        w.uint(u64::from(self.lifetime));
        w.u8(self.version);
        w.u8(self.version_sent);
        w.opt(self.binding.as_deref(), |w, b| w.str(b));
        w.opt(self.sms.as_deref(), |w, s| w.str(s));
        w.bool(self.queue_mode);
        w.list(&self.params, |w, (k, v)| {
            w.str(k);
            w.str(v);
        });
        w.opt(self.objects.as_ref(), |w, o| w.put(o));
        w.str(self.security.as_str());
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<Registration> {
        let endpoint: Box<str> = r.str()?.into();
        let lifetime = r.u32()?;
        let known = |v: u8| (usize::from(v) < VERSION_NAMES.len()).then_some(v);
        let version = known(r.u8()?)?;
        let version_sent = known(r.u8()?)?;
        let binding = r.opt(|r| r.str().map(binding_text))?;
        let sms = r.opt(|r| r.str().map(Box::from))?;
        let queue_mode = r.bool()?;
        let params = r.list(|r| Some((Box::<str>::from(r.str()?), Box::<str>::from(r.str()?))))?;
        let objects = r.opt(|r| r.take())?;
        let security = SecurityMode::from_name(r.str()?)?;
        Some(Registration {
            endpoint,
            lifetime,
            version,
            version_sent,
            binding,
            sms,
            queue_mode,
            params: params.into(),
            objects,
            security,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[&str]) -> Result<RegParams, Rejection> {
        parse_query(items.iter().map(|s| s.as_bytes()), (10, 1000))
    }

    #[test]
    fn parses_register_queries() {
        let p = q(&["ep=dev1", "lt=60", "lwm2m=1.1", "b=UQ", "Q", "imei=123"]).unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("dev1"));
        assert_eq!(p.lifetime, Some(60));
        assert_eq!(p.version.as_deref(), Some("1.1"));
        assert!(p.queue_flag);
        assert_eq!(p.all.last(), Some(&("imei".to_string(), "123".to_string())));
    }

    #[test]
    fn rejects_bad_queries() {
        for bad in [
            &["ep="][..],
            &["ep=a/b"],
            &["ep=a+b"],
            &["ep=a#"],
            &["ep=a\0"],
            &["lt=abc"],
            &["lt=5"],
            &["lt=1001"],
            &["lt=-1"],
            &["b=X"],
            &["Q=1"],
            &["=x"],
        ] {
            assert_eq!(q(bad).unwrap_err().code, code::BAD_REQUEST, "{bad:?}");
        }
        let long = format!("ep={}", "x".repeat(256));
        assert!(q(&[&long]).is_err());
        let ok = format!("ep={}", "x".repeat(255));
        assert!(q(&[&ok]).is_ok());
        assert!(parse_query([&[0xff_u8][..]].into_iter(), (1, 2)).is_err());
    }

    #[test]
    fn event_json() {
        let p = q(&[
            "lt=60",
            "ep=dev\"1",
            "b=U",
            "password=x",
            "imei=7",
            "b=UQ",
            "imei=8",
        ])
        .unwrap();
        let objects =
            crate::lwm2m::link_format::parse_registration("</>;rt=\"oma.lwm2m\",</1/0>,</3/0>")
                .ok();
        let mut r = Registration::new("dev\"1", 90, "1.1", &p, None);
        r.version_sent = version_code(Some("1.1"));
        r.sms = Some("+123".into());
        // Exact bytes: escaping, the secret left out, a repeated key's last value.
        assert_eq!(
            String::from_utf8(r.event_json("update")).unwrap(),
            r#"{"msgType":"update","data":{"ep":"dev\"1","lt":90,"lwm2m":"1.1","b":"UQ","sms":"+123","imei":"8","security":"nosec"}}"#
        );
        r.objects = objects;
        r.version_sent = 0;
        r.binding = None;
        r.sms = None;
        let v: serde_json::Value = serde_json::from_slice(&r.event_json("register")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"msgType":"register","data":{"ep":"dev\"1","lt":90,"imei":"8",
                "alternatePath":"/","objectList":["/1/0","/3/0"],"security":"nosec"}})
        );
    }

    #[test]
    fn versions() {
        assert_eq!(check_version(None), Ok("1.0"));
        assert_eq!(check_version(Some("1.2")), Ok("1.2"));
        assert_eq!(
            check_version(Some("2.0")).unwrap_err().code,
            code::PRECONDITION_FAILED
        );
        assert_eq!(
            check_version(Some("1.3")).unwrap_err().code,
            code::PRECONDITION_FAILED
        );
    }
}
