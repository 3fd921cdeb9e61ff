//! CoAP as the tests' devices speak it: [`Msg`] builds any message a device sends (requests,
//! piggybacked and separate responses, notifications, block-wise pieces); the readers below take
//! apart what the gateway sends.

use lwm2m_gateway::coap::block::BlockOpt;
use lwm2m_gateway::coap::{code, opt, MessageBuilder, MessageView, MsgType};

#[derive(Debug, Clone)]
enum OptValue {
    Bytes(Vec<u8>),
    Uint(u32),
}

/// A CoAP message under construction. Options may be added in any order: [`Msg::build`] writes
/// them by ascending number, several of one number in the order they were added.
#[derive(Debug, Clone)]
pub struct Msg {
    t: MsgType,
    code: u8,
    mid: u16,
    token: Vec<u8>,
    opts: Vec<(u16, OptValue)>,
    payload: Vec<u8>,
}

impl Msg {
    pub fn new(t: MsgType, code: u8, mid: u16) -> Msg {
        Msg {
            t,
            code,
            mid,
            token: Vec::new(),
            opts: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn con(code: u8, mid: u16) -> Msg {
        Msg::new(MsgType::Con, code, mid)
    }

    pub fn non(code: u8, mid: u16) -> Msg {
        Msg::new(MsgType::Non, code, mid)
    }

    pub fn ack(code: u8, mid: u16) -> Msg {
        Msg::new(MsgType::Ack, code, mid)
    }

    /// The piggybacked answer to `req`, a request the gateway sent: an ACK with its message id and
    /// token.
    pub fn ack_to(req: &[u8], code: u8) -> Msg {
        let v = MessageView::parse(req).unwrap();
        Msg::ack(code, v.message_id()).token(v.token())
    }

    pub fn token(mut self, token: &[u8]) -> Msg {
        self.token = token.to_vec();
        self
    }

    pub fn option(mut self, n: u16, value: &[u8]) -> Msg {
        self.opts.push((n, OptValue::Bytes(value.to_vec())));
        self
    }

    /// A uint option, in its minimal length.
    pub fn uint_option(mut self, n: u16, value: u32) -> Msg {
        self.opts.push((n, OptValue::Uint(value)));
        self
    }

    /// One Uri-Path option per segment.
    pub fn path(self, segments: &[&str]) -> Msg {
        segments
            .iter()
            .fold(self, |m, s| m.option(opt::URI_PATH, s.as_bytes()))
    }

    /// One Uri-Query option per item.
    pub fn query(self, items: &[&str]) -> Msg {
        items
            .iter()
            .fold(self, |m, q| m.option(opt::URI_QUERY, q.as_bytes()))
    }

    /// A Content-Format option (none for `None`).
    pub fn cf(self, cf: impl Into<Option<u32>>) -> Msg {
        match cf.into() {
            Some(cf) => self.uint_option(opt::CONTENT_FORMAT, cf),
            None => self,
        }
    }

    /// An Observe option (none for `None`).
    pub fn observe(self, seq: impl Into<Option<u32>>) -> Msg {
        match seq.into() {
            Some(seq) => self.uint_option(opt::OBSERVE, seq),
            None => self,
        }
    }

    /// A Block1 or Block2 option (`n`).
    pub fn block(self, n: u16, num: u32, more: bool, szx: u8) -> Msg {
        let mut tmp = [0u8; 3];
        let value = BlockOpt { num, more, szx }.encode(&mut tmp).to_vec();
        self.option(n, &value)
    }

    pub fn payload(mut self, payload: &[u8]) -> Msg {
        self.payload = payload.to_vec();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut opts: Vec<&(u16, OptValue)> = self.opts.iter().collect();
        opts.sort_by_key(|(n, _)| *n);
        let mut out = Vec::new();
        let mut b = MessageBuilder::new(&mut out, self.t, self.code, self.mid, &self.token);
        for (n, v) in opts {
            b = match v {
                OptValue::Bytes(v) => b.option(*n, v),
                OptValue::Uint(v) => b.uint_option(*n, *v),
            };
        }
        b.payload(&self.payload);
        out
    }
}

/// The empty ACK to message `mid` (the first half of a separate response).
pub fn empty_ack(mid: u16) -> Vec<u8> {
    Msg::ack(code::EMPTY, mid).build()
}

/// The RST to message `mid`.
pub fn reset(mid: u16) -> Vec<u8> {
    Msg::new(MsgType::Rst, code::EMPTY, mid).build()
}

/// A piggybacked answer to a request the gateway sent.
pub fn answer(req: &[u8], code: u8, cf: Option<u32>, payload: &[u8]) -> Vec<u8> {
    Msg::ack_to(req, code).cf(cf).payload(payload).build()
}

/// A piggybacked 2.05 to an observe request the gateway sent, with Observe `seq` and a
/// text/plain value: the answer that establishes the observation.
pub fn observe_answer(req: &[u8], seq: u32, value: &[u8]) -> Vec<u8> {
    Msg::ack_to(req, code::CONTENT)
        .observe(Some(seq))
        .cf(0)
        .payload(value)
        .build()
}

/// A NON notification on `token` with Observe `seq` and a text/plain value.
pub fn notification(token: &[u8], mid: u16, seq: u32, value: &[u8]) -> Vec<u8> {
    Msg::new(MsgType::Non, code::CONTENT, mid)
        .token(token)
        .observe(Some(seq))
        .cf(0)
        .payload(value)
        .build()
}

/// A SenML JSON payload with one record.
pub fn senml(bn: &str, v: i64) -> Vec<u8> {
    format!(r#"[{{"bn":"{bn}","v":{v}}}]"#).into_bytes()
}

/// The header of a message: (type, code, message id, token).
pub fn reply_of(bytes: &[u8]) -> (MsgType, u8, u16, Vec<u8>) {
    let v = MessageView::parse(bytes).unwrap();
    (v.msg_type(), v.code(), v.message_id(), v.token().to_vec())
}

/// The values of every option `n`, as text.
pub fn option_strings(bytes: &[u8], n: u16) -> Vec<String> {
    MessageView::parse(bytes)
        .unwrap()
        .option_values(n)
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

/// The Uri-Path segments of a request the gateway sent.
pub fn path_of(bytes: &[u8]) -> Vec<String> {
    option_strings(bytes, opt::URI_PATH)
}

/// The Uri-Path of a request the gateway sent, as `/3/0/1`.
pub fn uri_path(bytes: &[u8]) -> String {
    format!("/{}", path_of(bytes).join("/"))
}

/// The registration's id in the Location-Path `rd/<id>` of a 2.01 Created.
pub fn location_id(bytes: &[u8]) -> Option<String> {
    option_strings(bytes, opt::LOCATION_PATH).get(1).cloned()
}

/// The (num, more, szx) of the Block1 or Block2 option `n`.
pub fn block_opt(v: &MessageView, n: u16) -> Option<(u32, bool, u8)> {
    let b = BlockOpt::decode(v.first_option(n)?)?;
    Some((b.num, b.more, b.szx))
}
