//! A checked zero-copy view over a CoAP datagram.
//!
//! `MessageView::parse` validates the whole message once (version, token length, every option
//! header and length, the payload marker) against the bytes actually present; afterwards every
//! accessor is infallible and allocation-free. This is what the event loop uses to route.

use super::{decode_uint, opt, MsgType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("shorter than the 4-byte header")]
    TooShort,
    #[error("CoAP version is not 1")]
    BadVersion,
    #[error("token length above 8 or beyond the datagram")]
    BadToken,
    #[error("option header or length beyond the datagram")]
    BadOption,
    #[error("payload marker followed by no payload")]
    EmptyPayload,
    #[error("empty message (code 0.00) with token, options or payload")]
    BadEmpty,
}

#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    buf: &'a [u8],
    /// Where options start (after the token).
    opts_start: usize,
    /// Where options end (payload marker or end of datagram).
    opts_end: usize,
}

impl<'a> MessageView<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<MessageView<'a>, ViewError> {
        if buf.len() < 4 {
            return Err(ViewError::TooShort);
        }
        if buf[0] >> 6 != 1 {
            return Err(ViewError::BadVersion);
        }
        let tkl = (buf[0] & 0x0f) as usize;
        if tkl > 8 || 4 + tkl > buf.len() {
            return Err(ViewError::BadToken);
        }
        let opts_start = 4 + tkl;
        let mut it = OptionIter {
            buf,
            pos: opts_start,
            number: 0,
        };
        while it.next_checked()?.is_some() {}
        let opts_end = it.pos;
        if opts_end < buf.len() && opts_end + 1 == buf.len() {
            return Err(ViewError::EmptyPayload);
        }
        let v = MessageView {
            buf,
            opts_start,
            opts_end,
        };
        // RFC 7252 §4.1: an empty message carries nothing after the message id.
        if v.code() == 0 && buf.len() != 4 {
            return Err(ViewError::BadEmpty);
        }
        Ok(v)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn msg_type(&self) -> MsgType {
        MsgType::from_bits(self.buf[0] >> 4)
    }
    pub fn code(&self) -> u8 {
        self.buf[1]
    }
    pub fn message_id(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn token(&self) -> &'a [u8] {
        &self.buf[4..self.opts_start]
    }
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter {
            buf: &self.buf[..self.opts_end],
            pos: self.opts_start,
            number: 0,
        }
    }
    /// Values of every instance of option `n`, in order.
    pub fn option_values(&self, n: u16) -> impl Iterator<Item = &'a [u8]> {
        self.options()
            .filter(move |(num, _)| *num == n)
            .map(|(_, v)| v)
    }
    pub fn first_option(&self, n: u16) -> Option<&'a [u8]> {
        self.options().find(|(num, _)| *num == n).map(|(_, v)| v)
    }
    pub fn uint_option(&self, n: u16) -> Option<u32> {
        self.first_option(n).and_then(decode_uint)
    }
    pub fn content_format(&self) -> Option<u16> {
        self.uint_option(opt::CONTENT_FORMAT)
            .and_then(|v| u16::try_from(v).ok())
    }
    pub fn payload(&self) -> &'a [u8] {
        if self.opts_end < self.buf.len() {
            &self.buf[self.opts_end + 1..]
        } else {
            &[]
        }
    }
    /// The first unrecognised critical option, if any (requests carrying one get 4.02).
    pub fn unknown_critical_option(&self) -> Option<u16> {
        self.options()
            .map(|(n, _)| n)
            .find(|n| opt::is_critical(*n) && !opt::is_known(*n))
    }
}

/// Iterates `(option number, value)` pairs. Only constructed over validated bytes by
/// [`MessageView`], so plain iteration cannot fail.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    buf: &'a [u8],
    pos: usize,
    number: u16,
}

impl<'a> OptionIter<'a> {
    fn ext(&mut self, nibble: u8) -> Result<u16, ViewError> {
        match nibble {
            13 => {
                let b = *self.buf.get(self.pos).ok_or(ViewError::BadOption)?;
                self.pos += 1;
                Ok(b as u16 + 13)
            }
            14 => {
                let hi = *self.buf.get(self.pos).ok_or(ViewError::BadOption)?;
                let lo = *self.buf.get(self.pos + 1).ok_or(ViewError::BadOption)?;
                self.pos += 2;
                u16::from_be_bytes([hi, lo])
                    .checked_add(269)
                    .ok_or(ViewError::BadOption)
            }
            15 => Err(ViewError::BadOption),
            n => Ok(n as u16),
        }
    }

