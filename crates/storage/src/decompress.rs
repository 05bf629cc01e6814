//! Decompression of a batch's records section, bounded in output and in memory.
//!
//! kafka-protocol's decompressors grow their output without limit (and its snappy reader
//! allocates whatever length the input claims), so a few KiB of hostile zstd or gzip would make
//! the broker allocate gigabytes. The same codec libraries are driven here as streams:
//! [`stream`] hands validation a reader that yields at most `limit` bytes and states up front
//! how much working memory its decoder needs (read from the frame headers); validation reserves
//! that much of the process-wide [`BUDGET`] first, so N concurrent appends cannot add up to
//! more than the budget however their batches are crafted. [`decompress`] (the cleaner,
//! ListOffsets) materialises a stored batch, capped at [`MAX_DECOMPRESSED_BYTES`].

use std::io::{self, Read};
use std::sync::{Condvar, Mutex};

/// The most a stored batch is expanded to by [`decompress`]: stored batches were validated
/// against `MAX_EXPANSION x max.message.bytes` when they were appended.
pub(crate) const MAX_DECOMPRESSED_BYTES: usize = 128 << 20;

/// Working memory all concurrent produce validations may hold at once for decoders, encoders
/// and recompressed output. One batch that needs more than this waits until it can have the
/// whole budget to itself.
pub(crate) const BUDGET_BYTES: usize = 256 << 20;

/// The process-wide decompression budget of produce validation.
pub(crate) static BUDGET: Budget = Budget::new(BUDGET_BYTES);

/// Magic of the xerial snappy framing used by the Java client (librdkafka writes it too).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];
/// zstd's own default ceiling on a frame's window (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`).
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// What a decoder holds besides its window or block buffers (input buffering, tables).
const DECODER_OVERHEAD: usize = 256 << 10;

/// A byte budget shared by concurrent users: [`Budget::reserve`] blocks until the bytes are
/// free. Each user holds at most one reservation at a time, so waiting cannot deadlock.
pub(crate) struct Budget {
    total: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// Bytes taken from a [`Budget`], given back on drop.
pub(crate) struct Reservation<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Budget {
    pub(crate) const fn new(total: usize) -> Budget {
        Budget { total, used: Mutex::new(0), freed: Condvar::new() }
    }

    /// Takes `bytes` (at most the whole budget), waiting for other reservations to end.
    pub(crate) fn reserve(&self, bytes: usize) -> Reservation<'_> {
        let bytes = bytes.min(self.total);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while self.total - *used < bytes {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        Reservation { budget: self, bytes }
    }

    /// Takes `bytes` if they are free now.
    #[cfg(test)]
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation<'_>> {
        let bytes = bytes.min(self.total);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if self.total - *used < bytes {
            return None;
        }
        *used += bytes;
        Some(Reservation { budget: self, bytes })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// A records section being decompressed.
pub(crate) struct Stream<'a> {
    pub reader: Limited<Box<dyn Read + 'a>>,
    /// Memory the decoder will hold at most, from the frame headers.
    pub working_memory: usize,
}

/// Opens a streaming decoder for `input` compressed with Kafka `codec` (1 gzip, 2 snappy,
/// 3 lz4, 4 zstd) that yields at most `limit` bytes. Fails with [`TooLarge`] if the input
/// already claims more.
pub(crate) fn stream(codec: i16, input: &[u8], limit: usize) -> io::Result<Stream<'_>> {
    open(codec, input, limit).map_err(|e| match e {
        Refusal::TooLarge => io::Error::other(TooLarge { limit }),
        Refusal::Format(message) => io::Error::other(message),
    })
}

enum Refusal {
    TooLarge,
    Format(String),
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal::Format(message)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Refusal {
        Refusal::Format(message.to_string())
    }
}

fn open(codec: i16, input: &[u8], limit: usize) -> Result<Stream<'_>, Refusal> {
    let (reader, working_memory): (Box<dyn Read + '_>, usize) = match codec {
        1 => (Box::new(flate2::read::GzDecoder::new(input)), 64 << 10),
        2 => {
            let blocks = SnappyBlocks::new(input, limit)?;
            let memory = blocks.largest_block;
            (Box::new(blocks), memory)
        }
        3 => {
            let block = lz4_block_max(input)?;
            let decoder = lz4::Decoder::new(input).map_err(|e| format!("lz4: {e}"))?;
            (Box::new(decoder), 2 * block + DECODER_OVERHEAD)
        }
        4 => {
            let window = zstd_window(input)?;
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(|e| format!("zstd: {e}"))?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| format!("zstd: {e}"))?;
            (Box::new(decoder), window + DECODER_OVERHEAD)
        }
        c => return Err(format!("unknown compression codec {c}").into()),
    };
    Ok(Stream { reader: Limited { inner: reader, left: limit, limit }, working_memory })
}

