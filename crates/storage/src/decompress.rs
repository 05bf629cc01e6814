//! Decompression of a batch's records section with a cap on the output size.
//!
//! kafka-protocol's decompressors grow their output without limit (and its snappy reader
//! allocates whatever length the input claims), so a few KiB of hostile zstd or gzip would make
//! the broker allocate gigabytes. The same codec libraries are driven here as streams through
//! `Read::take`, so memory never exceeds the cap, whatever the input says.

use std::io::{self, Read};

/// The most a batch may expand to. Producers cap their batches before compression
/// (`batch.size`, `message.max.bytes`, default about 1 MB), so real batches are far below this.
pub(crate) const MAX_DECOMPRESSED_BYTES: usize = 128 << 20;

/// Magic of the xerial snappy framing used by the Java client (librdkafka writes it too).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses `input` compressed with Kafka `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub(crate) fn decompress(codec: i16, input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    match codec {
        1 => read_capped(flate2::read::GzDecoder::new(input), limit),
        2 => snappy(input, limit),
        3 => read_capped(lz4::Decoder::new(input).map_err(|e| format!("lz4: {e}"))?, limit),
        4 => read_capped(zstd::stream::read::Decoder::new(input).map_err(|e| format!("zstd: {e}"))?, limit),
        c => Err(format!("unknown compression codec {c}")),
    }
}

fn read_capped(reader: impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e: io::Error| e.to_string())?;
    if out.len() > limit {
        return Err(format!("decompresses to more than {limit} bytes"));
    }
    Ok(out)
}

/// Kafka's snappy is either xerial-framed (magic, version, compat, then length-prefixed raw
/// blocks) or, as the Java client falls back to, a single raw block.
fn snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if !input.starts_with(XERIAL_MAGIC) {
        snappy_block(input, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = input.get(XERIAL_HEADER_LEN..).ok_or("truncated snappy header")?;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated snappy block length")?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).ok_or("truncated snappy block")?;
        snappy_block(block, &mut out, limit)?;
        rest = &tail[len..];
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    let len = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
    if len > limit - out.len() {
        return Err(format!("decompresses to more than {limit} bytes"));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(|e| format!("snappy: {e}"))?;
    out.truncate(start + n);
    Ok(())
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
}
