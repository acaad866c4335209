use super::*;

/// An Explicit VR Little Endian element.
fn ex(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if long_length_vr(*vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// An Implicit VR Little Endian element header with any length.
fn im_header(group: u16, element: u16, len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// `depth` nested undefined-length sequences (Referenced Series Sequence), each in an
/// undefined-length item, properly closed, in Implicit VR LE.
fn nesting_bomb(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth {
        out.extend(im_header(0x0008, 0x1115, UNDEFINED));
        out.extend(im_header(0xFFFE, 0xE000, UNDEFINED));
    }
    for _ in 0..depth {
        out.extend(im_header(0xFFFE, 0xE00D, 0));
        out.extend(im_header(0xFFFE, 0xE0DD, 0));
    }
    out
}

fn part10(ts: &str, dataset: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    let mut ts = ts.as_bytes().to_vec();
    if ts.len() % 2 == 1 {
        ts.push(0);
    }
    out.extend(ex(0x0002, 0x0010, b"UI", &ts));
    out.extend_from_slice(dataset);
    out
}

#[test]
fn nesting_within_the_limit_passes_and_beyond_is_refused() {
    let limits = Limits::default();
    assert_eq!(
        scan_dataset(&nesting_bomb(64), Encoding::ImplicitLittle, &limits),
        Ok(64)
    );
    assert_eq!(
        scan_dataset(&nesting_bomb(65), Encoding::ImplicitLittle, &limits),
        Err(ScanError::TooDeep { limit: 64 })
    );
    // the bomb as sent: 100,000 levels, never closed
    let mut bomb = Vec::new();
    for _ in 0..100_000 {
        bomb.extend(im_header(0x0008, 0x1115, UNDEFINED));
        bomb.extend(im_header(0xFFFE, 0xE000, UNDEFINED));
    }
    assert_eq!(
        scan_dataset(&bomb, Encoding::ImplicitLittle, &limits),
        Err(ScanError::TooDeep { limit: 64 })
    );
}

#[test]
fn defined_length_nesting_counts_too() {
    // innermost first: a sequence holding one defined-length item holding the previous level
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..70 {
        let mut item = im_header(0xFFFE, 0xE000, inner.len() as u32);
        item.extend_from_slice(&inner);
        let mut seq = im_header(0x0008, 0x1115, item.len() as u32);
        seq.extend(item);
        inner = seq;
    }
    assert_eq!(
        scan_dataset(&inner, Encoding::ImplicitLittle, &Limits::default()),
        Err(ScanError::TooDeep { limit: 64 })
    );
    // explicit VR: SQ says so
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..70 {
        let mut item = im_header(0xFFFE, 0xE000, inner.len() as u32);
        item.extend_from_slice(&inner);
        inner = ex(0x0008, 0x1115, b"SQ", &item);
    }
    assert_eq!(
        scan_dataset(&inner, Encoding::ExplicitLittle, &Limits::default()),
        Err(ScanError::TooDeep { limit: 64 })
    );
}

#[test]
fn a_declared_length_beyond_the_bytes_is_refused() {
    // Patient Name declaring 1 GiB, 10 bytes present
    let mut ds = im_header(0x0010, 0x0010, 1 << 30);
    ds.extend_from_slice(b"DOE^JOHN  ");
    let err = scan_dataset(&ds, Encoding::ImplicitLittle, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ScanError::Truncated { declared, available: 10, .. } if declared == 1 << 30),
        "{err:?}"
    );
    // an element longer than its enclosing defined-length item
    let element = ex(0x0010, 0x0010, b"PN", b"DOE^JOHN");
    let mut item = im_header(0xFFFE, 0xE000, 4);
    item.extend(element);
    let seq = ex(0x0008, 0x1115, b"SQ", &item);
    assert!(matches!(
        scan_dataset(&seq, Encoding::ExplicitLittle, &Limits::default()),
        Err(ScanError::Truncated { .. })
    ));
}

#[test]
fn truncated_pixel_data_and_unterminated_sequences_are_refused() {
    let pixels = vec![7u8; 1000];
    let whole = part10(
        IMPLICIT_VR_LE,
        &[im_header(0x7FE0, 0x0010, 1000), pixels.clone()].concat(),
    );
    assert!(scan_part10(&whole, &Limits::default()).is_ok());
    // cut inside Pixel Data
    let cut = &whole[..whole.len() - 1];
    assert!(matches!(
        scan_part10(cut, &Limits::default()),
        Err(ScanError::Truncated {
            declared: 1000,
            available: 999,
            ..
        })
    ));
    // cut inside an undefined-length sequence
    let bomb = nesting_bomb(3);
    let open = part10(IMPLICIT_VR_LE, &bomb[..bomb.len() - 8]);
    assert_eq!(
        scan_part10(&open, &Limits::default()),
        Err(ScanError::Unterminated("a sequence"))
    );
    // cut inside an element header
    let header_cut = part10(IMPLICIT_VR_LE, &im_header(0x7FE0, 0x0010, 4)[..5]);
    assert!(matches!(
        scan_part10(&header_cut, &Limits::default()),
        Err(ScanError::Truncated { .. })
    ));
}

#[test]
fn encapsulated_fragments_are_skipped_by_length() {
    let mut ds = ex(0x0008, 0x0060, b"CS", b"MR");
    ds.extend_from_slice(&0x7FE0u16.to_le_bytes());
    ds.extend_from_slice(&0x0010u16.to_le_bytes());
    ds.extend_from_slice(b"OB\0\0");
    ds.extend_from_slice(&UNDEFINED.to_le_bytes());
    ds.extend(im_header(0xFFFE, 0xE000, 0)); // basic offset table
                                             // a fragment whose bytes look like a nesting bomb: not parsed
    let fragment = nesting_bomb(100);
    ds.extend(im_header(0xFFFE, 0xE000, fragment.len() as u32));
    ds.extend_from_slice(&fragment);
    ds.extend(im_header(0xFFFE, 0xE0DD, 0));
    assert_eq!(
        scan_dataset(&ds, Encoding::ExplicitLittle, &Limits::default()),
        Ok(0)
    );
    let cut = &ds[..ds.len() - 8];
    assert_eq!(
        scan_dataset(cut, Encoding::ExplicitLittle, &Limits::default()),
        Err(ScanError::Unterminated("encapsulated pixel data"))
    );
}

#[test]
fn big_endian_and_deflated_are_scanned_in_their_encoding() {
    // Explicit VR Big Endian: a 1 GiB declared UT
    let mut be = Vec::new();
    be.extend_from_slice(&0x0008u16.to_be_bytes());
    be.extend_from_slice(&0x0060u16.to_be_bytes());
    be.extend_from_slice(b"CS");
    be.extend_from_slice(&2u16.to_be_bytes());
    be.extend_from_slice(b"MR");
    assert!(scan_part10(&part10(EXPLICIT_VR_BE, &be), &Limits::default()).is_ok());
    be.extend_from_slice(&0x0008u16.to_be_bytes());
    be.extend_from_slice(&0x2111u16.to_be_bytes());
    be.extend_from_slice(b"UT\0\0");
    be.extend_from_slice(&(1u32 << 30).to_be_bytes());
    assert!(matches!(
        scan_part10(&part10(EXPLICIT_VR_BE, &be), &Limits::default()),
        Err(ScanError::Truncated { .. })
    ));

    // deflated: a bomb of zeros (a 64 MiB OB of zeros compresses to ~64 KiB)
    use std::io::Write;
    let zeros = vec![0u8; 64 << 20];
    let ds = ex(0x0009, 0x0010, b"OB", &zeros);
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&ds).unwrap();
    let deflated = enc.finish().unwrap();
    assert!(deflated.len() < 1 << 20);
    let file = part10(DEFLATED_EXPLICIT_VR_LE, &deflated);
    let small = Limits {
        max_inflated_bytes: 16 << 20,
        ..Limits::default()
    };
    assert_eq!(
        scan_part10(&file, &small),
        Err(ScanError::InflatedTooLarge { limit: 16 << 20 })
    );
    assert!(scan_part10(&file, &Limits::default()).is_ok());
    // a nesting bomb inside the deflate stream is found too
    let mut ex_bomb = Vec::new();
    for _ in 0..200 {
        ex_bomb.extend_from_slice(&0x0008u16.to_le_bytes());
        ex_bomb.extend_from_slice(&0x1115u16.to_le_bytes());
        ex_bomb.extend_from_slice(b"SQ\0\0");
        ex_bomb.extend_from_slice(&UNDEFINED.to_le_bytes());
        ex_bomb.extend(im_header(0xFFFE, 0xE000, UNDEFINED));
    }
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&ex_bomb).unwrap();
    let file = part10(DEFLATED_EXPLICIT_VR_LE, &enc.finish().unwrap());
    assert_eq!(
        scan_part10(&file, &Limits::default()),
        Err(ScanError::TooDeep { limit: 64 })
    );
}

