//! A small HTTP/1.1 client over a Unix socket, for the Docker Engine API.
//!
//! `--load docker` makes a handful of calls (`GET /info`, `GET
//! /images/json`, `GET /images/{id}/json`, `POST /images/load`) to a local
//! socket. The one HTTP client the project already has (ureq) speaks TCP
//! only, and hyper with hyperlocal would bring tokio for these few
//! blocking calls; so this module is the part of HTTP/1.1 they need, on
//! `std::os::unix::net::UnixStream`: one request per connection
//! (`Connection: close`), a body sent whole or with chunked transfer
//! encoding, and a response read with `Content-Length`, chunked, or up to
//! the end of the connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The largest response body read, and the longest header line: the engine
/// answers these calls with small JSON documents, and a peer that is not
/// an HTTP server must not make us read without end.
const MAX_BODY: usize = 256 << 20;
const MAX_LINE: usize = 64 << 10;

/// A response: its status, headers and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The reason phrase, e.g. "OK".
    pub reason: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, its transfer encoding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path)
}

/// The request head for `method` on `target` (with `Connection: close`),
/// and either `Content-Length` or, for a body of unknown length,
/// `Transfer-Encoding: chunked`.
pub fn request_head(method: &str, target: &str, body: Option<Option<u64>>) -> String {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: stream-layered-image/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    match body {
        None => {}
        Some(Some(len)) => head.push_str(&format!("Content-Length: {len}\r\n")),
        Some(None) => {
            head.push_str("Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n")
        }
    }
    head.push_str("\r\n");
    head
}

/// One request without a body on a new connection to `socket`; the whole
/// response.
pub fn get(socket: &Path, target: &str) -> io::Result<Response> {
    let mut stream = connect(socket)?;
    stream.write_all(request_head("GET", target, None).as_bytes())?;
    read_response(&mut BufReader::new(stream))
}

/// Reads one response from `r` (after the interim ones, such as `100
/// Continue`, which it skips).
pub fn read_response<R: BufRead>(r: &mut R) -> io::Result<Response> {
    // Bounded, as a peer could send interim responses without end.
    for _ in 0..100 {
        let response = read_one(r)?;
        if response.status >= 200 {
            return Ok(response);
        }
    }
    Err(bad("too many interim responses".into()))
}

fn read_one<R: BufRead>(r: &mut R) -> io::Result<Response> {
    let mut status_line = String::new();
    // Stray empty lines before the status line are allowed (RFC 9112,
    // 2.2), a few of them.
    for _ in 0..8 {
        status_line = read_line(r)?.ok_or_else(|| truncated("before the status line"))?;
        if !status_line.is_empty() {
            break;
        }
    }
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1.x status line: {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad(format!("bad status line: {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers = read_headers(r)?;
    let response = |body| Response {
        status,
        reason: reason.clone(),
        headers: headers.clone(),
        body,
    };
    if status < 200 {
        // An interim response: no body; the real one follows.
        return Ok(response(Vec::new()));
    }
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if status == 204 || status == 304 {
        return Ok(response(Vec::new()));
    }
    let chunked = value("transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("chunked")
    });
    if chunked {
        return read_chunked(r).map(response);
    }
    if let Some(len) = value("content-length") {
        let len = len
            .trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(bad(format!("a body of {len} bytes is too large")));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => truncated("in the body"),
            _ => e,
        })?;
        return Ok(response(body));
    }
    // No length: the body runs to the end of the connection.
    let mut body = Vec::new();
    r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
    if body.len() > MAX_BODY {
        return Err(bad("the body is too large".into()));
    }
    Ok(response(body))
}

fn read_headers<R: BufRead>(r: &mut R) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| truncated("in the headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        if headers.len() > 1000 {
            return Err(bad("too many headers".into()));
        }
    }
}

fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| truncated("in a chunk size"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            read_headers(r)?;
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("the body is too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => truncated("in a chunk"),
                _ => e,
            })?;
        let end = read_line(r)?.ok_or_else(|| truncated("after a chunk"))?;
        if !end.is_empty() {
            return Err(bad("a chunk is longer than its size".into()));
        }
    }
}

/// One line without its CRLF (or LF); `None` at the end of the input
/// before any byte of it.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE {
            bad("a line is too long".into())
        } else {
            truncated("in a line")
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| bad("a line is not UTF-8".into()))
}

fn bad(message: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP response: {message}"),
    )
}

fn truncated(place: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the connection closed {place} of the response"),
    )
}

/// A request body with chunked transfer encoding: writes are gathered into
/// chunks of up to 1 MiB (few, large writes to the socket), each sent as
/// one chunk.
pub struct ChunkedWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl<W: Write> ChunkedWriter<W> {
    /// A body written to `out`, after the request head.
    pub fn new(out: W) -> Self {
        ChunkedWriter {
            out,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        write!(self.out, "{:x}\r\n", self.buf.len())?;
        self.out.write_all(&self.buf)?;
        self.out.write_all(b"\r\n")?;
        self.buf.clear();
        Ok(())
    }

    /// The writer, without ending the body (the request is abandoned).
    pub fn into_stream(self) -> W {
        self.out
    }

    /// Sends what is buffered and the last chunk; gives the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_chunk()?;
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= CHUNK {
            // Large writes go out as they are, without a copy.
            write!(self.out, "{:x}\r\n", data.len())?;
            self.out.write_all(data)?;
            self.out.write_all(b"\r\n")?;
            return Ok(data.len());
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_chunk()?;
        }
        Ok(n)
    }

