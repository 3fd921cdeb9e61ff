//! The registration interface (LwM2M TS Transport §6.2): Register (`POST /rd`), Update
//! (`POST /rd/{id}`), De-register (`DELETE /rd/{id}`), and the 1.1 Send (`POST /dp`). Requests
//! arrive here from [`Shard::on_request`]; the answer code and the reason of a refusal go back to
//! it as a [`Rejection`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::coap::{code, opt, MessageView};
use crate::core::authorize::{Forbidden, GATEWAY_ENDPOINT};
use crate::core::command::Command;
use crate::core::ids::RegId;
use crate::core::registration::{self, Registration, Rejection};
use crate::core::settings::{AutoObserve, UpdatePublishCondition};
use crate::core::uplink::Uplink;
use crate::lwm2m::link_format::{self, RegisteredObjects};
use crate::lwm2m::{codec, ContentFormat, Path};

use super::session::{Session, Work};
use super::{content_format, Output, Peer, Shard};

/// Objects EMQX never auto-observes with `auto_observe = true` (security, server, ACL, ...).
const AUTO_OBSERVE_SKIP: [u16; 9] = [0, 1, 2, 4, 5, 6, 7, 9, 15];

fn rejection(code: u8, reason: impl Into<String>) -> Rejection {
    Rejection {
        code,
        reason: reason.into(),
    }
}