/// A private element (0009,eeee) of this VR with an undefined length, holding one Implicit VR LE
/// item with one element, in Explicit VR LE.
fn undefined_length_private(element: u16, vr: &[u8; 2]) -> Vec<u8> {
    let mut ds = Vec::new();
    ds.extend_from_slice(&0x0009u16.to_le_bytes());
    ds.extend_from_slice(&element.to_le_bytes());
    ds.extend_from_slice(vr);
    ds.extend_from_slice(&[0, 0]);
    ds.extend_from_slice(&UNDEFINED.to_le_bytes());
    ds.extend(im_header(0xFFFE, 0xE000, UNDEFINED));
    ds.extend(im_header(0x0010, 0x0010, 4));
    ds.extend_from_slice(b"DOE ");
    ds.extend(im_header(0xFFFE, 0xE00D, 0));
    ds.extend(im_header(0xFFFE, 0xE0DD, 0));
    ds
}

#[test]
fn undefined_length_un_is_read_as_implicit() {
    let ds = undefined_length_private(0x1010, b"UN");
    assert_eq!(
        scan_dataset(&ds, Encoding::ExplicitLittle, &Limits::default()),
        Ok(1)
    );
}

#[test]
fn bytes_that_name_no_vr_are_read_as_un_as_dicom_rs_reads_them() {
    // (0010,0010) with the VR bytes "P\x83" (a one-byte flip of "PN"), then 2 bytes that a
    // 2-byte length would take for the length and 4 bytes of value. As UN (dicom-rs, dcmtk), the
    // same bytes are a reserved field and a 4-byte length of 1 MiB: beyond the data set.
    let mut ds = Vec::new();
    ds.extend_from_slice(&0x0010u16.to_le_bytes());
    ds.extend_from_slice(&0x0010u16.to_le_bytes());
    ds.extend_from_slice(b"P\x83");
    ds.extend_from_slice(&4u16.to_le_bytes());
    ds.extend_from_slice(&[0x00, 0x00, 0x10, 0x00]);
    ds.extend(ex(0x0010, 0x0020, b"LO", b"ID12"));
    assert!(matches!(
        scan_dataset(&ds, Encoding::ExplicitLittle, &Limits::default()),
        Err(ScanError::Truncated {
            declared: 0x10_0000,
            ..
        })
    ));
    // and dicom-rs, given the same bytes, reads that length too (it fails the same way)
    let file = part10("1.2.840.10008.1.2.1", &ds);
    assert!(dicom_object::OpenFileOptions::new()
        .from_reader(&file[128..])
        .is_err());

    // An element under an unknown VR with a reserved field and a 4-byte length is read like UN,
    // undefined length included (its content in Implicit VR LE).
    let mut ds = ex(0x0009, 0x1010, b"ZZ", &[1, 2, 3, 4]);
    assert_eq!(&ds[4..8], b"ZZ\0\0", "the 12-byte header of a long VR");
    ds.extend(undefined_length_private(0x1011, b"ZZ"));
    assert_eq!(
        scan_dataset(&ds, Encoding::ExplicitLittle, &Limits::default()),
        Ok(1)
    );
}

