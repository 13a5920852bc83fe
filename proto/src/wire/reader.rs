//! Reading protobuf's wire format field by field, by prost's rules: what prost accepts is read, what it refuses is
//! refused, with the same limits (varints of at most ten bytes, tags of at most 32 bits and not 0, groups matched,
//! a recursion limit of [`RECURSION_LIMIT`] nested messages and groups).

use std::fmt;

/// prost's `RECURSION_LIMIT`: how deep messages (and skipped groups) may nest below the top-level message.
pub const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not a message prost would decode. The offset is from the start of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub reason: String,
}

impl WireError {
    pub(crate) fn new(offset: usize, reason: impl Into<String>) -> Self {
        WireError { offset, reason: reason.into() }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.reason, self.offset)
    }
}

impl std::error::Error for WireError {}

/// A field's wire type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    Varint,
    SixtyFourBit,
    LengthDelimited,
    StartGroup,
    EndGroup,
    ThirtyTwoBit,
}

impl WireType {
    fn from_key(key: u64) -> Option<WireType> {
        Some(match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            WireType::Varint => "varint",
            WireType::SixtyFourBit => "64-bit",
            WireType::LengthDelimited => "length-delimited",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::ThirtyTwoBit => "32-bit",
        }
    }
}

/// One field as read: its number, wire type, the value's bytes (the payload of a length-delimited field, the
/// varint's or fixed value's own bytes), and the whole field's bytes (key included), to copy it verbatim.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    pub number: u32,
    pub wire_type: WireType,
    pub value: &'a [u8],
    pub whole: &'a [u8],
    /// Where `value` starts, from the start of the request.
    pub offset: usize,
}

impl Field<'_> {
    /// The value of a varint field.
    pub fn varint(&self) -> u64 {
        decode_varint(self.value).map_or(0, |(v, _)| v)
    }
}

