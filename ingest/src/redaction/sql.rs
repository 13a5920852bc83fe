//! SQL literal masking, as the Collector's `db_sanitizer.sql` does it: every string and number literal becomes `?`,
//! so `SELECT * FROM orders WHERE email = 'ann@example.com' AND total > 120.50` is stored as
//! `SELECT * FROM orders WHERE email = ? AND total > ?` — the query's shape stays searchable, the customer's data
//! does not reach Kafka. Keywords, operators, identifiers (`orders`, `t1.col2`, `` `tbl` ``) and bind parameters
//! (`$1`, `:name`, `?`) are kept.
//!
//! It fails closed: comments are dropped (they may quote data), `"…"` is masked (MySQL's string literal, though
//! standard SQL's quoted identifier), `$tag$…$tag$` (PostgreSQL) is masked, and where a `'…'` string ends depends
//! on the dialect (a backslash escapes in MySQL and in PostgreSQL's `E'…'`, not in standard SQL), everything from
//! the string on is masked rather than guessed.

/// `statement` with its literals replaced by `?`, and how many were.
pub fn mask_literals(statement: &str) -> (String, usize) {
    let bytes = statement.as_bytes();
    let mut out = String::with_capacity(statement.len());
    let mut masked = 0;
    let mut i = 0;
    // Copied through unchanged from here. Every cut is at an ASCII byte or the end, so slices stay on char
    // boundaries.
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        // (where the span to replace ends, its replacement)
        let cut = match b {
            b'\'' => Some(match quoted_end(bytes, i) {
                Some(end) => (end, "?"),
                // The dialects disagree on where it ends: mask the rest.
                None => (bytes.len(), "?"),
            }),
            b'"' => Some((delimited_end(bytes, i, b'"'), "?")),
            b'`' => {
                i = delimited_end(bytes, i, b'`');
                continue;
            }
            b'-' if next == Some(b'-') => {
                Some((bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| i + p), ""))
            }
            b'#' => Some((bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| i + p), "")),
            b'/' if next == Some(b'*') => {
                Some((bytes[i + 2..].windows(2).position(|w| w == b"*/").map_or(bytes.len(), |p| i + 2 + p + 2), " "))
            }
            b'$' if i == 0 || !is_word(bytes[i - 1]) => dollar_quoted_end(bytes, i).map(|end| (end, "?")),
            // A number not inside an identifier (`t1`, `col_2`, `$1`): digits, a fraction, an exponent, or hex.
            b'0'..=b'9' if i == 0 || !is_word(bytes[i - 1]) => Some((number_end(bytes, i), "?")),
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) && (i == 0 || !is_word(bytes[i - 1])) => {
                Some((number_end(bytes, i), "?"))
            }
            _ => None,
        };
        match cut {
            Some((end, replacement)) => {
                out.push_str(&statement[copied..i]);
                out.push_str(replacement);
                masked += 1;
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&statement[copied..]);
    (out, masked)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b':' || b == b'@' || b >= 0x80
}

/// The end (exclusive) of the `'…'` string at `start` when every dialect agrees where it is: read with `''` as the
/// only escape, and with `\` as an escape too. `None` when they differ or it never closes.
fn quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let end = |backslash_escapes: bool| {
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if backslash_escapes => i += 2,
                b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                b'\'' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    };
    match (end(false), end(true)) {
        (Some(a), Some(b)) if a == b => Some(a),
        _ => None,
    }
}

/// `$$…$$` or `$tag$…$tag$` at `start`: the end of the closing tag, or the statement's end if it never closes;
/// `None` when `start` is not an opening tag (a bind parameter such as `$1`).
fn dollar_quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let tag_len = bytes[start + 1..].iter().position(|&b| b == b'$')?;
    let tag = &bytes[start..start + 1 + tag_len + 1];
    if !tag[1..tag.len() - 1].iter().all(|&b| b.is_ascii_alphabetic() || b == b'_') {
        return None;
    }
    let body = start + tag.len();
    Some(bytes[body..].windows(tag.len()).position(|w| w == tag).map_or(bytes.len(), |p| body + p + tag.len()))
}

fn delimited_end(bytes: &[u8], start: usize, quote: u8) -> usize {
    bytes[start + 1..].iter().position(|&b| b == quote).map_or(bytes.len(), |p| start + 1 + p + 1)
}

fn number_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    if i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < bytes.len() && matches!(bytes[j], b'+' | b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            i = j;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::mask_literals;

    #[test]
    fn literals_become_placeholders_and_the_shape_stays() {
        let cases = [
            (
                "SELECT * FROM orders WHERE email = 'ann@example.com' AND total > 120.50",
                "SELECT * FROM orders WHERE email = ? AND total > ?",
                2,
            ),
            (
                "INSERT INTO t1 (col_2, `Card 4`) VALUES ('it''s', -7, 1e10, 0xFF)",
                "INSERT INTO t1 (col_2, `Card 4`) VALUES (?, -?, ?, ?)",
                4,
            ),
            (
                "UPDATE users SET name = $1 WHERE id = :id AND x = ?",
                "UPDATE users SET name = $1 WHERE id = :id AND x = ?",
                0,
            ),
            ("SELECT .5, a.b2 FROM `tbl 9`", "SELECT ?, a.b2 FROM `tbl 9`", 1),
            ("SELECT 'café' FROM dual", "SELECT ? FROM dual", 1),
        ];
        for (statement, expected, count) in cases {
            assert_eq!(mask_literals(statement), (expected.to_owned(), count), "{statement}");
        }
    }

    /// Each of these leaked `hunter2` before: a backslash read one way by the masker and another by the database,
    /// a quote inside a comment, PostgreSQL's dollar quotes, MySQL's double-quoted strings.
    #[test]
    fn where_dialects_differ_it_masks_rather_than_guesses() {
        let cases = [
            ("SELECT 1 FROM t WHERE p = 'C:\\' AND pw = 'hunter2'", "SELECT ? FROM t WHERE p = ?"),
            ("SELECT 'x\\'y', pw FROM t WHERE pw = 'hunter2'", "SELECT ?"),
            ("SELECT /* don't */ a FROM t WHERE pw = 'hunter2'", "SELECT   a FROM t WHERE pw = ?"),
            ("SELECT a -- it's\nFROM t WHERE pw = 'hunter2'", "SELECT a \nFROM t WHERE pw = ?"),
            ("SELECT $$hunter2$$, $tag$a 'b' hunter2$tag$, $1", "SELECT ?, ?, $1"),
            ("SELECT * FROM t WHERE pw = \"hunter2\"", "SELECT * FROM t WHERE pw = ?"),
            ("SELECT 'unterminated hunter2", "SELECT ?"),
        ];
        for (statement, expected) in cases {
            let (masked, _) = mask_literals(statement);
            assert_eq!(masked, expected, "{statement}");
            assert!(!masked.contains("hunter2"), "{statement}");
        }
    }
}
