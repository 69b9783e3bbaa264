//! Little-endian byte writer and reader shared by every encoding in the crate.
//!
//! Encodings are canonical: one value has exactly one encoding, so hashes and signatures over
//! encodings are well defined. Decoding rejects trailing bytes and out-of-range tags.

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("input ends inside a value")]
    Truncated,
    /// A tag or flag byte holds a value outside its range.
    #[error("field {field} has invalid value {value}")]
    BadTag {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u8,
    },
    /// Bytes remain after the value.
    #[error("bytes after the end of the value")]
    TrailingBytes,
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8")]
    BadString,
    /// A length field is larger than the bytes that follow could hold.
    #[error("length {0} too large")]
    Length(u64),
    /// The fields decode but break an invariant of the value (unsorted or duplicate keys,
    /// a parameter out of range, a reference to something absent).
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}

/// Appends fixed-width little-endian fields to a buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes32(&mut self, v: &[u8; 32]) {
        self.0.extend_from_slice(v);
    }
    pub(crate) fn bytes64(&mut self, v: &[u8; 64]) {
        self.0.extend_from_slice(v);
    }
    pub(crate) fn i128(&mut self, v: i128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// u32 length, then the bytes.
    pub(crate) fn var_bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).expect("field shorter than 4 GiB"));
        self.0.extend_from_slice(v);
    }
    pub(crate) fn str(&mut self, v: &str) {
        self.var_bytes(v.as_bytes());
    }
    /// u32 count (the caller then writes the items).
    pub(crate) fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 items"));
    }
}

/// Reads what [`Writer`] wrote.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub(crate) fn i128(&mut self) -> Result<i128, DecodeError> {
        Ok(i128::from_le_bytes(self.take(16)?.try_into().expect("16")))
    }
    pub(crate) fn bytes32(&mut self) -> Result<[u8; 32], DecodeError> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
    pub(crate) fn bytes64(&mut self) -> Result<[u8; 64], DecodeError> {
        Ok(self.take(64)?.try_into().expect("64"))
    }
    pub(crate) fn var_bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.var_bytes()?).map_err(|_| DecodeError::BadString)
    }
    /// A bool stored as one byte, 0 or 1.
    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadTag { field, value }),
        }
    }
    /// An item count; each item takes at least `min_item_bytes`, which bounds the allocation
    /// by the bytes actually present.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes.max(1)) > self.bytes.len() {
            return Err(DecodeError::Length(n as u64));
        }
        Ok(n)
    }
    /// An optional value: flag 0 (none) or 1, then the value.
    pub(crate) fn option<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.flag(field)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}
