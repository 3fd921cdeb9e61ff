//! The JSON API under `/api/v5/gateways/lwm2m/`, shaped after EMQX's gateway API:
//!
//! | route | what |
//! |---|---|
//! | `GET clients` | devices, paged (`page`, `limit` ≤ 1000, or `after`), filtered (`endpoint_prefix`, `like_endpoint_name`, `online`, `queue_mode`) |
//! | `GET clients/{ep}` | one device, with its observations and waiting commands |
//! | `DELETE clients/{ep}` | kick: the registration ends (`deregister` event, reason `kicked`) |
//! | `POST clients/{ep}/commands` | any MQTT command JSON; answers with the JSON of its MQTT response |
//! | `GET clients/{ep}/lookup`, `POST clients/{ep}/{read,write,observe}` | EMQX's LwM2M routes, answering the same way |
//! | `GET objects`, `GET objects/{id}` (`?version=`) | the object definitions, to name objects and resources |
//! | `GET credentials`, `GET/PUT/DELETE credentials/{ep}` | device credentials (the MQTT `credential-…` commands) |
//!
//! Errors are `{"code","message"}` with the HTTP status: 400 (bad request), 404 (unknown device,
//! object or route), 503 (a worker's queue is full, or the gateway is stopping), 504 (no answer
//! from the device in time; the command goes on and its answer is published on MQTT).

use std::time::Duration;

use serde_json::{json, Value};

use crate::core::command;
use crate::core::shard::{DeviceFilter, DeviceInfo};
use crate::lwm2m::model::ObjectDef;
use crate::runtime::ops::{OpsError, MAX_WINDOW};

use super::{Context, Reply, Req};

/// How long a question to the workers may take (they answer between two rounds of messages).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn route(ctx: &Context, req: &Req, rest: &[&str]) -> Reply {
    let m = req.method.as_str();
    match (m, rest) {
        ("GET", ["clients"]) => list(ctx, req),
        ("GET", ["clients", ep]) => device(ctx, ep),
        ("DELETE", ["clients", ep]) => kick(ctx, ep),
        ("POST", ["clients", ep, "commands"]) => command(ctx, req, ep, req.body.clone()),
        ("GET", ["clients", ep, "lookup"]) => emqx_command(ctx, req, ep, "lookup"),
        ("POST", ["clients", ep, op @ ("read" | "write" | "observe")]) => {
            emqx_command(ctx, req, ep, op)
        }
        ("GET", ["objects"]) => objects(ctx),
        ("GET", ["objects", id]) => object(ctx, id, req.param("version")),
        ("GET", ["credentials"]) => credentials(ctx, "credential-list", list_args(req)),
        ("GET", ["credentials", ep]) => credentials(ctx, "credential-get", json!({"endpoint": ep})),
        ("DELETE", ["credentials", ep]) => {
            credentials(ctx, "credential-remove", json!({"endpoint": ep}))
        }
        ("PUT", ["credentials", ep]) => put_credential(ctx, req, ep),
        (_, ["clients", ..] | ["objects", ..] | ["credentials", ..]) => {
            Reply::error(405, "METHOD_NOT_ALLOWED", "method not allowed here")
        }
        _ => Reply::error(404, "NOT_FOUND", "no such route"),
    }
}

fn ops_error(e: OpsError) -> Reply {
    match e {
        OpsError::Busy => Reply::error(503, "UNAVAILABLE", "the gateway is busy; try again"),
        OpsError::Stopping => Reply::error(503, "UNAVAILABLE", "the gateway is stopping"),
        OpsError::Timeout => Reply::error(504, "TIMEOUT", "no answer in time"),
    }
}

fn bad(message: &str) -> Reply {
    Reply::error(400, "BAD_REQUEST", message)
}

fn flag(req: &Req, k: &str) -> Result<Option<bool>, Reply> {
    match req.param(k) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(bad(&format!("{k} must be true or false"))),
    }
}

fn number(
    req: &Req,
    k: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, Reply> {
    match req.param(k) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| bad(&format!("{k} must be a number within {range:?}"))),
    }
}