    /// Sends what is buffered as a chunk (the engine then has it).
    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read, as a socket
    /// may.
    struct Short<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Short<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Parses `raw` with reads of every size from 1 to 7 bytes (and a
    /// BufReader of the smallest capacity), which must all agree.
    fn parse(raw: &[u8]) -> io::Result<Response> {
        let mut first: Option<io::Result<Response>> = None;
        for step in 1..8 {
            let mut r = BufReader::with_capacity(step, Short { data: raw, step });
            let got = read_response(&mut r);
            match &first {
                None => first = Some(got),
                Some(Ok(f)) => assert_eq!(f, got.as_ref().expect("same outcome"), "step {step}"),
                Some(Err(f)) => assert_eq!(
                    f.to_string(),
                    got.expect_err("same outcome").to_string(),
                    "step {step}"
                ),
            }
        }
        first.expect("ran")
    }

    #[test]
    fn content_length_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}trailing").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse(raw).unwrap();
        assert_eq!(r.body, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn body_to_the_end_of_the_connection_and_lf_lines() {
        let r = parse(b"HTTP/1.0 404 Not Found\nServer: x\n\nno such image").unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        assert_eq!(r.body, b"no such image");
    }

    #[test]
    fn endless_interim_responses_and_empty_lines_are_errors() {
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(200);
        let e = read_response(&mut BufReader::new(&many[..])).unwrap_err();
        assert!(e.to_string().contains("too many interim responses"), "{e}");
        let blank = b"\r\n".repeat(20);
        let e = read_response(&mut BufReader::new(&blank[..])).unwrap_err();
        assert!(e.to_string().contains("not an HTTP/1.x status line"), "{e}");
    }

    #[test]
    fn interim_response_is_skipped() {
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        for (raw, says) in [
            (&b""[..], "closed before the status line"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "closed in the body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "closed in a chunk",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "bad chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                "longer than its size",
            ),
            (b"SSH-2.0-OpenSSH\r\n", "not an HTTP/1.x status line"),
            (b"HTTP/1.1 abc OK\r\n\r\n", "bad status line"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",
                "closed in the headers",
            ),
        ] {
            let e = parse(raw).expect_err(std::str::from_utf8(raw).unwrap());
            assert!(e.to_string().contains(says), "{raw:?}: {e}");
        }
    }

    #[test]
    fn chunked_writer_frames_what_a_parser_reads_back() {
        let mut out = Vec::new();
        let big = vec![7u8; CHUNK + 3];
        {
            let mut w = ChunkedWriter::new(&mut out);
            w.write_all(b"hello ").unwrap();
            w.flush().unwrap();
            w.write_all(&big).unwrap();
            w.write_all(b"").unwrap();
            w.write_all(b"world").unwrap();
            w.finish().unwrap();
        }
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(&out);
        let r = read_response(&mut BufReader::new(&raw[..])).unwrap();
        let mut expected = b"hello ".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"world");
        assert_eq!(r.body, expected);
        assert!(out.starts_with(b"6\r\nhello \r\n"), "flush sends a chunk");
        assert!(out.ends_with(b"0\r\n\r\n"));
    }

    proptest::proptest! {
        /// Any bytes: an answer or an error, never a panic, and a body no
        /// larger than the input.
        #[test]
        fn any_input_parses_or_fails(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512), step in 1usize..9) {
            let mut r = BufReader::with_capacity(step, Short { data: &raw, step });
            if let Ok(response) = read_response(&mut r) {
                proptest::prop_assert!(response.body.len() <= raw.len());
            }
        }

        /// A body cut into chunks of any sizes, read with reads of any
        /// size, comes back whole.
        #[test]
        fn chunked_bodies_round_trip(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cuts in proptest::collection::vec(1usize..300, 1..20),
            step in 1usize..9,
        ) {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut rest = &body[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                raw.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
                raw.extend_from_slice(chunk);
                raw.extend_from_slice(b"\r\n");
                rest = tail;
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            let mut r = BufReader::with_capacity(step, Short { data: &raw, step });
            proptest::prop_assert_eq!(read_response(&mut r).unwrap().body, body);
        }
    }

    #[test]
    fn request_heads() {
        assert_eq!(
            request_head("GET", "/info", None),
            format!("GET /info HTTP/1.1\r\nHost: docker\r\nUser-Agent: stream-layered-image/{}\r\nConnection: close\r\n\r\n", env!("CARGO_PKG_VERSION"))
        );
        assert!(request_head("POST", "/images/load", Some(None))
            .ends_with("Transfer-Encoding: chunked\r\n\r\n"));
        assert!(request_head("POST", "/x", Some(Some(3))).ends_with("Content-Length: 3\r\n\r\n"));
    }
}