/// What a [`Limited`] reader fails with once its inner reader yields more than the limit.
#[derive(Debug)]
pub(crate) struct TooLarge {
    pub limit: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompresses to more than {} bytes", self.limit)
    }
}

impl std::error::Error for TooLarge {}

/// A reader that fails with [`TooLarge`], rather than ending, once its inner reader yields more
/// than `limit` bytes.
pub(crate) struct Limited<R> {
    inner: R,
    left: usize,
    limit: usize,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte more than allowed tells "too long" from "exactly at the limit".
        let want = buf.len().min(self.left + 1);
        let n = self.inner.read(&mut buf[..want])?;
        if n > self.left {
            return Err(io::Error::other(TooLarge { limit: self.limit }));
        }
        self.left -= n;
        Ok(n)
    }
}

/// The window a zstd stream's first frame declares (its content size for single-segment
/// frames): what the decoder will allocate. Later frames are held to zstd's default ceiling.
fn zstd_window(input: &[u8]) -> Result<usize, String> {
    let header = input.get(..5).ok_or("zstd: truncated frame header")?;
    if header[..4] != ZSTD_MAGIC {
        return Err("zstd: not a zstd frame".into());
    }
    let descriptor = header[4];
    let single_segment = descriptor & 0x20 != 0;
    let dict_len = [0, 1, 2, 4][(descriptor & 3) as usize];
    let fcs_len = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    if !single_segment {
        let wd = *input.get(5).ok_or("zstd: truncated frame header")?;
        let exponent = (wd >> 3) as u32;
        if 10 + exponent > ZSTD_WINDOW_LOG_MAX {
            return Err(format!("zstd: frame window of 2^{} bytes exceeds the broker's limit", 10 + exponent));
        }
        let base = 1usize << (10 + exponent);
        return Ok(base + (base / 8) * (wd & 7) as usize);
    }
    let at = 5 + dict_len;
    let fcs = input.get(at..at + fcs_len).ok_or("zstd: truncated frame header")?;
    let mut size = fcs.iter().rev().fold(0u64, |acc, &b| acc << 8 | b as u64);
    if fcs_len == 2 {
        size += 256;
    }
    if size > 1 << ZSTD_WINDOW_LOG_MAX {
        return Err(format!("zstd: single-segment frame of {size} bytes exceeds the broker's limit"));
    }
    Ok(size as usize)
}

/// The block size an lz4 frame declares (64 KiB to 4 MiB).
fn lz4_block_max(input: &[u8]) -> Result<usize, String> {
    let header = input.get(..6).ok_or("lz4: truncated frame header")?;
    if header[..4] != LZ4_MAGIC {
        return Err("lz4: not an lz4 frame".into());
    }
    match (header[5] >> 4) & 7 {
        id @ 4..=7 => Ok(1 << (8 + 2 * id)),
        id => Err(format!("lz4: invalid block size id {id}")),
    }
}

/// Kafka's snappy, block by block: either xerial-framed (magic, version, compat, then
/// length-prefixed raw blocks) or, as the Java client falls back to, a single raw block.
struct SnappyBlocks<'a> {
    rest: &'a [u8],
    xerial: bool,
    block: Vec<u8>,
    pos: usize,
    largest_block: usize,
}

impl<'a> SnappyBlocks<'a> {
    /// Checks the framing and every block's claimed length against `limit` before anything is
    /// decompressed.
    fn new(input: &'a [u8], limit: usize) -> Result<SnappyBlocks<'a>, Refusal> {
        let xerial = input.starts_with(XERIAL_MAGIC);
        let rest = if xerial { input.get(XERIAL_HEADER_LEN..).ok_or("truncated snappy header")? } else { input };
        let mut blocks = SnappyBlocks { rest, xerial, block: Vec::new(), pos: 0, largest_block: 0 };
        let mut total = 0usize;
        let mut scan = blocks.rest;
        while let Some(block) = blocks.next_block(&mut scan)? {
            let len = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
            total = total.saturating_add(len);
            if total > limit {
                return Err(Refusal::TooLarge);
            }
            blocks.largest_block = blocks.largest_block.max(len);
        }
        Ok(blocks)
    }

    fn next_block<'b>(&self, rest: &mut &'b [u8]) -> Result<Option<&'b [u8]>, String> {
        if rest.is_empty() {
            return Ok(None);
        }
        if !self.xerial {
            let all = *rest;
            *rest = &[];
            return Ok(Some(all));
        }
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated snappy block length")?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).ok_or("truncated snappy block")?;
        *rest = &tail[len..];
        Ok(Some(block))
    }
}

