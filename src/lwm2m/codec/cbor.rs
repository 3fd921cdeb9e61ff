//! A small bounded CBOR (RFC 8949) reader/writer, shared by CBOR single values (60), SenML CBOR
//! (112) and LwM2M CBOR (11544); plus the single-value format itself.
//!
//! Hand-written rather than a crate because the guarantees matter more than features: recursion
//! stops at [`MAX_DEPTH`] (tags count as a level, so a chain of 10k tags is as harmless as 10k
//! nested arrays), a declared array/map/string length is checked against the bytes still present
//! before anything is allocated (each element needs at least one byte), and strings are borrowed
//! from the payload when they are definite-length. Tags are skipped except decimal fractions and
//! bigfloats (4/5), which LwM2M CBOR allows for floats.

use std::borrow::Cow;

use super::{invalid, type_of, CodecError};
use crate::lwm2m::{Path, Record, ResourceType, ResourceTypes, Value};

/// Deepest container/tag nesting accepted. LwM2M data needs at most 5 (SenML: 2; LwM2M CBOR: a
/// map per path level plus a tagged value), so 16 leaves room for odd but legal encoders.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Cbor<'a> {
    Uint(u64),
    /// The negative integer `-1 - n`.
    Nint(u64),
    Bytes(Cow<'a, [u8]>),
    Text(Cow<'a, str>),
    Array(Vec<Cbor<'a>>),
    Map(Vec<(Cbor<'a>, Cbor<'a>)>),
    Bool(bool),
    Null,
    Undefined,
    Float(f64),
    Simple(u8),
}

impl Cbor<'_> {
    /// Integer value of `Uint`/`Nint`, widened so that every CBOR integer fits.
    pub fn as_int(&self) -> Option<i128> {
        match *self {
            Cbor::Uint(n) => Some(n as i128),
            Cbor::Nint(n) => Some(-1 - n as i128),
            _ => None,
        }
    }
}

/// Parses exactly one CBOR item spanning all of `input`.
pub fn parse(input: &[u8]) -> Result<Cbor<'_>, CodecError> {
    let mut r = Reader { buf: input, pos: 0 };
    let item = r.item(0)?;
    if r.pos != input.len() {
        return Err(invalid("trailing bytes after the CBOR item"));
    }
    Ok(item)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() as u64 {
            return Err(CodecError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn be(&mut self, n: u64) -> Result<u64, CodecError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    /// The argument of a head; `None` for the indefinite marker (additional info 31).
    fn arg(&mut self, ai: u8) -> Result<Option<u64>, CodecError> {
        match ai {
            0..=23 => Ok(Some(ai as u64)),
            24 => Ok(Some(self.byte()? as u64)),
            25 => self.be(2).map(Some),
            26 => self.be(4).map(Some),
            27 => self.be(8).map(Some),
            31 => Ok(None),
            _ => Err(invalid("reserved CBOR additional information")),
        }
    }

    fn definite(&mut self, ai: u8) -> Result<u64, CodecError> {
        self.arg(ai)?
            .ok_or_else(|| invalid("indefinite length not allowed here"))
    }

    fn at_break(&mut self) -> Result<bool, CodecError> {
        match self.buf.get(self.pos) {
            None => Err(CodecError::Truncated),
            Some(0xFF) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Concatenated chunks of an indefinite-length byte/text string (each chunk definite and of
    /// the same major type, RFC 8949 §3.2.3).
    fn chunks(&mut self, major: u8) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        while !self.at_break()? {
            let ib = self.byte()?;
            if ib >> 5 != major {
                return Err(invalid("bad chunk in indefinite-length string"));
            }
            let n = self.definite(ib & 0x1F)?;
            out.extend_from_slice(self.take(n)?);
        }
        Ok(out)
    }

    fn item(&mut self, depth: usize) -> Result<Cbor<'a>, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep);
        }
        let ib = self.byte()?;
        let (major, ai) = (ib >> 5, ib & 0x1F);
        Ok(match major {
            0 => Cbor::Uint(self.definite(ai)?),
            1 => Cbor::Nint(self.definite(ai)?),
            2 => match self.arg(ai)? {
                Some(n) => Cbor::Bytes(Cow::Borrowed(self.take(n)?)),
                None => Cbor::Bytes(Cow::Owned(self.chunks(2)?)),
            },
            3 => match self.arg(ai)? {
                Some(n) => Cbor::Text(Cow::Borrowed(
                    std::str::from_utf8(self.take(n)?)
                        .map_err(|_| invalid("invalid UTF-8 in CBOR text"))?,
                )),
                None => Cbor::Text(Cow::Owned(
                    String::from_utf8(self.chunks(3)?)
                        .map_err(|_| invalid("invalid UTF-8 in CBOR text"))?,
                )),
            },
            4 => match self.arg(ai)? {
                Some(n) => {
                    if n > self.remaining() as u64 {
                        return Err(CodecError::Truncated);
                    }
                    let mut v = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        v.push(self.item(depth + 1)?);
                    }
                    Cbor::Array(v)
                }
                None => {
                    let mut v = Vec::new();
                    while !self.at_break()? {
                        v.push(self.item(depth + 1)?);
                    }
                    Cbor::Array(v)
                }
            },
            5 => match self.arg(ai)? {
                Some(n) => {
                    if n.saturating_mul(2) > self.remaining() as u64 {
                        return Err(CodecError::Truncated);
                    }
                    let mut v = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let k = self.item(depth + 1)?;
                        v.push((k, self.item(depth + 1)?));
                    }
                    Cbor::Map(v)
                }
                None => {
                    let mut v = Vec::new();
                    while !self.at_break()? {
                        let k = self.item(depth + 1)?;
                        v.push((k, self.item(depth + 1)?));
                    }
                    Cbor::Map(v)
                }
            },
            6 => {
                let tag = self.definite(ai)?;
                let inner = self.item(depth + 1)?;
                match tag {
                    4 | 5 => fraction(tag, inner)?,
                    _ => inner,
                }
            }
            _ => match ai {
                0..=19 => Cbor::Simple(ai),
                20 => Cbor::Bool(false),
                21 => Cbor::Bool(true),
                22 => Cbor::Null,
                23 => Cbor::Undefined,
                24 => match self.byte()? {
                    v @ 32..=255 => Cbor::Simple(v),
                    _ => return Err(invalid("badly encoded CBOR simple value")),
                },
                25 => Cbor::Float(f16_to_f64(self.be(2)? as u16)),
                26 => Cbor::Float(f32::from_bits(self.be(4)? as u32) as f64),
                27 => Cbor::Float(f64::from_bits(self.be(8)?)),
                31 => return Err(invalid("unexpected CBOR break")),
                _ => return Err(invalid("reserved CBOR simple value")),
            },
        })
    }
}

