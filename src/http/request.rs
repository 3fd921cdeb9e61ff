//! The small HTTP vocabulary the handlers share: a request read whole ([`Req`]: method, decoded
//! path segments and query, body up to [`MAX_BODY`]) and an answer ([`Reply`]). Nothing a
//! client sends can make these panic: bad percent-encoding is kept as it came, a body too large
//! is refused with 413, a body that is not UTF-8 is left to the handler (commands are JSON).

use std::io::Read;

use serde_json::Value;

/// The largest request body read (the MQTT side's default `mqtt.max_packet_size`).
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    segs: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub authorization: Option<String>,
}

impl Req {
    /// Reads a request from tiny_http, body included.
    pub fn read(rq: &mut tiny_http::Request) -> Result<Req, Reply> {
        if rq.body_length().is_some_and(|n| n > MAX_BODY) {
            return Err(Reply::error(
                413,
                "TOO_LARGE",
                "the body is larger than 1 MiB",
            ));
        }
        let mut body = Vec::new();
        let mut limited = rq.as_reader().take(MAX_BODY as u64 + 1);
        if limited.read_to_end(&mut body).is_err() {
            return Err(Reply::error(
                400,
                "BAD_REQUEST",
                "the body could not be read",
            ));
        }
        if body.len() > MAX_BODY {
            return Err(Reply::error(
                413,
                "TOO_LARGE",
                "the body is larger than 1 MiB",
            ));
        }
        let authorization = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str().to_string());
        Ok(Req::new(
            &rq.method().to_string(),
            rq.url(),
            body,
            authorization,
        ))
    }

    /// A request from its parts (tests build them this way).
    pub fn new(method: &str, url: &str, body: Vec<u8>, authorization: Option<String>) -> Req {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let segs = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(&v.replace('+', " ")))
            })
            .collect();
        Req {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            segs,
            query,
            body,
            authorization,
        }
    }

    /// The decoded path segments (`/a/b%2Fc` is `["a", "b/c"]`).
    pub fn segments(&self) -> Vec<&str> {
        self.segs.iter().map(String::as_str).collect()
    }

    /// The first value of query parameter `k`.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// `%XX` decoded; a malformed escape or a result that is not UTF-8 keeps the text as sent.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::new(status, "application/json", v.to_string().into_bytes())
    }

    /// JSON the gateway already wrote (a command's answer, as on MQTT).
    pub fn raw_json(status: u16, body: Vec<u8>) -> Reply {
        Reply::new(status, "application/json", body)
    }

    /// `{"code": code, "message": message}`, EMQX's error shape.
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &serde_json::json!({"code": code, "message": message}),
        )
    }

    pub fn no_content() -> Reply {
        Reply::new(204, "text/plain", Vec::new())
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let mut r = tiny_http::Response::from_data(self.body).with_status_code(self.status);
        let mut headers = vec![
            ("Content-Type".to_string(), self.content_type.to_string()),
            ("Cache-Control".to_string(), "no-store".to_string()),
            ("X-Content-Type-Options".to_string(), "nosniff".to_string()),
        ];
        headers.extend(self.headers);
        for (k, v) in headers {
            if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                r.add_header(h);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_decoded_and_malformed_escapes_kept() {
        let r = Req::new(
            "get",
            "/api/v5/gateways/lwm2m/clients/dev%2F1%20x/commands?timeout=2.5&path=%2F3%2F0&a&b=c+d",
            Vec::new(),
            None,
        );
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.segments(),
            ["api", "v5", "gateways", "lwm2m", "clients", "dev/1 x", "commands"]
        );
        assert_eq!(r.param("timeout"), Some("2.5"));
        assert_eq!(r.param("path"), Some("/3/0"));
        assert_eq!(r.param("a"), Some(""));
        assert_eq!(r.param("b"), Some("c d"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%ff"), "%ff", "not UTF-8: kept as sent");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }
}
