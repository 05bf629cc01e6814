//! Streaming compression for batches the broker recompresses on append (a topic's
//! `compression.type` differs from the producer's codec), with the codec crates kafka-protocol
//! uses, at Kafka's default levels. Output goes straight into the append's write buffer, capped
//! at `max.message.bytes`.

use std::io::{self, Read, Write};

use crate::Codec;

/// The xerial framing Kafka's Java client writes for snappy: magic, version 1, compatible 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// xerial's block size (snappy-java's default, as kafka-protocol's compressor uses).
const XERIAL_BLOCK: usize = 32 << 10;

/// A reader that copies everything read through it into `sink`.
pub(crate) struct Tee<'a, W> {
    pub src: Box<dyn Read + 'a>,
    pub sink: W,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The write buffer, taking at most `limit` bytes; `written` counts everything offered, so a
/// batch that recompresses to more than `max.message.bytes` is refused with its true size.
pub(crate) struct Capped<'a> {
    pub out: &'a mut Vec<u8>,
    pub limit: usize,
    pub written: usize,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.written);
        self.out.extend_from_slice(&buf[..buf.len().min(room)]);
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Working memory of a streaming encoder at Kafka's default level.
pub(crate) fn encoder_memory(codec: Codec) -> usize {
    match codec {
        Codec::None => 0,
        Codec::Gzip => 512 << 10,
        Codec::Snappy => 128 << 10,
        Codec::Lz4 => 1 << 20,
        Codec::Zstd => 4 << 20,
    }
}

/// A streaming compressor for Kafka codec `codec`, at Kafka's default levels (gzip 6, lz4 9,
/// zstd 3) with the codec crates kafka-protocol uses.
// One per recompressed batch, never moved after creation: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Snappy(Xerial<W>),
    Lz4(lz4::Encoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(codec: Codec, w: W) -> io::Result<Encoder<W>> {
        Ok(match codec {
            Codec::None => Encoder::None(w),
            Codec::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(w, flate2::Compression::default())),
            Codec::Snappy => Encoder::Snappy(Xerial::new(w)?),
            Codec::Lz4 => {
                Encoder::Lz4(lz4::EncoderBuilder::new().block_size(lz4::BlockSize::Max64KB).level(9).build(w)?)
            }
            Codec::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Snappy(e) => e.finish(),
            Encoder::Lz4(e) => {
                let (w, result) = e.finish();
                result.map(|()| w)
            }
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Snappy(e) => e.write(buf),
            Encoder::Lz4(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Snappy in the xerial framing Kafka's clients write and read: a header, then each 32 KiB of
/// input as a length-prefixed raw snappy block.
pub(crate) struct Xerial<W: Write> {
    out: W,
    block: Vec<u8>,
    encoder: snap::raw::Encoder,
}

impl<W: Write> Xerial<W> {
    fn new(mut out: W) -> io::Result<Xerial<W>> {
        out.write_all(XERIAL_HEADER)?;
        Ok(Xerial { out, block: Vec::with_capacity(XERIAL_BLOCK), encoder: snap::raw::Encoder::new() })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let compressed = self.encoder.compress_vec(&self.block).map_err(io::Error::other)?;
        self.out.write_all(&(compressed.len() as u32).to_be_bytes())?;
        self.out.write_all(&compressed)?;
        self.block.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Xerial<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(XERIAL_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == XERIAL_BLOCK {
            self.flush_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
