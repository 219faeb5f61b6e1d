//! Splitting a byte stream into whole protocol messages, without blocking and
//! without trusting the length a peer claims: a length above the limit is an
//! error before any memory is reserved for it.

use bytes::BytesMut;

use super::error::PgError;

/// Largest message the gateway accepts from a client by default (PostgreSQL's
/// own limit for most messages is 1 GB; COPY rows and big parameters need room).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// The most room reserved ahead of the bytes of a message that has not
/// arrived yet.
const READ_AHEAD: usize = 1 << 20;

/// Returns the next whole tagged message (tag, length and body) from the front
/// of `buf`, or `None` when more bytes are needed.
pub fn split_message(buf: &mut BytesMut, max_len: usize) -> Result<Option<BytesMut>, PgError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > max_len {
        return Err(PgError::protocol_violation(format!(
            "invalid message length {len} for message type \"{}\"",
            printable(buf[0])
        )));
    }
    let total = len as usize + 1;
    if buf.len() < total {
        // Room grows with the bytes that actually arrive: a length header
        // alone must not make the gateway allocate what it claims.
        buf.reserve((total - buf.len()).min(READ_AHEAD));
        return Ok(None);
    }
    Ok(Some(buf.split_to(total)))
}

/// The body of a whole message (after tag and length).
pub fn body(message: &[u8]) -> &[u8] {
    &message[5..]
}

/// A message tag as a character for error messages.
pub fn printable(tag: u8) -> char {
    if tag.is_ascii_graphic() {
        tag as char
    } else {
        '?'
    }
}

/// A cursor over a message body, for reading the fields the gateway inspects.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    fn malformed() -> PgError {
        PgError::protocol_violation("invalid message format")
    }

    /// A NUL-terminated string.
    pub fn cstr(&mut self) -> Result<&'a [u8], PgError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(Self::malformed)?;
        let (value, rest) = self.rest.split_at(end);
        self.rest = &rest[1..];
        Ok(value)
    }

    pub fn byte(&mut self) -> Result<u8, PgError> {
        let (&first, rest) = self.rest.split_first().ok_or_else(Self::malformed)?;
        self.rest = rest;
        Ok(first)
    }

    pub fn i32(&mut self) -> Result<i32, PgError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], PgError> {
        if self.rest.len() < n {
            return Err(Self::malformed());
        }
        let (value, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(value)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_messages_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dSELECT 1\0S\0\0"[..]);
        let first = split_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(&first[..], b"Q\0\0\0\x0dSELECT 1\0");
        assert!(split_message(&mut buf, 1024).unwrap().is_none());
        buf.extend_from_slice(b"\0\x04");
        assert_eq!(
            &split_message(&mut buf, 1024).unwrap().unwrap()[..],
            b"S\0\0\0\x04"
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&b"Q\x40\0\0\0"[..]);
        let err = split_message(&mut buf, 1024).unwrap_err();
        assert_eq!(err.code, "08P01");
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn an_allowed_length_reserves_only_as_much_as_arrives() {
        // 60 MiB announced, 5 bytes sent.
        let mut buf = BytesMut::from(&b"d\x03\xc0\0\0"[..]);
        assert!(split_message(&mut buf, 64 << 20).unwrap().is_none());
        assert!(buf.capacity() <= 2 << 20, "reserved {}", buf.capacity());
    }

    #[test]
    fn a_length_below_four_is_refused() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(split_message(&mut buf, 1024).is_err());
    }

    #[test]
    fn reader_rejects_unterminated_strings() {
        let mut reader = Reader::new(b"abc");
        assert!(reader.cstr().is_err());
        let mut reader = Reader::new(b"abc\0\0\0\0\x07");
        assert_eq!(reader.cstr().unwrap(), b"abc");
        assert_eq!(reader.i32().unwrap(), 7);
        assert!(reader.byte().is_err());
    }
}
