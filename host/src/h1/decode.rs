//! Request body decoding: a fixed length, or chunked (RFC 9112 §7.1), straight out of the
//! connection's read buffer. Chunk data is split off the buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line we accept (size, extensions and all): hyper allows 16 KiB of
/// extensions per body; a size line has no business being longer than this.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not hex, too long, or a bad line ending; the string is for the log.
    Malformed(&'static str),
    /// Trailers larger than the head limit.
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Reading a size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, this many bytes seen so far.
    Trailers(usize),
}

#[derive(Debug)]
pub(crate) enum Decoder {
    Length(u64),
    Chunked(Chunk),
    Done,
}

impl Decoder {
    pub(crate) fn length(n: u64) -> Self {
        if n == 0 {
            Decoder::Done
        } else {
            Decoder::Length(n)
        }
    }
    pub(crate) fn chunked() -> Self {
        Decoder::Chunked(Chunk::Size)
    }
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Takes the next piece of body out of `buf`. `Ok(Some)`: data; `Ok(None)`: either done
    /// (`is_done`) or more bytes are needed.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_trailers: usize,
    ) -> Result<Option<Bytes>, DecodeError> {
        loop {
            match self {
                Decoder::Done => return Ok(None),
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    let data = buf.split_to(n).freeze();
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Some(data));
                }
                Decoder::Chunked(state) => match *state {
                    Chunk::Size => {
                        let Some(line) = take_line(buf, MAX_SIZE_LINE).map_err(|e| {
                            e.or(DecodeError::Malformed("chunk size line too long"))
                        })?
                        else {
                            return Ok(None);
                        };
                        let size = chunk_size(&line)?;
                        *state = if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let n = left.min(buf.len() as u64) as usize;
                        let data = buf.split_to(n).freeze();
                        *state = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                        return Ok(Some(data));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(DecodeError::Malformed("chunk data not followed by CRLF"));
                        }
                        buf.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Trailers(seen) => {
                        let room = max_trailers.saturating_sub(seen);
                        let Some(line) = take_line(buf, room)
                            .map_err(|e| e.or(DecodeError::TrailersTooLarge))?
                        else {
                            return Ok(None);
                        };
                        if line.is_empty() {
                            *self = Decoder::Done;
                            return Ok(None);
                        }
                        // Trailer fields are read and dropped: nothing upstream of an
                        // HTTP/1.1 client relies on them (gRPC runs on HTTP/2).
                        *state = Chunk::Trailers(seen + line.len() + 2);
                    }
                },
            }
        }
    }
}

/// Splits one CRLF-terminated line (without the CRLF) off `buf`, if whole. A bare LF, or a
/// CR not followed by LF, is refused: the two ends of a proxy must agree where lines end.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, LineError> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > max {
            return Err(LineError::TooLong);
        }
        return Ok(None);
    };
    if lf > max {
        return Err(LineError::TooLong);
    }
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(LineError::Bad("line not ended by CRLF"));
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    if line.contains(&b'\r') {
        return Err(LineError::Bad("stray CR in a chunk line"));
    }
    Ok(Some(line))
}

enum LineError {
    TooLong,
    Bad(&'static str),
}

impl LineError {
    /// The error to report: `too_long` if the line was too long, else the line's own fault.
    fn or(self, too_long: DecodeError) -> DecodeError {
        match self {
            LineError::TooLong => too_long,
            LineError::Bad(why) => DecodeError::Malformed(why),
        }
    }
}

/// `chunk-size [ BWS ; chunk-ext ]`: hex digits (at most 16), then optional whitespace and
/// extensions, which are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, DecodeError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(DecodeError::Malformed("chunk size is not hex"));
    }
    if digits > 16 {
        return Err(DecodeError::Malformed("chunk size overflows"));
    }
    let rest = &line[digits..];
    let rest_trimmed = {
        let ws = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        &rest[ws..]
    };
    if !rest_trimmed.is_empty() && rest_trimmed[0] != b';' {
        return Err(DecodeError::Malformed("invalid chunk size line"));
    }
    let mut n: u64 = 0;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0) as u64;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(v))
            .ok_or(DecodeError::Malformed("chunk size overflows"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(b) = d.decode(&mut buf, 1024)? {
                out.extend_from_slice(&b);
            }
        }
        assert!(d.is_done(), "not done after {input:?}");
        Ok(out)
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        for step in 1..body.len() {
            assert_eq!(decode_all(body, step).unwrap(), b"hello world");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
        ] {
            let mut d = Decoder::chunked();
            let mut buf = BytesMut::from(bad);
            let mut r = Ok(None);
            for _ in 0..4 {
                r = d.decode(&mut buf, 1024);
                if r.is_err() {
                    break;
                }
            }
            assert!(r.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn trailers_are_bounded() {
        let mut d = Decoder::chunked();
        let mut buf = BytesMut::from(&b"0\r\n"[..]);
        buf.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(d.decode(&mut buf, 1024), Err(DecodeError::TrailersTooLarge));
    }
}
