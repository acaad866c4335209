//! JPEG-LS (transfer syntaxes 1.2.840.10008.1.2.4.80 lossless and .81 near-lossless) decoded in
//! pure Rust, so that the default build needs no C++ compiler and no cmake (dicom-pixeldata's
//! JPEG-LS path is CharLS, C++ built with cmake, which a fresh machine lacks).
//!
//! The frames are decoded with `pure_jpegls` (ITU-T T.87, single component: what MR images are)
//! into native pixel data, and the object is re-labelled Explicit VR Little Endian, so everything
//! after the codec (Bits Stored, Pixel Representation, Rescale Slope/Intercept, per-frame functional
//! groups) stays dicom-pixeldata's, exactly as for an uncompressed instance.

use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

/// JPEG-LS Lossless Image Compression.
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
/// JPEG-LS Lossy (Near-Lossless) Image Compression.
pub const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";

/// Largest decoded pixel data of one instance (all frames, bytes). An MR instance is a few hundred
/// KiB; an enhanced multi-frame one a few hundred MiB. Rows and Columns come from the sender, so the
/// product is bounded before anything is allocated.
pub const MAX_DECODED_BYTES: u64 = 2 << 30;

/// Whether `transfer_syntax` (a UID, possibly padded) is one of the two JPEG-LS syntaxes.
pub fn is_jpeg_ls(transfer_syntax: &str) -> bool {
    let ts = transfer_syntax.trim_end_matches(['\0', ' ']);
    ts == JPEG_LS_LOSSLESS || ts == JPEG_LS_NEAR_LOSSLESS
}

/// Why an instance's JPEG-LS pixel data cannot be decoded (the instance is refused, never the
/// worker).
#[derive(Debug, thiserror::Error)]
pub enum JpegLsError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{name} is not a number: {source}")]
    NotANumber {
        name: &'static str,
        #[source]
        source: dicom_core::value::ConvertValueError,
    },
    #[error("{0} samples per pixel; the JPEG-LS decoder reads single-component images")]
    Samples(u32),
    #[error("Bits Allocated {0} (8 or 16 expected)")]
    BitsAllocated(u32),
    #[error(
        "{frames} frame(s) of {rows}x{cols} pixels: {bytes} bytes decoded, more than the \
         {MAX_DECODED_BYTES}-byte limit or empty"
    )]
    Size {
        frames: usize,
        rows: usize,
        cols: usize,
        bytes: u64,
    },
    #[error("JPEG-LS Pixel Data is not encapsulated")]
    NotEncapsulated,
    #[error("the Pixel Data has no fragments")]
    NoFragments,
    #[error("{frames} frames in {fragments} fragments without a usable Basic Offset Table")]
    NoOffsetTable { frames: usize, fragments: usize },
    #[error("Basic Offset Table entry {0} points inside a fragment")]
    OffsetInsideFragment(usize),
    /// Frames are numbered from 1, as a viewer shows them.
    #[error("frame {0} has no fragments")]
    EmptyFrame(usize),
    /// The codec panicked on the stream (its arithmetic is checked in debug builds).
    #[error("frame {0}: the JPEG-LS stream is malformed")]
    Malformed(usize),
    #[error("frame {frame}: {source}")]
    Codec {
        frame: usize,
        #[source]
        source: ::jpegls::CodecError,
    },
    #[error(
        "frame {frame}: the JPEG-LS stream is {width}x{height}, the data set says {cols}x{rows}"
    )]
    FrameSize {
        frame: usize,
        width: u32,
        height: u32,
        cols: usize,
        rows: usize,
    },
}

