//! The confirmable request in flight to a device (NSTART = 1): its transmission and
//! retransmission (RFC 7252 §4.2), the wait for a separate response, block-wise transfer of its
//! body or its answer (RFC 7959), and what its answer is published as.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::coap::block::{Block1Step, Block2Assembly, Block2Step, BlockError, BlockOpt};
use crate::coap::{code, decode_uint, opt, MessageView};
use crate::core::command::Op;
use crate::core::ids::{RegId, Token};
use crate::core::request::{Blocks, Request};
use crate::core::uplink::{Answer, Content, Uplink};
use crate::lwm2m::{codec, link_format, ContentFormat, ResourceTypes};

use super::session::{Exchange, ExchangeState, Observation, Outcome, Purpose, Queued, Transfer};
use super::{content_format, CommandEnd, CommandResult, Output, Shard, Timer, Transmit};

/// How an exchange ended without an answer to publish as its response.
pub(super) enum Ending<'r> {
    /// The device answered RST (`coap_reset`).
    Reset,
    /// No answer (`coap_timeout`), with the reason when it is not plain retransmission timeout.
    TimedOut(Option<&'r str>),
    /// The gateway gave up on it (block-wise failures): the code and why.
    Failed { code: u8, reason: &'r str },
}

/// What a response means for a block-wise exchange.
enum BlockProgress {
    /// Not block-wise (or a single block): use the datagram's payload.
    Single,
    /// More blocks are on their way; nothing to publish yet.
    Continue,
    /// The reassembled body of a Block2 transfer.
    Whole(Vec<u8>),
    /// The transfer failed: publish this code and reason.
    Failed(u8, String),
}

impl Shard {
    /// Puts the queued request `q` in flight with `token` and sends it.
    pub(super) fn start_exchange(
        &mut self,
        now: Instant,
        reg: RegId,
        q: Queued,
        token: Token,
        out: &mut Output,
    ) {
        let Queued {
            op,
            cmd,
            mut request,
            purpose,
            ..
        } = q;
        let block_size = 16usize << self.cfg.block_szx;
        let (transfer, outcome) = match purpose {
            Purpose::NotificationRest {
                assembly,
                next,
                seq_num,
            } => (
                Transfer::Block2 {
                    assembly,
                    next,
                    observe: None,
                },
                Outcome::Notification { seq_num },
            ),
            Purpose::Command if request.payload.len() > block_size => {
                let body = std::mem::take(&mut request.payload);
                let sender = crate::coap::block::Block1Sender::new(body, self.cfg.block_szx);
                (Transfer::Block1(sender), Outcome::Response)
            }
            Purpose::Command => (Transfer::Single, Outcome::Response),
        };
        let ex = Exchange {
            op,
            cmd,
            request,
            token,
            mid: 0,
            bytes: Vec::new(),
            retransmits: 0,
            timeout: Duration::ZERO,
            deadline: now,
            started: now,
            state: ExchangeState::AwaitAck,
            transfer,
            outcome,
        };
        self.sessions.begin_exchange(reg, Box::new(ex));
        self.transmit_exchange(now, reg, out);
    }

    /// Sends the exchange in flight (again, for its next block) as a fresh CON: new message id,
    /// fresh retransmission timer, same token.
    fn transmit_exchange(&mut self, now: Instant, reg: RegId, out: &mut Output) {
        let mid = self.mids.alloc();
        let timeout = self.cfg.transmission.initial_timeout(self.rng.gen::<f64>());
        let Some(s) = self.sessions.get(reg) else {
            return;
        };
        let Some(ex) = s.inflight() else {
            return;
        };
        let alt = s.reg.objects.as_ref().map_or("/", |o| o.alternate_path());
        let blocks = match &ex.transfer {
            Transfer::Single => Blocks::default(),
            Transfer::Block1(b) => {
                let (opt, slice) = b.block(b.current());
                Blocks {
                    block1: Some((opt, slice, b.size1())),
                    block2: None,
                }
            }
            Transfer::Block2 { next, .. } => Blocks {
                block1: None,
                block2: Some(*next),
            },
        };
        let token = ex.token.to_bytes();
        ex.request
            .encode_blocks(&mut self.buf, mid, &token, alt, &blocks);
        let peer = s.peer;
        let Some(ex) = self.sessions.resend_exchange(reg, mid) else {
            return;
        };
        ex.bytes = self.buf.clone();
        ex.retransmits = 0;
        ex.timeout = timeout;
        ex.deadline = now + timeout;
        ex.state = ExchangeState::AwaitAck;
        out.transmits.push(Transmit {
            peer,
            bytes: ex.bytes.clone(),
        });
        let (token, deadline) = (ex.token, ex.deadline);
        self.timers
            .push(now, deadline, Timer::Exchange { reg, token });
    }

    /// Retransmits the exchange `token` of `reg` if its timer is still the one in force, or
    /// gives up on it after MAX_RETRANSMIT (or after the wait for a separate response).
    pub(super) fn exchange_timer(
        &mut self,
        now: Instant,
        reg: RegId,
        token: Token,
        out: &mut Output,
    ) {
        let max = self.cfg.transmission.max_retransmit;
        let Some(s) = self.sessions.get_mut(reg) else {
            return;
        };
        let peer = s.peer;
        let Some(ex) = s
            .inflight_mut()
            .filter(|e| e.token == token && e.deadline <= now)
        else {
            return;
        };
        if ex.state == ExchangeState::AwaitAck && ex.retransmits < max {
            ex.retransmits += 1;
            out.stats.retransmissions += 1;
            ex.timeout *= 2;
            ex.deadline = now + ex.timeout;
            out.transmits.push(Transmit {
                peer,
                bytes: ex.bytes.clone(),
            });
            let d = ex.deadline;
            self.timers.push(now, d, Timer::Exchange { reg, token });
            return;
        }
        let reason = (ex.state == ExchangeState::AwaitSeparate)
            .then_some("no separate response after empty ACK");
        self.finish_exchange(reg, Ending::TimedOut(reason), out);
        self.pump(now, reg, out);
    }

    /// An empty ACK to the exchange in flight: a separate response is coming (RFC 7252 §5.2.2).
    /// Stop retransmitting, wait for it, and say so on MQTT (`ack`).
    pub(super) fn on_empty_ack(&mut self, now: Instant, reg: RegId, out: &mut Output) {
        let deadline = now + self.cfg.separate_response_timeout;
        let t = self.stamp(now);
        let Some(ex) = self.sessions.acked_exchange(reg) else {
            return;
        };
        ex.state = ExchangeState::AwaitSeparate;
        ex.deadline = deadline;
        let token = ex.token;
        let Some(s) = self.sessions.get_mut(reg) else {
            return;
        };
        s.last_uplink = t;
        if let Some(ex) = s.inflight() {
            Self::emit(&self.cfg, s, Uplink::Acked(&ex.cmd), out);
        }
        self.timers
            .push(now, deadline, Timer::Exchange { reg, token });
    }

    /// Ends the exchange in flight for `reg` and publishes how it ended.
    pub(super) fn finish_exchange(&mut self, reg: RegId, ending: Ending, out: &mut Output) {
        let Some(ex) = self.sessions.end_exchange(reg) else {
            return;
        };
        self.reassembly.release(reg);
        let Some(s) = self.sessions.get(reg) else {
            return;
        };
        let cmd = &ex.cmd;
        let ev = match ending {
            Ending::Reset => Uplink::Reset(cmd),
            Ending::TimedOut(reason) => Uplink::TimedOut { cmd, reason },
            Ending::Failed { code, reason } => Uplink::Refused { cmd, code, reason },
        };
        Self::emit(&self.cfg, s, ev, out);
    }

    /// The device's answer to the exchange in flight.
    pub(super) fn exchange_response(
        &mut self,
        now: Instant,
        reg: RegId,
        pkt: &MessageView,
        out: &mut Output,
    ) {
        let resp_code = pkt.code();
        let cf = content_format(pkt);
        let observe = pkt.first_option(opt::OBSERVE).and_then(decode_uint);
        let body = match self.block_step(now, reg, pkt, resp_code, out) {
            BlockProgress::Continue => return,
            BlockProgress::Failed(code, why) => {
                let ending = Ending::Failed { code, reason: &why };
                return self.finish_exchange(reg, ending, out);
            }
            BlockProgress::Whole(b) => Some(b),
            BlockProgress::Single => None,
        };
        let Some(ex) = self.sessions.end_exchange(reg) else {
            return;
        };
        let Some(s) = self.sessions.get(reg) else {
            return;
        };
        let first_observe = match &ex.transfer {
            Transfer::Block2 { observe, .. } => *observe,
            _ => None,
        };
        let observe = observe.or(first_observe);
        let payload = body.as_deref().unwrap_or(pkt.payload());
        let types = self.cfg.model.types_for(s.versions());
        let answer = answer(ex.op, &ex.request, resp_code, cf, payload, &types);
        let ev = match ex.outcome {
            // The remaining blocks of a notification: publish the whole as that notification.
            Outcome::Notification { seq_num } => Uplink::Notify {
                cmd: &ex.cmd,
                seq_num,
                answer: &answer,
            },
            // EMQX 5.x adds seqNum to the first observe response when the device gave a
            // non-zero Observe value.
            Outcome::Response => Uplink::Response {
                cmd: &ex.cmd,
                seq_num: observe.filter(|v| *v != 0 && ex.op.starts_observation()),
                answer: &answer,
            },
        };
        Self::emit(&self.cfg, s, ev, out);
        if ex.outcome != Outcome::Response {
            return;
        }
        out.commands.push(CommandEnd {
            op: Some(ex.op),
            result: CommandResult::Code(resp_code),
            rtt: Some(now.saturating_duration_since(ex.started)),
        });
        if ex.op.starts_observation() && code::is_success(resp_code) && observe.is_some() {
            // RFC 7641 §3.1: an Observe option in the answer means the observation is on.
            let obs = Observation {
                op: ex.op,
                cmd: ex.cmd,
                request: ex.request,
                last_seq: observe,
                last_at: now,
            };
            self.sessions.add_observation(reg, ex.token, Box::new(obs));
        } else if ex.op.cancels_observation() {
            // The cancel reused the observation's token; both are done now.
            self.sessions.remove_observation(reg, ex.token);
        }
    }

    /// Block-wise bookkeeping of a response to the exchange in flight: asks for the next Block2 or
    /// sends the next Block1 and says `Continue`, or hands over the whole reassembled body.
    fn block_step(
        &mut self,
        now: Instant,
        reg: RegId,
        pkt: &MessageView,
        resp_code: u8,
        out: &mut Output,
    ) -> BlockProgress {
        let block1 = pkt.first_option(opt::BLOCK1).and_then(BlockOpt::decode);
        let block2_raw = pkt.first_option(opt::BLOCK2);
        let block2 = block2_raw.and_then(BlockOpt::decode);
        let max_body = self.cfg.block_max_body;
        let Some(ex) = self.sessions.get_mut(reg).and_then(|s| s.inflight_mut()) else {
            return BlockProgress::Single;
        };
        // Block1: the device acknowledges one block of our request body.
        if let Transfer::Block1(b1) = &mut ex.transfer {
            let step = match resp_code {
                code::CONTINUE => Some(b1.on_continue(block1)),
                code::REQUEST_ENTITY_TOO_LARGE => Some(b1.on_too_large(block1)),
                _ => None,
            };
            match step {
                Some(Ok(Block1Step::Send(_))) => {
                    self.transmit_exchange(now, reg, out);
                    return BlockProgress::Continue;
                }
                Some(Err(e)) => {
                    let why = format!("block-wise write: {e}");
                    return BlockProgress::Failed(code::REQUEST_ENTITY_INCOMPLETE, why);
                }
                Some(Ok(Block1Step::Done)) | None => {}
            }
        }
        if !code::is_success(resp_code) {
            return BlockProgress::Single;
        }
        // Block2: the answer comes in blocks; fetch them all before publishing.
        if block2_raw.is_some() && block2.is_none() {
            return BlockProgress::Failed(code::BAD_OPTION, "invalid Block2 option".into());
        }
        let Some(b2) = block2 else {
            return BlockProgress::Single;
        };
        if !matches!(ex.transfer, Transfer::Block2 { .. }) {
            if b2.num == 0 && !b2.more {
                return BlockProgress::Single;
            }
            // A finished Block1 body goes back into the request: the follow-ups repeat it.
            let observe = pkt.first_option(opt::OBSERVE).and_then(decode_uint);
            let assembly = Block2Assembly::new(max_body);
            let before = std::mem::replace(
                &mut ex.transfer,
                Transfer::Block2 {
                    assembly,
                    next: b2,
                    observe,
                },
            );
            if let Transfer::Block1(b1) = before {
                ex.request.payload = b1.into_body();
            }
            self.start_transfer(now, reg);
        }
        if !self.reassembly.try_reserve(reg, pkt.payload().len()) {
            let why = "block-wise body over the reassembly budget".into();
            return BlockProgress::Failed(code::REQUEST_ENTITY_TOO_LARGE, why);
        }
        let Some(ex) = self.sessions.get_mut(reg).and_then(|s| s.inflight_mut()) else {
            return BlockProgress::Single;
        };
        let Transfer::Block2 { assembly, next, .. } = &mut ex.transfer else {
            return BlockProgress::Single;
        };
        match assembly.push_with_etag(b2, pkt.payload(), pkt.first_option(opt::ETAG)) {
            Ok(Block2Step::Next(n)) => {
                *next = n;
                self.transmit_exchange(now, reg, out);
                BlockProgress::Continue
            }
            Ok(Block2Step::Done(body)) => {
                self.reassembly.release(reg);
                BlockProgress::Whole(body)
            }
            Err(e) => {
                let c = match e {
                    BlockError::TooLarge => code::REQUEST_ENTITY_TOO_LARGE,
                    _ => code::REQUEST_ENTITY_INCOMPLETE,
                };
                BlockProgress::Failed(c, format!("block-wise read: {e}"))
            }
        }
    }

    /// Accounts a new block-wise reassembly and makes sure the expiry sweep runs.
    pub(super) fn start_transfer(&mut self, now: Instant, reg: RegId) {
        self.arm_transfer_sweep(now);
        self.reassembly.insert(now, reg);
    }

    /// Makes sure the once-a-second sweep of partial transfers runs (before one is recorded).
    pub(super) fn arm_transfer_sweep(&mut self, now: Instant) {
        if self.reassembly.is_empty() && self.incoming_budget.is_empty() {
            self.timers
                .push(now, now + Duration::from_secs(1), Timer::Transfers);
        }
    }

    /// Partial block-wise transfers expire after EXCHANGE_LIFETIME even if the device keeps
    /// answering slowly: the exchange is answered `4.08` and its memory released.
    pub(super) fn expire_transfers(&mut self, now: Instant, out: &mut Output) {
        let lifetime = self.cfg.transmission.exchange_lifetime();
        for reg in self.reassembly.expired(now, lifetime) {
            let ending = Ending::Failed {
                code: code::REQUEST_ENTITY_INCOMPLETE,
                reason: "block-wise transfer expired",
            };
            self.finish_exchange(reg, ending, out);
            self.pump(now, reg, out);
        }
        self.expire_incoming(now);
        if !self.reassembly.is_empty() || !self.incoming_budget.is_empty() {
            self.timers
                .push(now, now + Duration::from_secs(1), Timer::Transfers);
        }
    }
}

/// What a device's response to `op` on `req` means for the MQTT message: the code, the decoded
/// content, and why decoding failed when it did.
pub(super) fn answer(
    op: Op,
    req: &Request,
    resp_code: u8,
    cf: Option<u16>,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Answer {
    let plain = |code, content| Answer {
        code,
        content,
        reason: None,
    };
    if !code::is_success(resp_code) {
        return plain(resp_code, Content::None);
    }
    if op == Op::Discover {
        let text = String::from_utf8_lossy(payload);
        return plain(
            resp_code,
            Content::Links(link_format::discover_links(&text)),
        );
    }
    if !op.reads_content() {
        return plain(resp_code, Content::None);
    }
    if payload.is_empty() {
        return plain(resp_code, Content::Records(Vec::new()));
    }
    // No Content-Format means text/plain: LwM2M 1.0 clients such as lwm2m-node-lib omit it.
    let n = cf.unwrap_or(0);
    let Some(f) = ContentFormat::from_u16(n) else {
        return Answer {
            code: code::BAD_REQUEST,
            content: Content::None,
            reason: Some(format!("unsupported content format {n}")),
        };
    };
    match codec::decode(f, &req.path, payload, types) {
        Ok(records) => plain(resp_code, Content::Records(records)),
        Err(e) => Answer {
            code: code::BAD_REQUEST,
            content: Content::None,
            reason: Some(format!("cannot decode {} payload: {e}", f.name())),
        },
    }
}