    fn next_checked(&mut self) -> Result<Option<(u16, &'a [u8])>, ViewError> {
        let Some(&head) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        if head == 0xff {
            return Ok(None);
        }
        self.pos += 1;
        let delta = self.ext(head >> 4)?;
        let len = self.ext(head & 0x0f)? as usize;
        let end = self.pos.checked_add(len).ok_or(ViewError::BadOption)?;
        if end > self.buf.len() {
            return Err(ViewError::BadOption);
        }
        self.number = self.number.checked_add(delta).ok_or(ViewError::BadOption)?;
        let v = &self.buf[self.pos..end];
        self.pos = end;
        Ok(Some((self.number, v)))
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        self.next_checked().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_node_lib_register() {
        let b = hex("440259cd6da68917b272644b65703d6e6f64652d657031056c743d3630096c776d326d3d312e3003623d55ff3c2f332f303e2c3c2f312f303e");
        let v = MessageView::parse(&b).unwrap();
        assert_eq!(v.msg_type(), MsgType::Con);
        assert_eq!(v.code(), 0x02);
        assert_eq!(v.message_id(), 0x59cd);
        assert_eq!(v.token(), &hex("6da68917")[..]);
        let path: Vec<_> = v.option_values(opt::URI_PATH).collect();
        assert_eq!(path, vec![b"rd".as_slice()]);
        let q: Vec<_> = v
            .option_values(opt::URI_QUERY)
            .map(|q| std::str::from_utf8(q).unwrap())
            .collect();
        assert_eq!(q, vec!["ep=node-ep1", "lt=60", "lwm2m=1.0", "b=U"]);
        assert_eq!(v.payload(), b"</3/0>,</1/0>");
        assert_eq!(v.content_format(), None);
        assert_eq!(v.unknown_critical_option(), None);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            MessageView::parse(&[0x40, 0x01]).unwrap_err(),
            ViewError::TooShort
        );
        assert_eq!(
            MessageView::parse(&[0x80, 0x01, 0, 0]).unwrap_err(),
            ViewError::BadVersion
        );
        assert_eq!(
            MessageView::parse(&[0x49, 0x01, 0, 0]).unwrap_err(),
            ViewError::BadToken
        );
        assert_eq!(
            MessageView::parse(&[0x42, 0x01, 0, 0, 1]).unwrap_err(),
            ViewError::BadToken
        );
        // option claims 5 bytes, 1 present
        assert_eq!(
            MessageView::parse(&[0x40, 0x01, 0, 0, 0xb5, b'r']).unwrap_err(),
            ViewError::BadOption
        );
        // delta nibble 15 without 0xff marker
        assert_eq!(
            MessageView::parse(&[0x40, 0x01, 0, 0, 0xf1, 0]).unwrap_err(),
            ViewError::BadOption
        );
        // extended length byte missing
        assert_eq!(
            MessageView::parse(&[0x40, 0x01, 0, 0, 0xbd]).unwrap_err(),
            ViewError::BadOption
        );
        // marker with no payload
        assert_eq!(
            MessageView::parse(&[0x40, 0x01, 0, 0, 0xff]).unwrap_err(),
            ViewError::EmptyPayload
        );
        // empty message with a payload
        assert_eq!(
            MessageView::parse(&[0x60, 0x00, 0, 0, 0xff, 1]).unwrap_err(),
            ViewError::BadEmpty
        );
        // option number overflow
        assert_eq!(
            MessageView::parse(&[0x40, 0x01, 0, 0, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff])
                .unwrap_err(),
            ViewError::BadOption
        );
    }

    #[test]
    fn flags_unknown_critical_options() {
        // option 9 (OSCORE, critical, not understood here), empty value
        let v = MessageView::parse(&[0x40, 0x01, 0, 0, 0x90]).unwrap();
        assert_eq!(v.unknown_critical_option(), Some(9));
        // option 2048+? elective unknown option 10 is fine
        let v = MessageView::parse(&[0x40, 0x01, 0, 0, 0xa0]).unwrap();
        assert_eq!(v.unknown_critical_option(), None);
    }
}