/// Tag 4 (decimal fraction `m * 10^e`) or 5 (bigfloat `m * 2^e`) with `[e, m]` integers.
fn fraction<'a>(tag: u64, inner: Cbor<'a>) -> Result<Cbor<'a>, CodecError> {
    let Cbor::Array(ref v) = inner else {
        return Err(invalid("tag 4/5 needs an array"));
    };
    let (Some(e), Some(m)) = (
        v.first().and_then(Cbor::as_int),
        v.get(1).and_then(Cbor::as_int),
    ) else {
        return Err(invalid("tag 4/5 needs [exponent, mantissa] integers"));
    };
    if v.len() != 2 {
        return Err(invalid("tag 4/5 needs [exponent, mantissa] integers"));
    }
    let e = e.clamp(-2000, 2000) as i32;
    let radix: f64 = if tag == 4 { 10.0 } else { 2.0 };
    Ok(Cbor::Float(m as f64 * radix.powi(e)))
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1F) as i32;
    let mant = (h & 0x3FF) as f64;
    sign * match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// Half-precision bits of `f` when the conversion is exact.
fn f32_to_f16_exact(f: f32) -> Option<u16> {
    let bits = f.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xFF) as i32;
    let mant = bits & 0x7F_FFFF;
    if exp == 0xFF {
        return Some(if mant != 0 { 0x7E00 } else { sign | 0x7C00 });
    }
    if exp == 0 {
        return if mant == 0 { Some(sign) } else { None };
    }
    let e = exp - 127;
    if (-14..=15).contains(&e) {
        if mant & 0x1FFF != 0 {
            return None;
        }
        return Some(sign | (((e + 15) as u16) << 10) | (mant >> 13) as u16);
    }
    if (-24..-14).contains(&e) {
        let m = mant | 0x80_0000;
        let shift = (-(e + 1)) as u32;
        if m & ((1 << shift) - 1) != 0 {
            return None;
        }
        return Some(sign | (m >> shift) as u16);
    }
    None
}

// ---- writer -----------------------------------------------------------------------------------

