//! Notifications of established observations (RFC 7641): ordering by Observe value, block-wise
//! notifications (the rest fetched before publishing), and the end of an observation when the
//! device says so. Observations are established and cancelled by their exchanges
//! (`exchange.rs`), and kept in the session's [`super::session::Work`].

use std::time::{Duration, Instant};

use crate::coap::block::{Block2Assembly, Block2Step, BlockOpt};
use crate::coap::{code, decode_uint, opt, MessageView};
use crate::core::ids::{RegId, Token};
use crate::core::uplink::Uplink;

use super::exchange::answer;
use super::session::{Purpose, Queued, Session};
use super::{content_format, Output, Shard};

/// RFC 7641 §3.4: is notification (v2 at t2) newer than the last one (v1 at t1)?
fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || t2 > t1 + Duration::from_secs(128)
}

impl Shard {
    /// A notification for the observation `token` of `reg`.
    pub(super) fn notification(
        &mut self,
        now: Instant,
        reg: RegId,
        token: Token,
        pkt: &MessageView,
        out: &mut Output,
    ) {
        let resp_code = pkt.code();
        let seq = pkt.first_option(opt::OBSERVE).and_then(decode_uint);
        let Some(s) = self.sessions.get_mut(reg) else {
            return;
        };
        // Field by field: the observation is changed next to the registration it is read with.
        let host = s.host();
        let Session { reg: r, work, .. } = s;
        let Some(w) = work.as_deref_mut() else {
            return;
        };
        let Some(obs) = w.observations.get_mut(&token) else {
            return;
        };
        if let (Some(v1), Some(v2)) = (obs.last_seq, seq) {
            if !is_fresh(v1, obs.last_at, v2, now) {
                return; // reordered: an older state than the one already published
            }
        }
        obs.last_seq = seq.or(obs.last_seq);
        obs.last_at = now;
        // A notification too large for one datagram carries its first block; fetch the rest
        // before publishing (RFC 7959 §3.4).
        let block2 = pkt.first_option(opt::BLOCK2).and_then(BlockOpt::decode);
        if let Some(b2) = block2.filter(|b| b.more && code::is_success(resp_code)) {
            let mut assembly = Block2Assembly::new(self.cfg.block_max_body);
            if let Ok(Block2Step::Next(next)) = assembly.push(b2, pkt.payload()) {
                let mut request = obs.request.clone();
                request.observe = None;
                w.queue.push_front(Queued {
                    op: obs.op,
                    cmd: obs.cmd.clone(),
                    request,
                    expires_at: None,
                    purpose: Purpose::NotificationRest {
                        assembly,
                        next,
                        seq_num: seq,
                    },
                });
                self.start_transfer(now, reg);
                if !self.reassembly.try_reserve(reg, pkt.payload().len()) {
                    if let Some(w) = self.sessions.get_mut(reg).and_then(|s| s.work.as_mut()) {
                        w.queue.pop_front();
                    }
                }
                return;
            }
        }
        let versions = r.objects.as_ref().map_or(&[][..], |o| o.versions());
        let types = self.cfg.model.types_for(versions);
        let cf = content_format(pkt);
        let answer = answer(obs.op, &obs.request, resp_code, cf, pkt.payload(), &types);
        let ev = Uplink::Notify {
            cmd: &obs.cmd,
            seq_num: seq,
            answer: &answer,
        };
        Self::publish(&self.cfg, &r.endpoint, host, ev, out);
        // An error, or a response without Observe, ends the observation (RFC 7641 §3.2, §4.2).
        if !code::is_success(resp_code) || seq.is_none() {
            self.sessions.remove_observation(reg, token);
        }
    }
}