fn uint(
    obj: &DefaultDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<u32, JpegLsError> {
    obj.element(tag)
        .map_err(|_| JpegLsError::Missing(name))?
        .to_int::<u32>()
        .map_err(|source| JpegLsError::NotANumber { name, source })
}

/// The instance with its JPEG-LS frames decoded into native pixel data (Explicit VR Little
/// Endian). Errors say what is wrong with the pixel data; they never panic, whatever the bytes.
pub fn to_native(obj: &DefaultDicomObject) -> Result<DefaultDicomObject, JpegLsError> {
    let rows = uint(obj, tags::ROWS, "Rows")? as usize;
    let cols = uint(obj, tags::COLUMNS, "Columns")? as usize;
    let bits_allocated = uint(obj, tags::BITS_ALLOCATED, "Bits Allocated")?;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL, "Samples per Pixel").unwrap_or(1);
    let frames = match obj.element_opt(tags::NUMBER_OF_FRAMES) {
        Ok(Some(e)) => e
            .to_int::<u32>()
            .map_err(|source| JpegLsError::NotANumber {
                name: "Number of Frames",
                source,
            })?
            .max(1) as usize,
        _ => 1,
    };
    if samples != 1 {
        return Err(JpegLsError::Samples(samples));
    }
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(JpegLsError::BitsAllocated(bits_allocated));
    }
    let bytes = rows as u64 * cols as u64 * frames as u64 * u64::from(bits_allocated / 8);
    if rows == 0 || cols == 0 || bytes > MAX_DECODED_BYTES {
        return Err(JpegLsError::Size {
            frames,
            rows,
            cols,
            bytes,
        });
    }
    let pixel_data = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| JpegLsError::Missing("Pixel Data"))?;
    let (fragments, offsets) = match pixel_data.value() {
        Value::PixelSequence(seq) => (seq.fragments(), seq.offset_table()),
        _ => return Err(JpegLsError::NotEncapsulated),
    };
    let streams = frame_streams(fragments, offsets, frames)?;

    let mut samples16: Vec<u16> = Vec::with_capacity(rows * cols * frames);
    for (f, stream) in streams.iter().enumerate() {
        let stream = without_fill_before_eoi(stream);
        // A malformed stream must fail this instance, not the worker: the codec is checked
        // against overflowing arithmetic only in debug builds, so a panic is caught here too.
        let decoded =
            std::panic::catch_unwind(|| ::jpegls::decode(&stream, cols as u32, rows as u32))
                .map_err(|_| JpegLsError::Malformed(f + 1))?
                .map_err(|source| JpegLsError::Codec {
                    frame: f + 1,
                    source,
                })?;
        let (pixels, w, h) = decoded;
        if w as usize != cols || h as usize != rows || pixels.len() != rows * cols {
            return Err(JpegLsError::FrameSize {
                frame: f + 1,
                width: w,
                height: h,
                cols,
                rows,
            });
        }
        samples16.extend_from_slice(&pixels);
    }

    let value = if bits_allocated == 8 {
        let mut b: Vec<u8> = samples16.iter().map(|&v| v as u8).collect();
        if b.len() % 2 == 1 {
            b.push(0);
        }
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(b))
    } else {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(samples16.into()),
        )
    };
    let mut native = obj.clone();
    native.put(value);
    native
        .meta_mut()
        .set_transfer_syntax(&EXPLICIT_VR_LITTLE_ENDIAN);
    Ok(native)
}

/// The stream with any fill bytes (0xFF) before its final EOI marker removed, and nothing after
/// the EOI (DICOM pads an odd-length stream with 0x00). Fill bytes may precede any marker (T.81
/// B.1.1.2, which T.87 keeps); CharLS, the codec behind most JPEG-LS in the wild (pyjpegls,
/// GDCM), ends a scan with `FF FF D9`, which pure_jpegls reads as a missing EOI. Entropy-coded
/// data never ends in a bare 0xFF (the next byte would carry a stuffed 0 bit), so every 0xFF
/// directly before the `FF D9` is a fill byte.
fn without_fill_before_eoi(stream: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let mut end = stream.len();
    while end > 0 && stream[end - 1] == 0 {
        end -= 1;
    }
    if end < 2 || stream[end - 2..end] != [0xFF, 0xD9] {
        return Cow::Borrowed(stream);
    }
    let mut marker = end - 2;
    while marker > 0 && stream[marker - 1] == 0xFF {
        marker -= 1;
    }
    if marker == end - 2 && end == stream.len() {
        return Cow::Borrowed(stream);
    }
    let mut out = stream[..marker].to_vec();
    out.extend_from_slice(&[0xFF, 0xD9]);
    Cow::Owned(out)
}