pub fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_head(out, 0, v as u64);
    } else {
        write_head(out, 1, !v as u64);
    }
}

pub fn write_text(out: &mut Vec<u8>, s: &str) {
    write_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// Shortest exact float encoding (RFC 8949 §4.2.2 preferred serialization).
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    let single = f as f32;
    if single as f64 == f || f.is_nan() {
        if let Some(h) = f32_to_f16_exact(single) {
            out.push(0xF9);
            out.extend_from_slice(&h.to_be_bytes());
        } else {
            out.push(0xFA);
            out.extend_from_slice(&single.to_bits().to_be_bytes());
        }
    } else {
        out.push(0xFB);
        out.extend_from_slice(&f.to_bits().to_be_bytes());
    }
}

/// A value as its natural CBOR item. Objlnk travels as `"3:0"` text (SenML uses the `vlo` key for
/// it instead, see `senml_cbor`), Time as a plain integer.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Integer(i) | Value::Time(i) => write_int(out, *i),
        Value::UnsignedInteger(u) => write_head(out, 0, *u),
        Value::Float(f) => write_float(out, *f),
        Value::Boolean(b) => out.push(if *b { 0xF5 } else { 0xF4 }),
        Value::String(s) | Value::Corelnk(s) => write_text(out, s),
        Value::Opaque(b) => write_bytes(out, b),
        Value::Objlnk(o, i) => write_text(out, &format!("{o}:{i}")),
        Value::None => out.push(0xF6),
    }
}

/// A leaf item as a value, refined by the resource type where the CBOR type is ambiguous
/// (integers: Integer/Unsigned/Time/Float; text: String/Objlnk/Corelnk).
pub fn value_from_item(item: &Cbor<'_>, ty: Option<ResourceType>) -> Result<Value, CodecError> {
    Ok(match item {
        Cbor::Uint(_) | Cbor::Nint(_) => {
            let n = item.as_int().unwrap_or_default();
            int_value(n, ty)?
        }
        Cbor::Float(f) => Value::Float(*f),
        Cbor::Bool(b) => Value::Boolean(*b),
        Cbor::Text(s) => text_value(s, ty),
        Cbor::Bytes(b) => Value::Opaque(b.to_vec()),
        Cbor::Null => Value::None,
        _ => return Err(invalid("CBOR item is not a resource value")),
    })
}

/// An integer from a self-typed format, typed by the model where it helps.
pub(crate) fn int_value(n: i128, ty: Option<ResourceType>) -> Result<Value, CodecError> {
    Ok(match ty {
        Some(ResourceType::Float) => Value::Float(n as f64),
        Some(ResourceType::UnsignedInteger) if n >= 0 && n <= u64::MAX as i128 => {
            Value::UnsignedInteger(n as u64)
        }
        Some(ResourceType::Time) if i64::try_from(n).is_ok() => Value::Time(n as i64),
        _ => match i64::try_from(n) {
            Ok(i) => Value::Integer(i),
            Err(_) if n >= 0 && n <= u64::MAX as i128 => Value::UnsignedInteger(n as u64),
            Err(_) => return Err(CodecError::BadValue(format!("integer {n} out of range"))),
        },
    })
}

/// A text value typed by the model: Objlnk/Corelnk when declared so, else a string.
pub(crate) fn text_value(s: &str, ty: Option<ResourceType>) -> Value {
    match ty {
        Some(ResourceType::Objlnk) => match super::parse_objlnk(s) {
            Some((o, i)) => Value::Objlnk(o, i),
            None => Value::String(s.to_owned()),
        },
        Some(ResourceType::Corelnk) => Value::Corelnk(s.to_owned()),
        _ => Value::String(s.to_owned()),
    }
}

// ---- content format 60: one value -------------------------------------------------------------

pub fn decode_single(
    req: &Path,
    payload: &[u8],
    types: &dyn ResourceTypes,
) -> Result<Vec<Record>, CodecError> {
    if req.len() < 3 {
        return Err(invalid("a CBOR single value needs a resource path"));
    }
    let item = parse(payload)?;
    Ok(vec![Record::new(
        *req,
        value_from_item(&item, type_of(types, req))?,
    )])
}