impl Shard {
    /// Returns the response code and, for a Register, the new registration for Location-Path.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<(u8, Option<RegId>), Rejection> {
        if let Some(n) = pkt.unknown_critical_option() {
            return Err(rejection(
                code::BAD_OPTION,
                format!("unsupported critical option {n}"),
            ));
        }
        let method = pkt.code();
        let mut segs = pkt.option_values(opt::URI_PATH);
        let not_allowed = || rejection(code::METHOD_NOT_ALLOWED, "method not allowed");
        match (segs.next(), segs.next(), segs.next()) {
            (Some(b"rd"), None, _) if method == code::POST => self
                .register(now, peer, pkt, out)
                .map(|id| (code::CREATED, Some(id))),
            (Some(b"rd"), None, _) => Err(not_allowed()),
            (Some(b"rd"), Some(id), None) => {
                let parsed = RegId::parse(id);
                // Another worker's registration reached here: only a DTLS session of another
                // identity can bring it (plain traffic is routed by the id's shard).
                if parsed.is_some_and(|r| r.shard() != self.id) && peer.identity.is_some() {
                    out.forbidden += 1;
                    return Err(rejection(code::FORBIDDEN, "not the registered identity"));
                }
                let reg = parsed.filter(|r| self.sessions.get(*r).is_some());
                let Some(reg) = reg else {
                    return Err(rejection(code::NOT_FOUND, "no such resource"));
                };
                if !self.sent_by_registrant(reg, &peer, out) {
                    return Err(rejection(code::FORBIDDEN, "not the registered identity"));
                }
                match method {
                    code::POST => self
                        .update(now, peer, reg, pkt, out)
                        .map(|()| (code::CHANGED, None)),
                    code::DELETE => {
                        self.remove_session(reg, "deregistered", out);
                        Ok((code::DELETED, None))
                    }
                    _ => Err(not_allowed()),
                }
            }
            (Some(b"dp"), None, _) if method == code::POST => self
                .send(now, peer, pkt, out)
                .map(|()| (code::CHANGED, None)),
            (Some(b"dp"), None, _) => Err(not_allowed()),
            _ => Err(rejection(code::NOT_FOUND, "no such resource")),
        }
    }

    fn register(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<RegId, Rejection> {
        let queries = pkt.option_values(opt::URI_QUERY);
        let params = registration::parse_query(queries, self.cfg.lifetime_range)?;
        let version = registration::check_version(params.version.as_deref())?;
        let Some(endpoint) = params.endpoint.clone() else {
            return Err(rejection(code::BAD_REQUEST, "missing ep"));
        };
        if endpoint == GATEWAY_ENDPOINT {
            out.forbidden += 1;
            return Err(rejection(code::FORBIDDEN, "reserved endpoint name"));
        }
        if let Err(Forbidden(why)) = self.cfg.authorizer.authorize_register(&endpoint, &peer) {
            out.forbidden += 1;
            return Err(rejection(code::FORBIDDEN, why));
        }
        let objects = parse_objects(pkt)?;
        let lifetime = params.lifetime.unwrap_or_else(|| {
            let (min, max) = self.cfg.lifetime_range;
            registration::DEFAULT_LIFETIME.clamp(min, max)
        });
        // The same endpoint registering again replaces its old registration. Commands waiting for
        // the endpoint carry over (they address the device, not one registration of it), the one
        // in flight is sent again; observations end (the device forgot them, TS §6.4).
        let mut carried = VecDeque::new();
        let old = self.sessions.find_endpoint(&endpoint);
        if old.is_none() && self.sessions.len() >= self.cfg.max_registrations_per_shard {
            // Full: a new endpoint waits (the answer's Max-Age says how long); the ones held
            // keep working. A storm of bogus endpoints ends here, in bounded memory.
            out.refused_full += 1;
            return Err(rejection(code::SERVICE_UNAVAILABLE, "registrations full"));
        }
        if let Some(old) = old {
            if let Some(w) = self.sessions.get_mut(old).and_then(|s| s.work.as_mut()) {
                carried = std::mem::take(&mut w.queue);
            }
            // The rest of a notification is moot: observations end with the registration.
            let inflight = self.sessions.end_exchange(old);
            if let Some(ex) = inflight.filter(|e| e.outcome == super::session::Outcome::Response) {
                carried.push_front(ex.into_queued());
            }
            self.remove_session(old, "replaced", out);
        }
        let reg_id = RegId::new(self.next_reg_seq, self.id);
        self.next_reg_seq += 1;
        let mut reg = Registration::new(&endpoint, lifetime, version, &params, objects);
        reg.security = peer.security();
        let expires_at = now + reg.lifetime_duration();
        let work = (!carried.is_empty()).then(|| {
            Box::new(Work {
                queue: carried,
                ..Work::default()
            })
        });
        let session = Box::new(Session {
            reg,
            peer,
            expires_at: self.stamp(expires_at),
            last_uplink: self.stamp(now),
            work,
        });
        Self::emit(&self.cfg, &session, Uplink::Registered(&session.reg), out);
        let auto = self.auto_observe_paths(&session.reg);
        self.sessions.insert(reg_id, session, &mut out.index);
        self.lifetimes.push(now, expires_at, reg_id.as_u64());
        for (path, text) in auto {
            self.enqueue(now, reg_id, Command::auto_observe(path, &text), None, out);
        }
        // Queued work starts in on_request, after the 2.01 went out.
        Ok(reg_id)
    }

    /// Paths to observe for a new registration under `auto_observe` (EMQX master semantics),
    /// with the text each is reported as.
    fn auto_observe_paths(&self, reg: &Registration) -> Vec<(Path, String)> {
        let Some(objects) = &reg.objects else {
            return Vec::new();
        };
        let defined = |p: &str| {
            let path = Path::parse(p).ok()?;
            let o = path.object()?;
            self.cfg.model.has_object(o).then_some((path, o))
        };
        match &self.cfg.auto_observe {
            AutoObserve::Off => Vec::new(),
            AutoObserve::All => objects
                .object_list()
                .filter_map(|p| {
                    let (path, o) = defined(p)?;
                    (!AUTO_OBSERVE_SKIP.contains(&o)).then(|| (path, p.to_string()))
                })
                .collect(),
            AutoObserve::Paths(list) => list
                .iter()
                .filter(|p| objects.object_list().any(|o| o == p.as_str()))
                .filter_map(|p| Some((defined(p)?.0, p.clone())))
                .collect(),
        }
    }

    fn update(
        &mut self,
        now: Instant,
        peer: Peer,
        reg_id: RegId,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<(), Rejection> {
        let queries = pkt.option_values(opt::URI_QUERY);
        let mut params = registration::parse_query(queries, self.cfg.lifetime_range)?;
        let objects = parse_objects(pkt)?;
        let Some(old_lifetime) = self.sessions.get(reg_id).map(|s| s.reg.lifetime) else {
            return Err(rejection(code::NOT_FOUND, "no such registration"));
        };
        // Endpoint and version are fixed at Register (TS §6.2.2); ignore them here.
        params.all.retain(|(k, _)| k != "ep" && k != "lwm2m");
        let lifetime = params.lifetime.unwrap_or(old_lifetime);
        let expires_at = now + Duration::from_secs(lifetime as u64);
        let (t_exp, t_now) = (self.stamp(expires_at), self.stamp(now));
        let had_objects = objects.is_some();
        let Some(s) = self.sessions.get_mut(reg_id) else {
            return Ok(());
        };
        let kind = super::query::Kinds::of(&s.reg);
        s.reg.apply_update(&params);
        let new_kind = super::query::Kinds::of(&s.reg);
        if objects.is_some() {
            s.reg.objects = objects;
        }
        s.peer.listener = peer.listener;
        s.expires_at = t_exp;
        s.last_uplink = t_now;
        out.stats.updated += 1;
        let publish = match self.cfg.update_condition {
            UpdatePublishCondition::Always => true,
            UpdatePublishCondition::ContainsObjectList => had_objects,
        };
        if publish {
            Self::emit(&self.cfg, s, Uplink::Updated(&s.reg), out);
        }
        self.sessions.touch(reg_id);
        self.sessions.rekind(kind, new_kind);
        // NAT rebinding: the device's address is wherever its Update came from.
        self.sessions.move_to(reg_id, peer.addr, &mut out.index);
        // The pending lifetime timer fires no later than the new expiry unless the lifetime
        // shrank; when it fires early it is set again for `expires_at` (see `on_timeout`). So
        // a registration has one entry however often it updates.
        if lifetime < old_lifetime {
            self.lifetimes.push(now, expires_at, reg_id.as_u64());
        }
        Ok(())
    }

    /// LwM2M 1.1 Send (`POST /dp`): published on the notify topic as `send`.
    fn send(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
        out: &mut Output,
    ) -> Result<(), Rejection> {
        let Some(reg) = self.sessions.find_addr(peer.addr) else {
            return Err(rejection(
                code::NOT_FOUND,
                "Send from an unregistered address",
            ));
        };
        if !self.sent_by_registrant(reg, &peer, out) {
            return Err(rejection(code::FORBIDDEN, "not the registered identity"));
        }
        let cf = content_format(pkt).and_then(ContentFormat::from_u16);
        let Some(
            cf @ (ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::LwM2mCbor),
        ) = cf
        else {
            return Err(rejection(
                code::UNSUPPORTED_CONTENT_FORMAT,
                "Send needs SenML JSON/CBOR or LwM2M CBOR",
            ));
        };
        let t = self.stamp(now);
        let Some(s) = self.sessions.get_mut(reg) else {
            return Err(rejection(code::NOT_FOUND, "gone"));
        };
        s.last_uplink = t;
        let types = self.cfg.model.types_for(s.versions());
        let records = codec::decode(cf, &Path::ROOT, pkt.payload(), &types).map_err(|e| {
            rejection(
                code::BAD_REQUEST,
                format!("cannot decode {}: {e}", cf.name()),
            )
        })?;
        Self::emit(&self.cfg, s, Uplink::Sent(&records), out);
        Ok(())
    }

    /// Ends a registration: publishes `deregister` with `reason` and answers every command still
    /// waiting for this device, so none vanishes silently. Its observations end with it.
    pub(super) fn remove_session(&mut self, reg: RegId, reason: &str, out: &mut Output) {
        let Some(mut s) = self.sessions.remove(reg, &mut out.index) else {
            return;
        };
        self.reassembly.release(reg);
        let w = s.work.take().map(|w| *w).unwrap_or_default();
        let why = format!("endpoint {reason}");
        let waiting = w.inflight.iter().map(|e| &e.cmd);
        for cmd in waiting.chain(w.queue.iter().map(|q| &q.cmd)) {
            let ev = Uplink::Refused {
                cmd,
                code: code::NOT_FOUND,
                reason: &why,
            };
            Self::emit(&self.cfg, &s, ev, out);
        }
        let ev = Uplink::Deregistered {
            endpoint: &s.reg.endpoint,
            reason,
        };
        Self::emit(&self.cfg, &s, ev, out);
    }
}

/// The object list of a Register or Update, if it carries one.
fn parse_objects(pkt: &MessageView) -> Result<Option<RegisteredObjects>, Rejection> {
    // text/plain (0) too: EMQX's own test clients and some firmware label the link-format
    // object list so, and EMQX accepts it.
    let link_format = [
        ContentFormat::LinkFormat.as_u16(),
        ContentFormat::Text.as_u16(),
    ];
    if content_format(pkt).is_some_and(|cf| !link_format.contains(&cf)) {
        return Err(rejection(
            code::UNSUPPORTED_CONTENT_FORMAT,
            "object list must be link-format (40)",
        ));
    }
    if pkt.payload().is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(pkt.payload())
        .map_err(|_| rejection(code::BAD_REQUEST, "object list is not UTF-8"))?;
    link_format::parse_registration(text)
        .map(Some)
        .map_err(|e| rejection(code::BAD_REQUEST, e.to_string()))
}