/// One JPEG-LS stream per frame: one fragment per frame, all fragments of a single frame, or the
/// Basic Offset Table's groups (PS3.5 A.4).
fn frame_streams<'a>(
    fragments: &'a [Vec<u8>],
    offsets: &[u32],
    frames: usize,
) -> Result<Vec<std::borrow::Cow<'a, [u8]>>, JpegLsError> {
    use std::borrow::Cow;
    if fragments.is_empty() {
        return Err(JpegLsError::NoFragments);
    }
    if fragments.len() == frames {
        return Ok(fragments
            .iter()
            .map(|f| Cow::Borrowed(f.as_slice()))
            .collect());
    }
    if frames == 1 {
        return Ok(vec![Cow::Owned(fragments.concat())]);
    }
    if offsets.len() != frames {
        return Err(JpegLsError::NoOffsetTable {
            frames,
            fragments: fragments.len(),
        });
    }
    // Offsets count bytes from the first fragment's item tag: 8 bytes of item header each.
    let mut starts = Vec::with_capacity(fragments.len());
    let mut at = 0u64;
    for f in fragments {
        starts.push(at);
        at += 8 + f.len() as u64;
    }
    let mut out = Vec::with_capacity(frames);
    for (n, &off) in offsets.iter().enumerate() {
        let end = offsets.get(n + 1).map(|&e| u64::from(e)).unwrap_or(at);
        let first = starts
            .iter()
            .position(|&s| s == u64::from(off))
            .ok_or(JpegLsError::OffsetInsideFragment(n))?;
        let parts: Vec<u8> = fragments
            .iter()
            .zip(&starts)
            .skip(first)
            .take_while(|(_, &s)| s < end)
            .flat_map(|(f, _)| f.iter().copied())
            .collect();
        if parts.is_empty() {
            return Err(JpegLsError::EmptyFrame(n + 1));
        }
        out.push(Cow::Owned(parts));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(n: usize, b: u8) -> Vec<u8> {
        vec![b; n]
    }

    #[test]
    fn frames_from_fragments() {
        let f = vec![frag(4, 1), frag(6, 2), frag(2, 3)];
        // One fragment per frame.
        assert_eq!(frame_streams(&f, &[], 3).unwrap().len(), 3);
        // A single frame split over fragments.
        assert_eq!(frame_streams(&f, &[], 1).unwrap()[0].len(), 12);
        // Two frames, the offset table says: fragments {0, 1} and {2}.
        let s = frame_streams(&f, &[0, 8 + 4 + 8 + 6], 2).unwrap();
        assert_eq!(s[0].len(), 10);
        assert_eq!(&*s[1], &[3, 3]);
        // An offset inside a fragment, or no table for several frames, is refused.
        assert!(frame_streams(&f, &[0, 5], 2).is_err());
        assert!(frame_streams(&f, &[], 2).is_err());
        assert!(frame_streams(&[], &[], 1).is_err());
    }

    #[test]
    fn fill_bytes_before_eoi_are_dropped() {
        let tail = |b: &[u8]| without_fill_before_eoi(b).into_owned();
        assert_eq!(tail(&[1, 2, 0xFF, 0xD9]), vec![1, 2, 0xFF, 0xD9]);
        assert_eq!(
            tail(&[1, 0x7F, 0xFF, 0xFF, 0xD9]),
            vec![1, 0x7F, 0xFF, 0xD9]
        );
        assert_eq!(tail(&[1, 0xFF, 0xFF, 0xFF, 0xD9, 0]), vec![1, 0xFF, 0xD9]);
        assert_eq!(tail(&[1, 2, 0xFF, 0xD9, 0]), vec![1, 2, 0xFF, 0xD9]);
        // No EOI: left as it is (the codec says what is wrong).
        assert_eq!(tail(&[1, 2, 3]), vec![1, 2, 3]);
    }

    #[test]
    fn garbage_streams_fail_cleanly() {
        for data in [
            vec![],
            vec![0xFF, 0xD8],
            vec![
                0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 16, 0xFF, 0xFF, 0xFF, 0xFF, 1, 1, 0x11, 0,
            ],
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ] {
            let r = std::panic::catch_unwind(|| ::jpegls::decode(&data, 64, 64));
            assert!(matches!(r, Ok(Err(_)) | Err(_)), "garbage decoded");
        }
    }
}