pub fn encode_single(base: &Path, records: &[Record]) -> Result<Vec<u8>, CodecError> {
    let [r] = records else {
        return Err(invalid("CBOR carries exactly one value"));
    };
    if r.path != *base {
        return Err(invalid("CBOR carries only the value at the request path"));
    }
    let mut out = Vec::new();
    write_value(&mut out, &r.value);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8949_appendix_a_samples() {
        let cases: &[(&[u8], Cbor)] = &[
            (&[0x00], Cbor::Uint(0)),
            (&[0x18, 0x64], Cbor::Uint(100)),
            (
                &[0x1B, 0, 0, 0, 0xE8, 0xD4, 0xA5, 0x10, 0],
                Cbor::Uint(1_000_000_000_000),
            ),
            (&[0x38, 0x63], Cbor::Nint(99)),
            (&[0xF9, 0x3C, 0x00], Cbor::Float(1.0)),
            (&[0xF9, 0x00, 0x01], Cbor::Float(5.960464477539063e-8)),
            (&[0xF9, 0x7B, 0xFF], Cbor::Float(65504.0)),
            (&[0xFA, 0x47, 0xC3, 0x50, 0x00], Cbor::Float(100000.0)),
            (
                &[0xFB, 0x3F, 0xF1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A],
                Cbor::Float(1.1),
            ),
            (
                &[0xC1, 0x1A, 0x51, 0x4B, 0x67, 0xB0],
                Cbor::Uint(1363896240),
            ),
            (&[0x64, 0x49, 0x45, 0x54, 0x46], Cbor::Text("IETF".into())),
            (
                &[
                    0x7F, 0x65, 0x73, 0x74, 0x72, 0x65, 0x61, 0x64, 0x6D, 0x69, 0x6E, 0x67, 0xFF,
                ],
                Cbor::Text("streaming".into()),
            ),
            (
                &[0x5F, 0x42, 1, 2, 0x43, 3, 4, 5, 0xFF],
                Cbor::Bytes(vec![1, 2, 3, 4, 5].into()),
            ),
            (
                &[0x9F, 0x01, 0x82, 0x02, 0x03, 0xFF],
                Cbor::Array(vec![
                    Cbor::Uint(1),
                    Cbor::Array(vec![Cbor::Uint(2), Cbor::Uint(3)]),
                ]),
            ),
            (
                &[0xBF, 0x61, 0x61, 0x01, 0xFF],
                Cbor::Map(vec![(Cbor::Text("a".into()), Cbor::Uint(1))]),
            ),
            (&[0xC4, 0x82, 0x21, 0x19, 0x6A, 0xB3], Cbor::Float(273.15)),
        ];
        for (bytes, want) in cases {
            match (parse(bytes).unwrap(), want) {
                (Cbor::Float(a), Cbor::Float(b)) => assert!((a - b).abs() < 1e-9, "{bytes:02X?}"),
                (got, want) => assert_eq!(&got, want, "{bytes:02X?}"),
            }
        }
    }

    #[test]
    fn preferred_float_widths() {
        for (f, len) in [
            (1.0, 3),
            (0.5, 3),
            (65504.0, 3),
            (100000.0, 5),
            (1.1, 9),
            (5.960464477539063e-8, 3),
            (-0.0, 3),
        ] {
            let mut out = Vec::new();
            write_float(&mut out, f);
            assert_eq!(out.len(), len, "{f}");
            assert_eq!(parse(&out).unwrap(), Cbor::Float(f));
        }
    }

    #[test]
    fn hostile() {
        assert_eq!(
            parse(&[0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(CodecError::Truncated)
        );
        assert_eq!(
            parse(&[0xBA, 0x7F, 0xFF, 0xFF, 0xFF, 0x00]),
            Err(CodecError::Truncated)
        );
        assert_eq!(
            parse(&[0x5A, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(CodecError::Truncated)
        );
        assert_eq!(parse(&[0x9F, 0x01]), Err(CodecError::Truncated));
        assert!(parse(&[0x62, 0xFF, 0xFE]).is_err());
        assert!(parse(&[0x1C]).is_err());
        assert!(parse(&[0xFF]).is_err());
        assert!(parse(&[0x01, 0x02]).is_err());
        assert_eq!(parse(&vec![0x81; 10_000]), Err(CodecError::TooDeep));
        assert_eq!(parse(&vec![0x9F; 10_000]), Err(CodecError::TooDeep));
        assert_eq!(parse(&vec![0xC1; 10_000]), Err(CodecError::TooDeep));
        let mut ok = vec![0x81; MAX_DEPTH];
        ok.push(0x00);
        assert!(parse(&ok).is_ok());
    }
}