fn list(ctx: &Context, req: &Req) -> Reply {
    let parsed = (|| {
        let filter = DeviceFilter {
            endpoint_prefix: req
                .param("endpoint_prefix")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            endpoint_contains: req
                .param("like_endpoint_name")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            online: flag(req, "online")?,
            queue_mode: flag(req, "queue_mode")?,
        };
        let limit = number(req, "limit", DEFAULT_LIMIT, 1..=MAX_LIMIT)?;
        let page = number(req, "page", 1, 1..=usize::MAX)?;
        if page.saturating_mul(limit) >= MAX_WINDOW {
            return Err(bad(&format!(
                "page x limit must stay below {MAX_WINDOW}: page on with ?after=<the last endpoint>"
            )));
        }
        Ok((filter, limit, page))
    })();
    let (filter, limit, page) = match parsed {
        Ok(p) => p,
        Err(r) => return r,
    };
    let after = req.param("after").filter(|s| !s.is_empty());
    match ctx.ops.devices(&filter, after, page, limit, QUERY_TIMEOUT) {
        Ok(l) => Reply::json(
            200,
            &json!({
                "data": l.devices.iter().map(|d| device_json(d, false)).collect::<Vec<_>>(),
                "meta": {"page": page, "limit": limit, "count": l.count, "hasnext": l.has_next},
            }),
        ),
        Err(e) => ops_error(e),
    }
}

/// A device as the API shows it: EMQX's client fields where they exist, LwM2M's beside them.
pub fn device_json(d: &DeviceInfo, detail: bool) -> Value {
    let mut v = json!({
        "clientid": d.endpoint,
        "endpoint_name": d.endpoint,
        "proto_name": "LwM2M",
        "proto_ver": d.version,
        "lifetime": d.lifetime,
        "binding": d.binding,
        "queue_mode": d.queue_mode,
        "online": d.online,
        "ip_address": d.address.ip().to_string(),
        "port": d.address.port(),
        "security": d.security,
        "registration_id": d.registration_id,
        "last_seen": d.last_seen_ms,
        "expires_at": d.expires_at_ms,
        "object_list": d.object_list,
    });
    if detail {
        v["observations"] = d.observations.iter().map(|p| json!({"path": p})).collect();
        v["queued_commands"] = json!(d.queued_commands);
    }
    v
}

fn device(ctx: &Context, ep: &str) -> Reply {
    match ctx.ops.device(ep, QUERY_TIMEOUT) {
        Ok(Some(d)) => Reply::json(200, &device_json(&d, true)),
        Ok(None) => Reply::error(404, "NOT_FOUND", "no such device"),
        Err(e) => ops_error(e),
    }
}

fn kick(ctx: &Context, ep: &str) -> Reply {
    match ctx.ops.kick(ep, QUERY_TIMEOUT) {
        Ok(true) => Reply::no_content(),
        Ok(false) => Reply::error(404, "NOT_FOUND", "no such device"),
        Err(e) => ops_error(e),
    }
}

/// `?timeout=` in seconds, at most `http.command_timeout`.
fn timeout_of(ctx: &Context, req: &Req) -> Result<Duration, Reply> {
    match req.param("timeout") {
        None | Some("") => Ok(ctx.command_timeout),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(ctx.command_timeout.as_secs_f64())))
            .ok_or_else(|| bad("timeout must be a positive number of seconds")),
    }
}

/// Sends `body` (an MQTT command) to `ep` and answers with the JSON of its response.
fn command(ctx: &Context, req: &Req, ep: &str, body: Vec<u8>) -> Reply {
    let timeout = match timeout_of(ctx, req) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // Refused here rather than answered on MQTT: a caller who sent no command learns it at once.
    if let Err(e) = command::parse(&body) {
        return bad(&format!("not a command: {}", e.reason));
    }
    match ctx.ops.device(ep, QUERY_TIMEOUT) {
        Ok(Some(_)) => {}
        Ok(None) => return Reply::error(404, "NOT_FOUND", "no such device"),
        Err(e) => return ops_error(e),
    }
    match ctx.ops.command(ep, body, timeout) {
        Ok(answer) => Reply::raw_json(200, answer),
        Err(e) => ops_error(e),
    }
}

