//! Block-wise requests from devices (RFC 7959 §2.5, Block1 on the server side): a Register or
//! Update (or a Send) whose payload is too large for one datagram arrives block by block. Each
//! block but the last is answered 2.31 Continue; the last one is handled as the whole request.
//!
//! One transfer per peer at a time, identified by the request's method, Uri-Path and Uri-Query
//! (every block repeats them). Bodies are bounded like the gateway's own reassembly: per peer by
//! `block_max_body`, in total per shard by `block_total_max`, and in time by EXCHANGE_LIFETIME
//! (swept with the other transfers). Retransmitted blocks never get here: the dedup cache
//! answers them.

use std::collections::HashMap;
use std::time::Instant;

use crate::coap::block::{Block2Assembly, Block2Step, BlockError, BlockOpt};
use crate::coap::{code, opt, MessageBuilder, MessageView};
use crate::core::registration::Rejection;

use super::{Peer, Shard};

/// A request body arriving block by block.
#[derive(Debug)]
pub(super) struct Incoming {
    /// Method, Uri-Path and Uri-Query of the first block.
    signature: Vec<u8>,
    assembly: Block2Assembly,
}

/// The incoming transfers of a shard, by peer.
pub(super) type IncomingTransfers = HashMap<Peer, Incoming>;

/// What a request's Block1 option means.
pub(super) enum Block1In {
    /// No Block1: handle the datagram as it is.
    Whole,
    /// A block accepted, more to come: answer 2.31 with this Block1.
    Continue(BlockOpt),
    /// The last block: handle this datagram (the request with the whole body), and answer with
    /// this Block1.
    Assembled(Vec<u8>, BlockOpt),
    Refused(Rejection),
}

fn signature(pkt: &MessageView) -> Vec<u8> {
    let mut s = vec![pkt.code()];
    for (n, v) in pkt.options() {
        if n == opt::URI_PATH || n == opt::URI_QUERY {
            s.extend_from_slice(&n.to_be_bytes());
            s.extend_from_slice(&(v.len() as u16).to_be_bytes());
            s.extend_from_slice(v);
        }
    }
    s
}

/// `pkt` with `body` as its payload and without its Block1 and Size1 options.
fn with_body(pkt: &MessageView, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pkt.bytes().len() + body.len());
    let mut b = MessageBuilder::new(
        &mut out,
        pkt.msg_type(),
        pkt.code(),
        pkt.message_id(),
        pkt.token(),
    );
    for (n, v) in pkt.options() {
        if n != opt::BLOCK1 && n != opt::SIZE1 {
            b = b.option(n, v);
        }
    }
    b.payload(body);
    out
}

fn refused(code: u8, reason: impl Into<String>) -> Block1In {
    Block1In::Refused(Rejection {
        code,
        reason: reason.into(),
    })
}

impl Shard {
    /// Takes the Block1 block of a request, if it has one.
    pub(super) fn block1_request(
        &mut self,
        now: Instant,
        peer: Peer,
        pkt: &MessageView,
    ) -> Block1In {
        let Some(raw) = pkt.first_option(opt::BLOCK1) else {
            return Block1In::Whole;
        };
        let Some(block) = BlockOpt::decode(raw).filter(|b| b.is_valid()) else {
            return refused(code::BAD_OPTION, "invalid Block1 option");
        };
        if block.num == 0 && !block.more {
            // One block is the whole body.
            self.drop_incoming(peer);
            return Block1In::Assembled(with_body(pkt, pkt.payload()), block);
        }
        let sig = signature(pkt);
        if block.num == 0 {
            self.drop_incoming(peer);
            self.arm_transfer_sweep(now);
            self.incoming_budget.insert(now, peer);
            let incoming = Incoming {
                signature: sig.clone(),
                assembly: Block2Assembly::new(self.cfg.block_max_body),
            };
            self.incoming.insert(peer, incoming);
        }
        let Some(inc) = self.incoming.get_mut(&peer).filter(|i| i.signature == sig) else {
            return refused(
                code::REQUEST_ENTITY_INCOMPLETE,
                "block-wise request: block out of sequence",
            );
        };
        if !self.incoming_budget.try_reserve(peer, pkt.payload().len()) {
            self.drop_incoming(peer);
            return refused(
                code::REQUEST_ENTITY_TOO_LARGE,
                "block-wise request over the reassembly budget",
            );
        }
        match inc.assembly.push(block, pkt.payload()) {
            Ok(Block2Step::Next(_)) => Block1In::Continue(BlockOpt {
                more: true,
                ..block
            }),
            Ok(Block2Step::Done(body)) => {
                self.drop_incoming(peer);
                Block1In::Assembled(with_body(pkt, &body), block)
            }
            Err(e) => {
                self.drop_incoming(peer);
                let c = match e {
                    BlockError::TooLarge => code::REQUEST_ENTITY_TOO_LARGE,
                    _ => code::REQUEST_ENTITY_INCOMPLETE,
                };
                refused(c, format!("block-wise request: {e}"))
            }
        }
    }

    fn drop_incoming(&mut self, peer: Peer) {
        if self.incoming.remove(&peer).is_some() {
            self.incoming_budget.release(peer);
        }
    }

    /// Drops the incoming transfers older than EXCHANGE_LIFETIME.
    pub(super) fn expire_incoming(&mut self, now: Instant) {
        let lifetime = self.cfg.transmission.exchange_lifetime();
        for peer in self.incoming_budget.expired(now, lifetime) {
            self.incoming.remove(&peer);
        }
    }
}