#[test]
fn a_binary_value_cut_short_is_refused_in_either_encoding() {
    // (0028,0102) High Bit: US, 2 bytes. One bit turns "US" into "UL", which needs 4 per value.
    let ds = [
        ex(0x0028, 0x0102, b"UL", &[11, 0]),
        ex(0x0028, 0x0103, b"US", &[0, 0]),
    ]
    .concat();
    let e = scan_dataset(&ds, Encoding::ExplicitLittle, &Limits::default()).unwrap_err();
    assert_eq!(
        e,
        ScanError::Malformed("(0028,0102) UL with a length of 2, not a multiple of 4".into())
    );
    let ok = [
        ex(0x0028, 0x0102, b"US", &[11, 0]),
        ex(0x0028, 0x0103, b"US", &[0, 0]),
    ]
    .concat();
    assert_eq!(
        scan_dataset(&ok, Encoding::ExplicitLittle, &Limits::default()),
        Ok(0)
    );

    // Implicit VR: the dictionary's VR (US), as dicom-rs reads it.
    let mut ds = im_header(0x0028, 0x0102, 3);
    ds.extend_from_slice(&[11, 0, 0]);
    ds.extend(im_header(0x0028, 0x0103, 2));
    ds.extend_from_slice(&[0, 0]);
    let e = scan_dataset(&ds, Encoding::ImplicitLittle, &Limits::default()).unwrap_err();
    assert!(
        matches!(&e, ScanError::Malformed(m) if m.contains("US with a length of 3")),
        "{e}"
    );
    // A private or unknown tag has no dictionary VR: its bytes are taken as they are.
    let mut ds = im_header(0x0009, 0x1001, 3);
    ds.extend_from_slice(&[1, 2, 3]);
    assert_eq!(
        scan_dataset(&ds, Encoding::ImplicitLittle, &Limits::default()),
        Ok(0)
    );
}

#[test]
fn every_shipped_test_instance_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/studies");
    let mut stack = vec![root];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "dcm") {
                let bytes = std::fs::read(&path).unwrap();
                scan_part10(&bytes, &Limits::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // and cut anywhere inside the data set, it is refused
                let cut = &bytes[..bytes.len() - 3];
                assert!(
                    scan_part10(cut, &Limits::default()).is_err(),
                    "{}",
                    path.display()
                );
                seen += 1;
            }
        }
    }
    assert!(seen > 100, "found {seen} instances");
}
