//! LwM2M paths: `/object/instance/resource/resource-instance`, each id a 16-bit integer below 65535
//! (65535 is reserved by the TS as "no id" and rejected).

use std::fmt;

/// Up to four path segments. `len == 0` is the root path `/`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Path {
    ids: [u16; 4],
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path has more than 4 segments")]
    TooLong,
    #[error("path segment {0:?} is not an id in 0..=65534")]
    BadSegment(String),
    #[error("empty path segment")]
    EmptySegment,
}

impl Path {
    pub const ROOT: Path = Path {
        ids: [0; 4],
        len: 0,
    };

    /// Parses `"/3/0/1"`, `"3/0/1"`, `"/3/0/"` or `"/"`: one leading and one trailing `/` are
    /// optional (EMQX accepts both spellings); empty inner segments are rejected.
    pub fn parse(s: &str) -> Result<Path, PathError> {
        let s = s.strip_prefix('/').unwrap_or(s);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Ok(Path::ROOT);
        }
        let mut p = Path::ROOT;
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err(PathError::EmptySegment);
            }
            let id = parse_id(seg).ok_or_else(|| PathError::BadSegment(seg.to_string()))?;
            p = p.child(id).ok_or(PathError::TooLong)?;
        }
        Ok(p)
    }

    /// Builds a path from ids; `None` when more than 4 or an id is 65535.
    pub fn from_ids(ids: &[u16]) -> Option<Path> {
        if ids.len() > 4 || ids.contains(&u16::MAX) {
            return None;
        }
        let mut p = Path::ROOT;
        p.ids[..ids.len()].copy_from_slice(ids);
        p.len = ids.len() as u8;
        Some(p)
    }

    /// This path extended by one segment; `None` when already 4 deep or `id == 65535`.
    pub fn child(&self, id: u16) -> Option<Path> {
        if self.len >= 4 || id == u16::MAX {
            return None;
        }
        let mut p = *self;
        p.ids[p.len as usize] = id;
        p.len += 1;
        Some(p)
    }

    /// This path without its last segment (the root stays the root).
    pub fn parent(&self) -> Path {
        let mut p = *self;
        if p.len > 0 {
            p.len -= 1;
            p.ids[p.len as usize] = 0;
        }
        p
    }

    pub fn ids(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_root(&self) -> bool {
        self.len == 0
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn object(&self) -> Option<u16> {
        self.ids().first().copied()
    }
    pub fn instance(&self) -> Option<u16> {
        self.ids().get(1).copied()
    }
    pub fn resource(&self) -> Option<u16> {
        self.ids().get(2).copied()
    }
    pub fn resource_instance(&self) -> Option<u16> {
        self.ids().get(3).copied()
    }
    /// The last segment, if any.
    pub fn last(&self) -> Option<u16> {
        self.ids().last().copied()
    }
    /// True when `self` equals `other` or lies below it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.len >= other.len && self.ids[..other.len as usize] == other.ids[..other.len as usize]
    }
}

/// Accepts only plain decimal digits (no sign, no spaces), value < 65535.
fn parse_id(seg: &str) -> Option<u16> {
    if seg.is_empty() || seg.len() > 5 || !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u32 = seg.parse().ok()?;
    if v >= u16::MAX as u32 {
        return None;
    }
    Some(v as u16)
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({self})")
    }
}

impl crate::persist::wire::Durable for Path {
    fn put(&self, w: &mut crate::persist::wire::Writer) {
        w.u8(self.len);
        for id in self.ids() {
            w.uint(u64::from(*id));
        }
    }

    fn take(r: &mut crate::persist::wire::Reader<'_>) -> Option<Path> {
        let n = r.u8()? as usize;
        if n > 4 {
            return None;
        }
        let mut ids = [0u16; 4];
        for id in ids.iter_mut().take(n) {
            *id = r.u16().filter(|v| *v != u16::MAX)?;
        }
        Path::from_ids(&ids[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_emqx_spellings() {
        for s in ["/3/0/1", "3/0/1", "/3/0/1/"] {
            assert_eq!(Path::parse(s).unwrap().ids(), &[3, 0, 1]);
        }
        assert!(Path::parse("/").unwrap().is_root());
        assert!(Path::parse("").unwrap().is_root());
        assert_eq!(Path::parse("/3/0/").unwrap().to_string(), "/3/0");
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(Path::parse("/1/2/3/4/5"), Err(PathError::TooLong));
        assert!(matches!(
            Path::parse("/65535"),
            Err(PathError::BadSegment(_))
        ));
        assert!(Path::parse("/65534").is_ok());
        assert!(matches!(Path::parse("/a/0"), Err(PathError::BadSegment(_))));
        assert!(matches!(Path::parse("/-1"), Err(PathError::BadSegment(_))));
        assert!(matches!(Path::parse("/+3"), Err(PathError::BadSegment(_))));
        assert_eq!(Path::parse("/3//1"), Err(PathError::EmptySegment));
        assert!(matches!(
            Path::parse("/3/0?x=1"),
            Err(PathError::BadSegment(_))
        ));
    }

    #[test]
    fn navigation() {
        let p = Path::parse("/3/0/7/1").unwrap();
        assert_eq!(p.object(), Some(3));
        assert_eq!(p.resource_instance(), Some(1));
        assert_eq!(p.parent().to_string(), "/3/0/7");
        assert!(p.starts_with(&Path::parse("/3/0").unwrap()));
        assert!(!p.starts_with(&Path::parse("/3/1").unwrap()));
        assert!(p.child(1).is_none());
        assert_eq!(Path::from_ids(&[5, 0]).unwrap().to_string(), "/5/0");
        assert!(Path::from_ids(&[65535]).is_none());
    }
}
