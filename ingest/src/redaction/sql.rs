//! SQL literal masking, as the Collector's `db_sanitizer.sql` does it: every string and number literal becomes `?`,
//! so `SELECT * FROM orders WHERE email = 'ann@example.com' AND total > 120.50` is stored as
//! `SELECT * FROM orders WHERE email = ? AND total > ?` — the query's shape stays searchable, the customer's data
//! does not reach Kafka. Identifiers (`orders`, `"Order"`, `t1.col2`), keywords, operators and bind parameters
//! (`$1`, `:name`, `?`) are kept.

/// `statement` with its literals replaced by `?`, and how many were.
pub fn mask_literals(statement: &str) -> (String, usize) {
    let bytes = statement.as_bytes();
    let mut out = String::with_capacity(statement.len());
    let mut masked = 0;
    let mut i = 0;
    // Copied through unchanged from here; literals are cut out at ASCII boundaries, so slicing stays on char
    // boundaries.
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let literal_end = match b {
            // 'it''s' and E'…\'…' (a backslash escapes in the E form only; treating it as an escape everywhere
            // can only end a literal later, never leak its tail).
            b'\'' => Some(quoted_end(bytes, i)),
            // A number not inside an identifier (`t1`, `col_2`, `$1`): digits, a fraction, an exponent, or hex.
            b'0'..=b'9' if i == 0 || !is_word(bytes[i - 1]) => Some(number_end(bytes, i)),
            b'.' if i + 1 < bytes.len() && bytes[i + 1].is_ascii_digit() && (i == 0 || !is_word(bytes[i - 1])) => {
                Some(number_end(bytes, i))
            }
            // A quoted identifier: kept whole, so a digit or quote inside it is not read as a literal.
            b'"' | b'`' => {
                i = delimited_end(bytes, i, b);
                continue;
            }
            _ => None,
        };
        match literal_end {
            Some(end) => {
                out.push_str(&statement[copied..i]);
                out.push('?');
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

/// The end (exclusive) of the quoted string starting at `start`; the statement's end if it never closes.
fn quoted_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
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
                "INSERT INTO t1 (col_2, \"Card 4\") VALUES ('it''s', -7, 1e10, 0xFF)",
                "INSERT INTO t1 (col_2, \"Card 4\") VALUES (?, -?, ?, ?)",
                4,
            ),
            (
                "UPDATE users SET name = $1 WHERE id = :id AND x = ?",
                "UPDATE users SET name = $1 WHERE id = :id AND x = ?",
                0,
            ),
            ("SELECT 'unterminated", "SELECT ?", 1),
            ("SELECT .5, a.b2 FROM `tbl 9`", "SELECT ?, a.b2 FROM `tbl 9`", 1),
            ("SELECT 'café', 'x\\'y' FROM dual", "SELECT ?, ? FROM dual", 2),
        ];
        for (statement, expected, count) in cases {
            assert_eq!(mask_literals(statement), (expected.to_owned(), count), "{statement}");
        }
    }
}
