//! Splits a credentials file in TOML at its `[[device]]` headers, so that each entry is parsed
//! as a small document of its own.
//!
//! Why: the `toml` crate lexes a whole document into tokens before building its tree, about 23
//! bytes per byte of input at its peak (270 MB for a file of 100,000 devices, 2.7 GB for a
//! million), and the tree itself costs several times the store it becomes. Parsed entry by
//! entry, the peak is one entry's.
//!
//! Contract: [`split`] returns pieces whose separate parses mean what the whole document means,
//! or `None` when it cannot promise that and the caller parses the whole. Each piece is a
//! `[[device]]` header line and the lines up to the next one; the first piece is what precedes
//! the first header. A header line cannot sit inside a single-line string, and inside an array
//! or inline table it would not be valid TOML, so only multi-line strings (`"""`, `'''`) could
//! hide one: a file with any is not split. The preamble must define nothing (blank lines and
//! comments only), since an inline `device = [...]` there would clash with the headers in the
//! whole document but not in the pieces. Other headers (`[device.x]`, `[["device"]]`, anything
//! else) stay inside their piece, where they parse as they would in the whole.

/// Pieces of `text` as (number of lines before the piece, piece), in order; `None`: parse it
/// whole.
pub(crate) fn split(text: &str) -> Option<Vec<(usize, &str)>> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut pieces = Vec::new();
    let (mut start, mut start_line) = (0usize, 0usize);
    let mut at = 0usize;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if is_device_header(line) && at > start {
            pieces.push((start_line, &text[start..at]));
            (start, start_line) = (at, line_no);
        } else if is_device_header(line) {
            start_line = line_no;
        }
        at += line.len();
    }
    if at > start {
        pieces.push((start_line, &text[start..at]));
    }
    // The preamble (before the first header) must define nothing.
    if let Some((_, first)) = pieces.first() {
        let preamble_defines = !first.lines().next().is_some_and(is_device_header)
            && first.lines().any(|l| {
                let t = l.trim_start();
                !t.is_empty() && !t.starts_with('#')
            });
        if preamble_defines {
            return None;
        }
    }
    Some(pieces)
}

/// `[[device]]`, with optional blanks inside and a comment after.
fn is_device_header(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("[[") else {
        return false;
    };
    let Some(rest) = rest.trim_start().strip_prefix("device") else {
        return false;
    };
    let Some(rest) = rest.trim_start().strip_prefix("]]") else {
        return false;
    };
    let rest = rest.trim();
    rest.is_empty() || rest.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_splits_at_each_device_header_with_its_line_offset() {
        let text = "# devices\n\n[[device]]\nendpoint = \"a\"\n[[ device ]] # two\nendpoint = \"b\"\n\n[[device]]\r\nendpoint = \"c\"";
        let p = split(text).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], (0, "# devices\n\n"));
        assert_eq!(p[1], (2, "[[device]]\nendpoint = \"a\"\n"));
        assert_eq!(p[2], (4, "[[ device ]] # two\nendpoint = \"b\"\n\n"));
        assert_eq!(p[3], (7, "[[device]]\r\nendpoint = \"c\""));
        assert_eq!(p.iter().map(|x| x.1).collect::<String>(), text);
    }

    #[test]
    fn what_pieces_could_misread_is_left_whole() {
        // A multi-line string could hold a header line.
        assert_eq!(split("[[device]]\nx = \"\"\"\n[[device]]\n\"\"\"\n"), None);
        assert_eq!(split("[[device]]\nx = '''a'''\n"), None);
        // The preamble defines something (an inline list would clash with the headers).
        assert_eq!(split("device = [{endpoint = \"a\"}]\n[[device]]\n"), None);
        assert_eq!(split("title = 1\n[[device]]\n"), None);
        // No header at all, but definitions: the whole is the parser's to judge.
        assert_eq!(split("[device]\nx = 1\n"), None);
        assert_eq!(split("# nothing\n").unwrap(), vec![(0, "# nothing\n")]);
        assert_eq!(split("").unwrap(), vec![]);
    }

    #[test]
    fn other_headers_stay_inside_their_piece() {
        for line in [
            "[[devices]]",
            "[device]",
            "[[\"device\"]]",
            "[[device.x]]",
            "x = \"[[device]]\"",
        ] {
            assert!(!is_device_header(line), "{line}");
        }
        let p = split("[[device]]\na = 1\n[device.sub]\nb = 2\n").unwrap();
        assert_eq!(p.len(), 1);
    }
}
