//! An HTTP/2 connection opened by hand, for what a client library hides or will not do: a client that never answers
//! a ping, or one that opens more streams than the server's SETTINGS allow. Requests are sent with their headers as
//! HPACK literals (never indexed, no Huffman coding); what the server sends back is read frame by frame, its
//! header blocks left encoded.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Frame types (RFC 9113, section 6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;

/// Flags.
pub const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// `SETTINGS_MAX_CONCURRENT_STREAMS`.
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// The `RST_STREAM` error code of a stream refused before any of it was processed (RFC 9113, section 8.7).
pub const REFUSED_STREAM: u32 = 0x7;

/// One frame the server sent.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a `RST_STREAM` or `GOAWAY`.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        self.payload.get(at..at + 4).map(|code| u32::from_be_bytes(code.try_into().unwrap()))
    }
}

pub struct H2 {
    stream: TcpStream,
    /// The server's SETTINGS, once received: (identifier, value).
    settings: Option<Vec<(u16, u32)>>,
}

impl H2 {
    /// The client preface and an empty SETTINGS.
    pub async fn open(addr: SocketAddr) -> H2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
        H2 { stream, settings: None }
    }

    /// The next frame that is not SETTINGS or WINDOW_UPDATE, or `None` once the connection closed. SETTINGS are
    /// acknowledged (and kept, see [`H2::settings`]); PINGs answered only when `answer_pings`.
    pub async fn frame(&mut self, answer_pings: bool) -> Option<Frame> {
        loop {
            let frame = self.read().await?;
            match frame.kind {
                WINDOW_UPDATE | SETTINGS => continue,
                PING if frame.flags & ACK == 0 && answer_pings => self.send(PING, ACK, 0, &frame.payload).await.ok()?,
                _ => return Some(frame),
            }
        }
    }

    /// The server's SETTINGS: the first frame a server sends (RFC 9113, section 3.4).
    pub async fn settings(&mut self) -> Vec<(u16, u32)> {
        while self.settings.is_none() {
            let frame = self.read().await.expect("the connection closed before the server's SETTINGS");
            assert!(matches!(frame.kind, SETTINGS | WINDOW_UPDATE), "a frame before the server's SETTINGS: {frame:?}");
        }
        self.settings.clone().unwrap()
    }

    /// The next frame, whatever it is; a SETTINGS frame is kept and acknowledged.
    async fn read(&mut self) -> Option<Frame> {
        let mut header = [0u8; 9];
        self.stream.read_exact(&mut header).await.ok()?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0; length];
        self.stream.read_exact(&mut payload).await.ok()?;
        let (kind, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        if kind == SETTINGS && flags & ACK == 0 {
            let setting = |pair: &[u8]| {
                (u16::from_be_bytes([pair[0], pair[1]]), u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]))
            };
            self.settings = Some(payload.chunks_exact(6).map(setting).collect());
            self.send(SETTINGS, ACK, 0, &[]).await.ok()?;
        }
        Some(Frame { kind, flags, stream, payload })
    }

    /// Opens stream `id` with a request's `headers` (pseudo-headers first, names in lower case), ending the stream
    /// when `end_stream`.
    pub async fn headers(&mut self, id: u32, headers: &[(&str, &str)], end_stream: bool) {
        let mut block = Vec::new();
        for (name, value) in headers {
            // A literal header field without indexing, with a new name (RFC 7541, section 6.2.2).
            block.push(0x00);
            for string in [name, value] {
                assert!(string.len() < 0x7f, "a string of one length byte: {string}");
                block.push(string.len() as u8);
                block.extend_from_slice(string.as_bytes());
            }
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, id, &block).await.unwrap();
    }

    /// `data` on stream `id`, ending the stream when `end_stream`.
    pub async fn data(&mut self, id: u32, data: &[u8], end_stream: bool) {
        self.send(DATA, if end_stream { END_STREAM } else { 0 }, id, data).await.unwrap();
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }
}