impl Read for SnappyBlocks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            let mut rest = self.rest;
            let Some(block) = self.next_block(&mut rest).map_err(io::Error::other)? else { return Ok(0) };
            self.rest = rest;
            let len = snap::raw::decompress_len(block).map_err(io::Error::other)?;
            self.block.resize(len, 0);
            let n = snap::raw::Decoder::new().decompress(block, &mut self.block).map_err(io::Error::other)?;
            self.block.truncate(n);
            self.pos = 0;
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decompresses a stored batch's `input` compressed with Kafka `codec` into memory, at most
/// `limit` bytes.
pub(crate) fn decompress(codec: i16, input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut s = stream(codec, input, limit).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_be_bytes()).collect();
        let lz4 = {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            e.finish().0
        };
        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        for (codec, input) in [(1, gzip(&data)), (2, raw_snappy), (2, xerial), (3, lz4), (4, zstd)] {
            assert_eq!(decompress(codec, &input, MAX_DECOMPRESSED_BYTES).unwrap(), data, "codec {codec}");
            // Exactly at the limit is fine; one byte less is not.
            assert_eq!(decompress(codec, &input, data.len()).unwrap(), data, "codec {codec}");
            assert!(decompress(codec, &input, data.len() - 1).unwrap_err().contains("more than"), "codec {codec}");
        }
    }

    #[test]
    fn output_over_the_cap_is_an_error_not_an_allocation() {
        let zeros = vec![0u8; 4 << 20];
        for (codec, input) in [
            (1, gzip(&zeros)),
            (4, zstd::encode_all(&zeros[..], 3).unwrap()),
            (2, snap::raw::Encoder::new().compress_vec(&zeros).unwrap()),
        ] {
            assert!(input.len() < 300_000);
            let err = decompress(codec, &input, 1 << 20).unwrap_err();
            assert!(err.contains("more than"), "codec {codec}: {err}");
        }
        // A raw snappy block that claims 4 GiB but holds nothing.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decompress(2, &claim, 1 << 20).unwrap_err().contains("more than"));
    }

    #[test]
    fn garbage_is_an_error() {
        for codec in 1..=4 {
            assert!(decompress(codec, b"definitely not compressed", 1 << 20).is_err(), "codec {codec}");
        }
    }

    #[test]
    fn working_memory_comes_from_the_frame_headers() {
        let data = vec![7u8; 200_000];
        // A single-segment zstd frame allocates no more than its content size.
        let zstd = zstd::bulk::compress(&data, 3).unwrap();
        let s = stream(4, &zstd, 1 << 20).unwrap();
        assert!(s.working_memory <= data.len() + DECODER_OVERHEAD, "{}", s.working_memory);
        // A frame declaring a window beyond zstd's default ceiling is refused before decoding.
        let mut huge = ZSTD_MAGIC.to_vec();
        huge.extend_from_slice(&[0x00, 0xF8, 0, 0, 0]);
        assert!(stream(4, &huge, 1 << 20).err().unwrap().to_string().contains("window"));
        let lz4 = {
            let mut e = lz4::EncoderBuilder::new().block_size(lz4::BlockSize::Max64KB).build(Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            e.finish().0
        };
        assert_eq!(stream(3, &lz4, 1 << 20).unwrap().working_memory, 2 * (64 << 10) + DECODER_OVERHEAD);
        let snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(stream(2, &snappy, 1 << 20).unwrap().working_memory, data.len());
    }

    #[test]
    fn the_budget_bounds_concurrent_reservations() {
        let budget = Budget::new(100);
        let a = budget.reserve(60);
        assert!(budget.try_reserve(50).is_none());
        let b = budget.try_reserve(40).expect("40 of 100 are free");
        drop(a);
        // More than the whole budget waits for all of it, then takes all of it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let all = budget.reserve(1000);
                tx.send(all.bytes).unwrap();
            });
            assert!(budget.try_reserve(61).is_none());
            drop(b);
            assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap(), 100);
        });
        assert!(budget.try_reserve(100).is_some());
    }
}
