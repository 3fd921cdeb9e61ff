//! Commands in: each parsed command is checked against the device it addresses, mapped to a CoAP
//! request and queued behind the one in flight (NSTART = 1); a queue-mode device gets its queue
//! when it next speaks. Every command is answered exactly once: by the device's response, or by
//! the gateway when it refuses, times out or expires it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::coap::code;
use crate::core::command::{Command, CommandError, CommandHead, Stage};
use crate::core::ids::RegId;
use crate::core::request::{self, DeviceContext};
use crate::core::uplink::Uplink;

use super::session::{Purpose, Queued};
use super::{Output, Shard, Timer};

impl Shard {
    /// A command from MQTT for endpoint `ep` (taken from the topic), parsed by
    /// [`crate::core::command::parse`]. `expiry` is the MQTT 5 Message-Expiry-Interval it had
    /// left on arrival: if it has to wait for a sleeping device longer than that, it is answered
    /// `coap_timeout` instead.
    pub fn on_command(
        &mut self,
        now: Instant,
        ep: &str,
        cmd: Result<Command, Box<CommandError>>,
        expiry: Option<Duration>,
        out: &mut Output,
    ) {
        self.start_clock(now);
        let reg = self.sessions.find_endpoint(ep);
        let host = reg
            .and_then(|r| self.sessions.get(r))
            .and_then(|s| s.host());
        let refuse = |out: &mut Output, cmd: &CommandHead, code: u8, reason: &str| {
            let ev = Uplink::Refused { cmd, code, reason };
            Self::publish(&self.cfg, ep, host, ev, out);
        };
        match (&cmd, reg) {
            (Err(e), _) if e.stage == Stage::Envelope => {
                refuse(out, &e.head, code::BAD_REQUEST, &e.reason)
            }
            (Err(e), None) => refuse(out, &e.head, code::NOT_FOUND, "endpoint not registered"),
            (Ok(c), None) => refuse(out, &c.head, code::NOT_FOUND, "endpoint not registered"),
            (Err(e), Some(_)) => refuse(out, &e.head, code::BAD_REQUEST, &e.reason),
            (Ok(_), Some(reg)) => {
                if let Ok(c) = cmd {
                    self.enqueue(now, reg, c, expiry, out);
                    self.pump(now, reg, out);
                }
            }
        }
    }

    /// Builds the request of a command for registered device `reg` and queues it; answers the
    /// command on MQTT when it cannot be carried out.
    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        reg: RegId,
        cmd: Command,
        expiry: Option<Duration>,
        out: &mut Output,
    ) {
        let Some(s) = self.sessions.get(reg) else {
            return;
        };
        let objects = s.reg.objects.as_ref();
        let types = self.cfg.model.types_for(s.versions());
        let dev = DeviceContext {
            version: s.reg.version(),
            announced_formats: objects.map_or(&[][..], |o| o.content_formats()),
            types: &types,
            write_encoding: self.cfg.write_encoding,
        };
        let refusal = match request::build(&cmd, &dev) {
            Err(why) => Some((code::BAD_REQUEST, why)),
            Ok(_) if s.queue_len() >= self.cfg.downlink_queue_max => {
                Some((code::SERVICE_UNAVAILABLE, "downlink queue full".to_string()))
            }
            Ok(request) => {
                let expires_at = [self.cfg.downlink_queue_max_age, expiry]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|a| now + a);
                let q = Queued {
                    op: cmd.op,
                    cmd: cmd.head,
                    request,
                    expires_at,
                    purpose: Purpose::Command,
                };
                if let Some(s) = self.sessions.get_mut(reg) {
                    s.work_mut().queue.push_back(q);
                }
                self.sessions.touch(reg);
                return;
            }
        };
        if let Some((code, reason)) = refusal {
            let ev = Uplink::Refused {
                cmd: &cmd.head,
                code,
                reason: &reason,
            };
            Self::emit(&self.cfg, s, ev, out);
        }
    }

    /// Sends the next queued request if none is in flight (NSTART = 1) and the device is
    /// reachable; answers commands that expired while waiting.
    ///
    /// Every path that ends an exchange, an observation or a queued command ends up here, so
    /// this is where a session's `Work` is released.
    pub(super) fn pump(&mut self, now: Instant, reg: RegId, out: &mut Output) {
        self.pump_next(now, reg, out);
        if let Some(s) = self.sessions.get_mut(reg) {
            s.settle();
        }
    }

    fn pump_next(&mut self, now: Instant, reg: RegId, out: &mut Output) {
        self.expire_queue(now, reg, out);
        let t_now = self.stamp(now);
        let Some(s) = self.sessions.get(reg) else {
            return;
        };
        let Some(w) = s.work.as_deref() else {
            return;
        };
        if w.inflight.is_some() || w.queue.is_empty() {
            return;
        }
        if !s.reachable(t_now, self.cfg.qmode_time_window) {
            if let Some(t) = w.queue.iter().filter_map(|q| q.expires_at).min() {
                self.timers.push(now, t, Timer::Queue(reg));
            }
            return;
        }
        // Cancelling an observation reuses its token (RFC 7641 §3.6).
        let reuse = w
            .queue
            .front()
            .filter(|q| q.op.cancels_observation())
            .and_then(|q| {
                w.observations
                    .iter()
                    .find(|(_, o)| o.request.same_target(&q.request))
                    .map(|(t, _)| *t)
            });
        let token = match reuse {
            Some(t) => t,
            None => self.alloc_token(),
        };
        let next = self
            .sessions
            .get_mut(reg)
            .and_then(|s| s.work.as_mut())
            .and_then(|w| w.queue.pop_front());
        if let Some(q) = next {
            self.start_exchange(now, reg, q, token, out);
        }
    }

    /// Answers and drops the waiting commands whose max age has passed.
    fn expire_queue(&mut self, now: Instant, reg: RegId, out: &mut Output) {
        let Some(s) = self.sessions.get_mut(reg) else {
            return;
        };
        let Some(w) = s.work.as_mut() else {
            return;
        };
        let expired = |q: &Queued| q.expires_at.is_some_and(|t| t <= now);
        if !w.queue.iter().any(expired) {
            return;
        }
        let (gone, kept): (VecDeque<Queued>, VecDeque<Queued>) =
            std::mem::take(&mut w.queue).into_iter().partition(expired);
        w.queue = kept;
        for q in &gone {
            let ev = Uplink::TimedOut {
                cmd: &q.cmd,
                reason: Some("expired in queue"),
            };
            Self::emit(&self.cfg, s, ev, out);
        }
        self.sessions.touch(reg);
    }
}
