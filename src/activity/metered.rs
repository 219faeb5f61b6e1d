//! A logged-in client's stream, counted: the bytes either way, when the
//! client last sent something, and the messages that cross it (statements
//! completed, errors by SQLSTATE class, the `application_name` the client
//! is told, `Parse` and `Bind` from the client). It follows message
//! boundaries from the length headers alone, across writes and reads of any
//! size, and reads a body only for the two kinds of message that need it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client::{ClientActivity, wants_body};

/// The most of a message body kept for the activity record: enough for an
/// ErrorResponse's severity and code and a `ParameterStatus`.
const KEPT_BODY: usize = 256;

pub struct Metered<S> {
    inner: S,
    client: Arc<ClientActivity>,
    sent: Messages,
    received: Messages,
}

impl<S> Metered<S> {
    pub fn new(inner: S, client: Arc<ClientActivity>) -> Self {
        Self {
            inner,
            client,
            sent: Messages::default(),
            received: Messages::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let arrived = &buf.filled()[before..];
        if matches!(poll, Poll::Ready(Ok(()))) && !arrived.is_empty() {
            let client = &this.client;
            client.received(arrived.len());
            this.received
                .feed(arrived, |_| false, |tag, _| client.received_message(tag));
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = poll
            && written > 0
        {
            let client = &this.client;
            client.sent(written);
            this.sent.feed(&buf[..written], wants_body, |tag, body| {
                client.sent_message(tag, body)
            });
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Where a stream of protocol messages stands: inside a header, or inside
/// a body with so many bytes left.
struct Messages {
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
    tag: u8,
    body: [u8; KEPT_BODY],
    body_len: usize,
    keep_body: bool,
    /// A length below 4 came: what follows cannot be framed.
    lost: bool,
}

impl Default for Messages {
    fn default() -> Self {
        Self {
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            tag: 0,
            body: [0; KEPT_BODY],
            body_len: 0,
            keep_body: false,
            lost: false,
        }
    }
}

impl Messages {
    /// Follows `bytes`, the next bytes of the stream, calling `on_message`
    /// with each message that ends in them: its tag and, when `keep_body`
    /// says so for the tag, the start of its body.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        keep_body: impl Fn(u8) -> bool,
        mut on_message: impl FnMut(u8, &[u8]),
    ) {
        while !bytes.is_empty() && !self.lost {
            if self.body_left == 0 {
                let take = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < 5 {
                    return;
                }
                self.header_len = 0;
                let len = i32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                let Some(body_len) = usize::try_from(len).ok().and_then(|len| len.checked_sub(4))
                else {
                    self.lost = true;
                    return;
                };
                self.tag = self.header[0];
                self.keep_body = keep_body(self.tag);
                self.body_len = 0;
                self.body_left = body_len;
                if body_len == 0 {
                    on_message(self.tag, &[]);
                }
                continue;
            }
            let take = self.body_left.min(bytes.len());
            if self.keep_body {
                let room = (KEPT_BODY - self.body_len).min(take);
                self.body[self.body_len..self.body_len + room].copy_from_slice(&bytes[..room]);
                self.body_len += room;
            }
            self.body_left -= take;
            bytes = &bytes[take..];
            if self.body_left == 0 {
                on_message(self.tag, &self.body[..self.body_len]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn follow(chunks: &[&[u8]]) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Messages::default();
        let mut seen = Vec::new();
        for chunk in chunks {
            messages.feed(
                chunk,
                |tag| tag == b'E',
                |tag, body| seen.push((tag, body.to_vec())),
            );
        }
        seen
    }

    #[test]
    fn messages_are_followed_across_any_split() {
        let mut stream = message(b'C', b"SELECT 1\0");
        stream.extend(message(b'E', b"SERROR\0C42601\0\0"));
        stream.extend(message(b'Z', b"I"));
        stream.extend(message(b'H', b""));
        let whole = follow(&[&stream]);
        assert_eq!(
            whole,
            [
                (b'C', Vec::new()),
                (b'E', b"SERROR\0C42601\0\0".to_vec()),
                (b'Z', Vec::new()),
                (b'H', Vec::new()),
            ]
        );
        for split in 1..stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(follow(&[first, second]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(follow(&bytes), whole);
    }

    #[test]
    fn a_long_body_is_kept_only_in_part() {
        let body = vec![b'x'; 10_000];
        let seen = follow(&[&message(b'E', &body)]);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1.len(), KEPT_BODY);
    }

    #[test]
    fn a_stream_that_cannot_be_framed_is_no_longer_followed() {
        let mut stream = b"Q\0\0\0\x02".to_vec();
        stream.extend(message(b'C', b""));
        assert!(follow(&[&stream]).is_empty());
    }
}