/// EMQX's LwM2M routes, as commands: `lookup` (`action=discover|read`), `read`, `write`
/// (`type`, `value`), `observe` (`enable=true|false`); all take `path`.
fn emqx_command(ctx: &Context, req: &Req, ep: &str, op: &str) -> Reply {
    let Some(path) = req.param("path").filter(|p| !p.is_empty()) else {
        return bad("path is required");
    };
    let cmd = match op {
        "lookup" => {
            let action = req.param("action").unwrap_or("discover");
            if !matches!(action, "discover" | "read") {
                return bad("action must be discover or read");
            }
            json!({"msgType": action, "data": {"path": path}})
        }
        "read" => json!({"msgType": "read", "data": {"path": path}}),
        "write" => {
            let (Some(t), Some(v)) = (req.param("type"), req.param("value")) else {
                return bad("type and value are required");
            };
            // Numbers and booleans as JSON values, the rest as text (the command's rules).
            let value = match t {
                "Integer" | "Float" | "Time" | "UnsignedInteger" => v
                    .parse::<f64>()
                    .ok()
                    .and_then(|_| serde_json::from_str::<Value>(v).ok())
                    .unwrap_or_else(|| json!(v)),
                "Boolean" => match v {
                    "true" | "1" => json!(true),
                    "false" | "0" => json!(false),
                    _ => json!(v),
                },
                _ => json!(v),
            };
            json!({"msgType": "write", "data": {"path": path, "type": t, "value": value}})
        }
        _ => match flag(req, "enable") {
            Ok(Some(false)) => json!({"msgType": "cancel-observe", "data": {"path": path}}),
            Ok(_) => json!({"msgType": "observe", "data": {"path": path}}),
            Err(r) => return r,
        },
    };
    command(ctx, req, ep, cmd.to_string().into_bytes())
}

fn objects(ctx: &Context) -> Reply {
    let list: Vec<Value> = ctx
        .model
        .objects()
        .map(|o| json!({"id": o.id, "name": o.name, "version": o.version, "multiple": o.multiple}))
        .collect();
    Reply::json(200, &Value::Array(list))
}

pub fn object_json(o: &ObjectDef) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "version": o.version,
        "multiple": o.multiple,
        "mandatory": o.mandatory,
        "description": o.description,
        "resources": o.resources.values().map(|r| json!({
            "id": r.id,
            "name": r.name,
            "operations": r.operations.as_str(),
            "type": r.resource_type.name(),
            "multiple": r.multiple,
            "mandatory": r.mandatory,
            "units": r.units,
            "range": r.range_enumeration,
            "description": r.description,
        })).collect::<Vec<_>>(),
    })
}

/// Object `id` in `version` (`?version=`), else the highest version loaded.
fn object(ctx: &Context, id: &str, version: Option<&str>) -> Reply {
    match id
        .parse::<u16>()
        .ok()
        .and_then(|id| ctx.model.get(id, version))
    {
        Some(o) => Reply::json(200, &object_json(o)),
        None => Reply::error(404, "NOT_FOUND", "no such object definition"),
    }
}

fn list_args(req: &Req) -> Value {
    let mut d = serde_json::Map::new();
    for k in ["offset", "limit"] {
        if let Some(n) = req.param(k).and_then(|v| v.parse::<u64>().ok()) {
            d.insert(k.into(), json!(n));
        }
    }
    Value::Object(d)
}

/// A credential management request, answered with the HTTP status of its CoAP-style code and
/// the `data` of the MQTT answer (no key material: `security::management`'s contract).
fn credentials(ctx: &Context, msg_type: &str, data: Value) -> Reply {
    let req = json!({"msgType": msg_type, "data": data});
    let answer = ctx.ops.manage_credentials(req.to_string().as_bytes());
    let v: Value = serde_json::from_slice(&answer.payload).unwrap_or(Value::Null);
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    let status = match data.get("code").and_then(Value::as_str) {
        Some("2.01") => 201,
        Some("2.02") => 204,
        Some("2.04" | "2.05") => 200,
        Some("4.04") => 404,
        Some("4.09") => 409,
        _ => 400,
    };
    match status {
        204 => Reply::no_content(),
        400 | 404 | 409 => {
            let reason = data
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            let code = match status {
                404 => "NOT_FOUND",
                409 => "CONFLICT",
                _ => "BAD_REQUEST",
            };
            Reply::error(status, code, reason)
        }
        _ => Reply::json(status, &data),
    }
}

/// `PUT credentials/{ep}` with one entry of the credentials file (JSON); its `endpoint` is the
/// path's.
fn put_credential(ctx: &Context, req: &Req, ep: &str) -> Reply {
    let mut entry: serde_json::Map<String, Value> = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(m)) => m,
        _ => return bad("the body must be a JSON object: one credentials-file entry"),
    };
    match entry.get("endpoint") {
        None => {
            entry.insert("endpoint".into(), json!(ep));
        }
        Some(Value::String(e)) if e == ep => {}
        Some(_) => return bad("the entry's endpoint is not the one in the path"),
    }
    credentials(ctx, "credential-add", Value::Object(entry))
}
