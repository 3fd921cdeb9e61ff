//! Writes CoAP messages into a caller-owned buffer. Options must be added in ascending number
//! order (the builder sorts nothing, so the hot path pays nothing); a debug assertion guards it.

use super::MsgType;

pub struct MessageBuilder<'b> {
    buf: &'b mut Vec<u8>,
    last_option: u16,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message in `buf` (cleared first). `token` longer than 8 bytes is truncated: tokens
    /// come from the gateway or from a validated view, never longer.
    pub fn new(buf: &'b mut Vec<u8>, t: MsgType, code: u8, mid: u16, token: &[u8]) -> Self {
        let token = &token[..token.len().min(8)];
        buf.clear();
        buf.push(0x40 | ((t as u8) << 4) | token.len() as u8);
        buf.push(code);
        buf.extend_from_slice(&mid.to_be_bytes());
        buf.extend_from_slice(token);
        MessageBuilder {
            buf,
            last_option: 0,
        }
    }

    pub fn option(mut self, number: u16, value: &[u8]) -> Self {
        debug_assert!(number >= self.last_option, "options out of order");
        let delta = number - self.last_option;
        self.last_option = number;
        let (dn, dext) = nibble(delta);
        let (ln, lext) = nibble(value.len() as u16);
        self.buf.push((dn << 4) | ln);
        push_ext(self.buf, dn, dext);
        push_ext(self.buf, ln, lext);
        self.buf.extend_from_slice(value);
        self
    }

    /// A uint option in its minimal length (0 is the empty value).
    pub fn uint_option(self, number: u16, value: u32) -> Self {
        let b = value.to_be_bytes();
        let skip = (value.leading_zeros() / 8) as usize;
        self.option(number, &b[skip..])
    }

    /// Several instances of one option (Uri-Path segments, Location-Path...).
    pub fn options<'v>(mut self, number: u16, values: impl IntoIterator<Item = &'v [u8]>) -> Self {
        for v in values {
            self = self.option(number, v);
        }
        self
    }

    /// Appends the payload (with its marker when non-empty) and finishes.
    pub fn payload(self, payload: &[u8]) {
        if !payload.is_empty() {
            self.buf.push(0xff);
            self.buf.extend_from_slice(payload);
        }
    }

    pub fn finish(self) {}
}

fn nibble(v: u16) -> (u8, u16) {
    if v < 13 {
        (v as u8, 0)
    } else if v < 269 {
        (13, v - 13)
    } else {
        (14, v - 269)
    }
}

fn push_ext(buf: &mut Vec<u8>, n: u8, ext: u16) {
    match n {
        13 => buf.push(ext as u8),
        14 => buf.extend_from_slice(&ext.to_be_bytes()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::{opt, MessageView};
    use super::*;

    #[test]
    fn builds_what_the_view_reads() {
        let mut buf = Vec::new();
        let long = vec![b'x'; 300];
        MessageBuilder::new(&mut buf, MsgType::Con, 0x01, 0x1234, &[1, 2, 3])
            .options(opt::URI_PATH, [b"3".as_slice(), b"0", b"1"])
            .uint_option(opt::CONTENT_FORMAT, 11542)
            .option(opt::URI_QUERY, &long)
            .uint_option(opt::ACCEPT, 0)
            .payload(b"hi");
        let v = MessageView::parse(&buf).unwrap();
        assert_eq!(v.msg_type(), MsgType::Con);
        assert_eq!(v.message_id(), 0x1234);
        assert_eq!(v.token(), &[1, 2, 3]);
        assert_eq!(v.option_values(opt::URI_PATH).count(), 3);
        assert_eq!(v.content_format(), Some(11542));
        assert_eq!(v.first_option(opt::URI_QUERY).unwrap().len(), 300);
        assert_eq!(v.first_option(opt::ACCEPT), Some(&[][..]));
        assert_eq!(v.uint_option(opt::ACCEPT), Some(0));
        assert_eq!(v.payload(), b"hi");
    }

    #[test]
    fn matches_a_captured_reply() {
        // The reference server's reply to lwm2m-node-lib's Register: ACK 2.01, Location-Path rd/0.
        let mut buf = Vec::new();
        MessageBuilder::new(
            &mut buf,
            MsgType::Ack,
            0x41,
            0x59cd,
            &[0x6d, 0xa6, 0x89, 0x17],
        )
        .options(opt::LOCATION_PATH, [b"rd".as_slice(), b"0"])
        .finish();
        assert_eq!(
            buf,
            [0x64, 0x41, 0x59, 0xcd, 0x6d, 0xa6, 0x89, 0x17, 0x82, 0x72, 0x64, 0x01, 0x30]
        );
    }
}