/// The fields of one message, in the order they were written. Yields an error once, then stops.
pub struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` in the request, for errors.
    base: usize,
    /// Nesting levels still allowed below this message (prost's `DecodeContext`).
    depth: u32,
    failed: bool,
}

impl<'a> Fields<'a> {
    /// The fields of a top-level message.
    pub fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0, base: 0, depth: RECURSION_LIMIT, failed: false }
    }

    /// The fields of the message that is the payload of `field`, one level deeper, or the error prost gives for
    /// nesting past its limit.
    pub fn nested(&self, field: &Field<'a>) -> Result<Fields<'a>, WireError> {
        if self.depth == 0 {
            return Err(WireError::new(field.offset, "messages are nested deeper than the recursion limit of 100"));
        }
        Ok(Fields { bytes: field.value, pos: 0, base: field.offset, depth: self.depth - 1, failed: false })
    }

    fn error(&mut self, at: usize, reason: impl Into<String>) -> Option<Result<Field<'a>, WireError>> {
        self.failed = true;
        Some(Err(WireError::new(self.base + at, reason)))
    }

    #[inline]
    fn varint(&self, at: usize) -> Result<(u64, usize), WireError> {
        decode_varint(&self.bytes[at..]).ok_or_else(|| WireError::new(self.base + at, "invalid varint"))
    }

    #[inline]
    fn key(&self, at: usize) -> Result<(u32, WireType, usize), WireError> {
        let (key, len) = self.varint(at)?;
        if key > u64::from(u32::MAX) {
            return Err(WireError::new(self.base + at, format!("invalid key value: {key}")));
        }
        let wire_type = WireType::from_key(key)
            .ok_or_else(|| WireError::new(self.base + at, format!("invalid wire type value: {}", key & 7)))?;
        let number = (key >> 3) as u32;
        if number == 0 {
            return Err(WireError::new(self.base + at, "invalid tag value: 0"));
        }
        Ok((number, wire_type, len))
    }

    /// Skips a group started by field `number` whose body begins at `at`, `depth` levels still allowed; returns
    /// where the group's end tag ends.
    fn skip_group(&self, number: u32, mut at: usize, depth: u32) -> Result<usize, WireError> {
        loop {
            let (inner, wire_type, len) = self.key(at)?;
            at += len;
            if wire_type == WireType::EndGroup {
                if inner != number {
                    return Err(WireError::new(self.base + at, "unexpected end group tag"));
                }
                return Ok(at);
            }
            // prost checks the limit before skipping any field of a group.
            if depth == 0 {
                return Err(WireError::new(self.base + at, "groups are nested deeper than the recursion limit of 100"));
            }
            at = match wire_type {
                WireType::StartGroup => self.skip_group(inner, at, depth - 1)?,
                _ => self.skip_value(wire_type, at)?.1,
            };
        }
    }

    /// The value of a non-group field starting at `at`: its bytes' start and end.
    #[inline]
    fn skip_value(&self, wire_type: WireType, at: usize) -> Result<(usize, usize), WireError> {
        let (start, len) = match wire_type {
            WireType::Varint => (at, self.varint(at)?.1),
            WireType::SixtyFourBit => (at, 8),
            WireType::ThirtyTwoBit => (at, 4),
            WireType::LengthDelimited => {
                let (len, prefix) = self.varint(at)?;
                (at + prefix, usize::try_from(len).unwrap_or(usize::MAX))
            }
            WireType::StartGroup | WireType::EndGroup => unreachable!("groups are read by the caller"),
        };
        if len > self.bytes.len() - start {
            return Err(WireError::new(self.base + at, "buffer underflow: a field is longer than its message"));
        }
        Ok((start, start + len))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let begin = self.pos;
        let (number, wire_type, key_len) = match self.key(begin) {
            Ok(key) => key,
            Err(error) => {
                self.failed = true;
                return Some(Err(error));
            }
        };
        let at = begin + key_len;
        let (start, end) = match wire_type {
            WireType::EndGroup => return self.error(begin, "unexpected end group tag"),
            WireType::StartGroup => {
                // A group is only ever an unknown field here (OTLP has none): prost skips it, checking the limit.
                if self.depth == 0 {
                    return self.error(begin, "groups are nested deeper than the recursion limit of 100");
                }
                match self.skip_group(number, at, self.depth - 1) {
                    Ok(end) => (at, end),
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                }
            }
            _ => match self.skip_value(wire_type, at) {
                Ok(range) => range,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            },
        };
        self.pos = end;
        Some(Ok(Field {
            number,
            wire_type,
            value: &self.bytes[start..end],
            whole: &self.bytes[begin..end],
            offset: self.base + start,
        }))
    }
}

impl Fields<'_> {
    /// Nesting levels still allowed below this message.
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

/// A varint as prost decodes it: at most ten bytes, the tenth at most 1; its value and length.
#[inline]
pub fn decode_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    // Keys, lengths under 128 and small enums: most varints of a request are one byte.
    if let Some(&byte) = bytes.first() {
        if byte < 0x80 {
            return Some((u64::from(byte), 1));
        }
    }
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        if i == 9 && *byte >= 0x02 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if *byte < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `value` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes of `value` as a varint.
pub fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a length-delimited field's key and length; its `len` bytes of payload follow.
pub fn put_len_prefix(out: &mut Vec<u8>, number: u32, len: usize) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, len as u64);
}

/// Bytes of a length-delimited field of `number` with `len` bytes of payload.
pub fn len_field_size(number: u32, len: usize) -> usize {
    varint_len(u64::from(number) << 3 | 2) + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Result<Vec<(u32, WireType, Vec<u8>)>, WireError> {
        Fields::new(bytes).map(|f| f.map(|f| (f.number, f.wire_type, f.value.to_vec()))).collect()
    }

    #[test]
    fn varints_as_prost_reads_them() {
        assert_eq!(decode_varint(&[0]), Some((0, 1)));
        assert_eq!(decode_varint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(decode_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Some((u64::MAX, 10)));
        assert_eq!(decode_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]), None);
        assert_eq!(decode_varint(&[0x80; 11]), None);
        assert_eq!(decode_varint(&[0x80]), None, "truncated");
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            assert_eq!(decode_varint(&out), Some((value, out.len())));
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(value));
        }
    }

    #[test]
    fn fields_groups_and_the_errors_prost_gives() {
        // 1: varint 150, 2: "ab", 3: group { 1: varint 1 }, 4: fixed32, 5: fixed64.
        let bytes = [
            0x08, 0x96, 0x01, 0x12, 2, b'a', b'b', 0x1b, 0x08, 1, 0x1c, 0x25, 1, 2, 3, 4, 0x29, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let read = fields(&bytes).unwrap();
        assert_eq!(read.len(), 5);
        assert_eq!(read[1], (2, WireType::LengthDelimited, b"ab".to_vec()));
        assert_eq!(read[2].1, WireType::StartGroup);
        assert!(fields(&[0x00]).unwrap_err().reason.contains("tag value: 0"));
        assert!(fields(&[0x0e]).unwrap_err().reason.contains("wire type value: 6"));
        assert!(fields(&[0x12, 3, b'a']).unwrap_err().reason.contains("underflow"));
        assert!(fields(&[0x0c]).unwrap_err().reason.contains("end group"));
        assert!(fields(&[0x1b, 0x24]).unwrap_err().reason.contains("end group"), "ends another field's group");
        assert!(fields(&[0x1b]).is_err(), "a group that never ends");
    }

    #[test]
    fn groups_nest_only_to_the_recursion_limit() {
        let nest = |n: usize| {
            let mut bytes = vec![0x0b; n];
            bytes.extend(std::iter::repeat_n(0x0c, n));
            bytes
        };
        assert!(fields(&nest(100)).is_ok());
        assert!(fields(&nest(101)).is_err());
        // prost agrees, on an empty message type with unknown fields.
        assert!(<() as prost::Message>::decode(nest(100).as_slice()).is_ok());
        assert!(<() as prost::Message>::decode(nest(101).as_slice()).is_err());
    }
}
