//! Bit packing for BINARY segmentations (PS3.5 8.1.1): pixels are packed LSB first, and the frames of a
//! multi-frame image follow each other with no padding, so a frame starts mid-byte when rows x columns
//! is not a multiple of 8. Only the end of the whole Pixel Data is padded (to an even length).

/// Appends bits to a byte buffer, least significant bit first.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    out: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    pub(crate) fn with_capacity_bits(bits: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bits.div_ceil(8) + 1),
            bits: 0,
        }
    }

    /// Appends 8 pixels at once (bit k of `byte` is pixel k).
    #[inline]
    pub(crate) fn push8(&mut self, byte: u8) {
        let off = self.bits % 8;
        if off == 0 {
            self.out.push(byte);
        } else {
            // The buffer's last byte is partly filled.
            let last = self.out.len() - 1;
            self.out[last] |= byte << off;
            self.out.push(byte >> (8 - off));
        }
        self.bits += 8;
    }

    #[inline]
    pub(crate) fn push(&mut self, bit: bool) {
        let off = self.bits % 8;
        if off == 0 {
            self.out.push(u8::from(bit));
        } else if bit {
            let last = self.out.len() - 1;
            self.out[last] |= 1 << off;
        }
        self.bits += 1;
    }

    /// Appends one pixel per item of `pixels`, true where `pred` holds.
    #[inline]
    pub(crate) fn push_slice<T: Copy>(&mut self, pixels: &[T], pred: impl Fn(T) -> bool) {
        let mut chunks = pixels.chunks_exact(8);
        for c in &mut chunks {
            let mut b = 0u8;
            for (k, &v) in c.iter().enumerate() {
                b |= u8::from(pred(v)) << k;
            }
            self.push8(b);
        }
        for &v in chunks.remainder() {
            self.push(pred(v));
        }
    }

    /// The packed bytes, padded to an even length.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.out.len() % 2 == 1 {
            self.out.push(0);
        }
        self.out
    }
}

/// Unpacks frame `index` (0-based) of `pixels_per_frame` 1-bit pixels into one byte per pixel (0 or 1).
/// `None` when the data is too short.
pub(crate) fn unpack_frame(data: &[u8], index: usize, pixels_per_frame: usize) -> Option<Vec<u8>> {
    let start = index.checked_mul(pixels_per_frame)?;
    let end = start.checked_add(pixels_per_frame)?;
    if end.div_ceil(8) > data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(pixels_per_frame);
    for bit in start..end {
        out.push((data[bit / 8] >> (bit % 8)) & 1);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_packed_across_byte_boundaries() {
        // Two 3x3 frames (9 bits each): the second starts at bit 9, inside byte 1.
        let f1 = [1u8, 0, 0, 0, 1, 0, 0, 0, 1];
        let f2 = [0u8, 1, 1, 1, 1, 1, 1, 1, 0];
        let mut w = BitWriter::default();
        w.push_slice(&f1, |v| v != 0);
        w.push_slice(&f2, |v| v != 0);
        let bytes = w.finish();
        // 18 bits -> 3 bytes -> padded to 4.
        assert_eq!(bytes.len(), 4);
        // Byte 0: pixels 0..8 of f1 = 1,0,0,0,1,0,0,0 -> 0b0001_0001.
        assert_eq!(bytes[0], 0b0001_0001);
        // Byte 1: f1[8]=1 then f2[0..7] = 0,1,1,1,1,1,1 -> bits 0..7 = 1,0,1,1,1,1,1,1.
        assert_eq!(bytes[1], 0b1111_1101);
        assert_eq!(unpack_frame(&bytes, 0, 9).unwrap(), f1.to_vec());
        assert_eq!(unpack_frame(&bytes, 1, 9).unwrap(), f2.to_vec());
        assert!(unpack_frame(&bytes, 3, 9).is_none());
    }

    #[test]
    fn push8_matches_bitwise_push() {
        let pixels: Vec<u8> = (0..77u32).map(|i| ((i * 7919) % 3 == 0) as u8).collect();
        for lead in 0..9 {
            let mut a = BitWriter::default();
            let mut b = BitWriter::default();
            for _ in 0..lead {
                a.push(true);
                b.push(true);
            }
            a.push_slice(&pixels, |v| v != 0);
            for &p in &pixels {
                b.push(p != 0);
            }
            assert_eq!(a.finish(), b.finish(), "lead {lead}");
        }
    }
}
