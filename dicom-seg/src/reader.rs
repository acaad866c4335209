//! Reading a Segmentation back (ours, highdicom's, dcmqi's): segment metadata, frames, and masks mapped
//! onto a source grid by Referenced SOP Instance UID (and frame number) or, failing that, by position.

use crate::builder::{AlgorithmIdentification, FractionalType, SegmentNumber};
use crate::code::{CodedConcept, DicomLab};
use crate::ds::{self, Obj};
use crate::error::{Result, SegError};
use crate::pixels::unpack_frame;
use crate::source::{dot, SourceSeries};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use ndarray::{Array2, Array3, Array4};
use std::collections::HashMap;
use std::io::Read;

/// The Segmentation Type of a SEG read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentationType {
    /// BINARY: pixel values 0 or 1.
    Binary,
    /// FRACTIONAL: pixel values 0..=max.
    Fractional {
        /// PROBABILITY or OCCUPANCY.
        kind: FractionalType,
        /// Maximum Fractional Value.
        max: u16,
    },
}

/// A Segment Sequence item as read (lenient: SEGs from other tools may omit type-3 parts).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSegment {
    /// Segment Number.
    pub number: SegmentNumber,
    /// Segment Label.
    pub label: String,
    /// Segment Description.
    pub description: Option<String>,
    /// Segmented Property Category.
    pub category: Option<CodedConcept>,
    /// Segmented Property Type.
    pub property_type: Option<CodedConcept>,
    /// Segment Algorithm Type (AUTOMATIC, SEMIAUTOMATIC, MANUAL).
    pub algorithm_type: String,
    /// Segment Algorithm Name.
    pub algorithm_name: Option<String>,
    /// Segmentation Algorithm Identification Sequence, when present.
    pub algorithm: Option<AlgorithmIdentification>,
    /// Recommended Display CIELab Value.
    pub display_color: Option<DicomLab>,
    /// Tracking ID.
    pub tracking_id: Option<String>,
}

/// A source image (frame) a SEG frame was derived from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRef {
    /// Referenced SOP Instance UID.
    pub sop_instance_uid: String,
    /// Referenced Frame Number, for multi-frame sources.
    pub frame_number: Option<u32>,
}

/// One SEG frame.
#[derive(Debug, Clone, PartialEq)]
pub struct SegFrame {
    /// The segment it belongs to.
    pub segment: SegmentNumber,
    /// Image Position (Patient), when given.
    pub position: Option<[f64; 3]>,
    /// Source images it was derived from.
    pub sources: Vec<SourceRef>,
    /// Pixel values, rows x columns: 0/1 for BINARY, 0..=max for FRACTIONAL.
    pub pixels: Array2<u8>,
}

/// A Segmentation read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSegmentation {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: Option<String>,
    /// Study Instance UID.
    pub study_instance_uid: Option<String>,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: Option<String>,
    /// BINARY or FRACTIONAL.
    pub segmentation_type: SegmentationType,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub columns: u16,
    /// Image Orientation (Patient) (shared functional groups, else that of the first frame).
    pub orientation: Option<[f64; 6]>,
    /// The Segment Sequence, in order.
    pub segments: Vec<ReadSegment>,
    /// The frames, in stored order.
    pub frames: Vec<SegFrame>,
}

impl ReadSegmentation {
    /// Parses a Part-10 byte stream (with or without the 128-byte preamble).
    ///
    /// The element structure is checked first (every defined length must fit in the input), so a
    /// corrupted length is an error rather than a huge allocation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        check_lengths(bytes)?;
        let file = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Auto)
            .from_reader(bytes)
            .map_err(|e| SegError::read("Part-10 file", e))?;
        let ts = file
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string();
        if ![
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
            "1.2.840.10008.1.2.2", // explicit VR big endian (retired, still readable)
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        ]
        .contains(&ts.as_str())
        {
            return Err(SegError::NotASegmentation(format!(
                "transfer syntax {ts} (encapsulated pixel data) is not supported"
            )));
        }
        Self::from_dataset(&file)
    }

    /// Parses a Part-10 stream (read to the end first).
    pub fn from_reader(mut r: impl Read) -> Result<Self> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)
            .map_err(|e| SegError::read("input", e))?;
        Self::from_bytes(&bytes)
    }

    /// Interprets a data set (native pixel data).
    pub fn from_dataset<'a>(o: &'a Obj) -> Result<Self> {
        let class = ds::get_str(o, tags::SOP_CLASS_UID).unwrap_or_default();
        if class != uids::SEGMENTATION_STORAGE {
            return Err(SegError::NotASegmentation(format!(
                "SOP Class UID {class:?}"
            )));
        }
        let attr = |attribute: &'static str, problem: &str| SegError::SegAttribute {
            attribute,
            problem: problem.to_string(),
        };
        let sop_instance_uid =
            ds::get_str(o, tags::SOP_INSTANCE_UID).ok_or(attr("SOPInstanceUID", "is missing"))?;
        let rows = ds::get_u32(o, tags::ROWS).ok_or(attr("Rows", "is missing"))?;
        let columns = ds::get_u32(o, tags::COLUMNS).ok_or(attr("Columns", "is missing"))?;
        let (rows, columns) = match (u16::try_from(rows), u16::try_from(columns)) {
            (Ok(r), Ok(c)) if r > 0 && c > 0 => (r, c),
            _ => return Err(attr("Rows/Columns", "out of range")),
        };
        let bits =
            ds::get_u32(o, tags::BITS_ALLOCATED).ok_or(attr("BitsAllocated", "is missing"))?;
        let seg_type = ds::get_str(o, tags::SEGMENTATION_TYPE)
            .ok_or(attr("SegmentationType", "is missing"))?;
        let segmentation_type = match (seg_type.as_str(), bits) {
            ("BINARY", 1) => SegmentationType::Binary,
            ("FRACTIONAL", 8) => {
                let kind = match ds::get_str(o, tags::SEGMENTATION_FRACTIONAL_TYPE).as_deref() {
                    Some("PROBABILITY") => FractionalType::Probability,
                    Some("OCCUPANCY") => FractionalType::Occupancy,
                    other => {
                        return Err(attr(
                            "SegmentationFractionalType",
                            &format!("has value {other:?}"),
                        ))
                    }
                };
                let max = ds::get_u32(o, tags::MAXIMUM_FRACTIONAL_VALUE)
                    .and_then(|m| u16::try_from(m).ok())
                    .filter(|m| *m > 0)
                    .ok_or(attr("MaximumFractionalValue", "is missing or invalid"))?;
                SegmentationType::Fractional { kind, max }
            }
            (t, b) => {
                return Err(SegError::NotASegmentation(format!(
                    "Segmentation Type {t} with Bits Allocated {b} is not supported"
                )))
            }
        };

        let mut segments = Vec::new();
        for it in
            ds::items(o, tags::SEGMENT_SEQUENCE).ok_or(attr("SegmentSequence", "is missing"))?
        {
            segments.push(read_segment(it)?);
        }

        let shared = ds::first_item(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per_frame = ds::items(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok_or(attr("PerFrameFunctionalGroupsSequence", "is missing"))?;
        let nframes = ds::get_u32(o, tags::NUMBER_OF_FRAMES).unwrap_or(1) as usize;
        if per_frame.len() != nframes {
            return Err(attr(
                "PerFrameFunctionalGroupsSequence",
                &format!("has {} items for {nframes} frames", per_frame.len()),
            ));
        }
        // A functional group macro from the frame's item, else the shared item.
        let group = |frame: &'a Obj, seq| -> Option<&'a Obj> {
            ds::first_item(frame, seq).or_else(move || shared.and_then(|s| ds::first_item(s, seq)))
        };
        let shared_orientation = shared
            .and_then(|s| ds::first_item(s, tags::PLANE_ORIENTATION_SEQUENCE))
            .or_else(|| {
                per_frame
                    .first()
                    .and_then(|f| ds::first_item(f, tags::PLANE_ORIENTATION_SEQUENCE))
            })
            .and_then(|m| ds::get_f64s(m, tags::IMAGE_ORIENTATION_PATIENT))
            .and_then(|v| <[f64; 6]>::try_from(v).ok());

        let pixel_data = o
            .get(tags::PIXEL_DATA)
            .ok_or(attr("PixelData", "is missing"))?
            .to_bytes()
            .map_err(|_| attr("PixelData", "is encapsulated or unreadable"))?;
        let ppf = rows as usize * columns as usize;

        let mut frames = Vec::with_capacity(nframes);
        for (k, f) in per_frame.iter().enumerate() {
            let seg = group(f, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
                .and_then(|m| ds::get_u32(m, tags::REFERENCED_SEGMENT_NUMBER))
                .and_then(|n| u16::try_from(n).ok())
                .and_then(SegmentNumber::new)
                .ok_or(attr(
                    "ReferencedSegmentNumber",
                    &format!("is missing for frame {}", k + 1),
                ))?;
            if !segments.iter().any(|s| s.number == seg) {
                return Err(SegError::UnknownSegment(seg.get() as u32));
            }
            let position = group(f, tags::PLANE_POSITION_SEQUENCE)
                .and_then(|m| ds::get_f64s(m, tags::IMAGE_POSITION_PATIENT))
                .and_then(|v| <[f64; 3]>::try_from(v).ok());
            let mut sources = Vec::new();
            for der in ds::items(f, tags::DERIVATION_IMAGE_SEQUENCE).unwrap_or(&[]) {
                for src in ds::items(der, tags::SOURCE_IMAGE_SEQUENCE).unwrap_or(&[]) {
                    if let Some(uid) = ds::get_str(src, tags::REFERENCED_SOP_INSTANCE_UID) {
                        let numbers =
                            ds::get_u32s(src, tags::REFERENCED_FRAME_NUMBER).unwrap_or_default();
                        if numbers.is_empty() {
                            sources.push(SourceRef {
                                sop_instance_uid: uid,
                                frame_number: None,
                            });
                        } else {
                            for n in numbers {
                                sources.push(SourceRef {
                                    sop_instance_uid: uid.clone(),
                                    frame_number: Some(n),
                                });
                            }
                        }
                    }
                }
            }
            let values = match segmentation_type {
                SegmentationType::Binary => unpack_frame(&pixel_data, k, ppf),
                SegmentationType::Fractional { .. } => {
                    pixel_data.get(k * ppf..(k + 1) * ppf).map(|s| s.to_vec())
                }
            }
            .ok_or(attr(
                "PixelData",
                "is shorter than Rows x Columns x NumberOfFrames",
            ))?;
            let pixels = Array2::from_shape_vec((rows as usize, columns as usize), values)
                .map_err(|e| attr("PixelData", &e.to_string()))?;
            frames.push(SegFrame {
                segment: seg,
                position,
                sources,
                pixels,
            });
        }

        Ok(ReadSegmentation {
            sop_instance_uid,
            series_instance_uid: ds::get_str(o, tags::SERIES_INSTANCE_UID),
            study_instance_uid: ds::get_str(o, tags::STUDY_INSTANCE_UID),
            frame_of_reference_uid: ds::get_str(o, tags::FRAME_OF_REFERENCE_UID),
            segmentation_type,
            rows,
            columns,
            orientation: shared_orientation,
            segments,
            frames,
        })
    }

    /// For each SEG frame, the index of the source frame it lies on (by Referenced SOP Instance UID and
    /// frame number; by position when the references are absent or ambiguous). Errors when a frame cannot
    /// be placed or when reference and position disagree.
    pub fn map_frames(&self, source: &SourceSeries) -> Result<Vec<usize>> {
        if let Some(f) = &self.frame_of_reference_uid {
            if f != source.frame_of_reference_uid().as_str() {
                return Err(SegError::FrameOfReferenceMismatch {
                    seg: f.clone(),
                    source_for: source.frame_of_reference_uid().to_string(),
                });
            }
        }
        if (self.rows, self.columns) != (source.rows(), source.columns()) {
            return Err(SegError::MaskShape {
                what: "the SEG frames".into(),
                got: vec![self.rows as usize, self.columns as usize],
                expected: source.shape(),
            });
        }
        if let Some(o) = self.orientation {
            let so = source.orientation();
            if o.iter().zip(&so).any(|(a, b)| (a - b).abs() > 1e-3) {
                return Err(SegError::UnmappedFrame {
                    frame: 1,
                    reason: format!(
                        "SEG orientation {o:?} differs from the source {so:?} (no resampling)"
                    ),
                });
            }
        }
        let mut by_ref: HashMap<(&str, Option<u32>), usize> = HashMap::new();
        for (i, f) in source.frames().iter().enumerate() {
            by_ref.insert((f.sop_instance_uid.as_str(), f.frame_number), i);
            if f.frame_number.is_none() {
                // A single-frame image may be referenced as frame 1.
                by_ref.insert((f.sop_instance_uid.as_str(), Some(1)), i);
            }
        }
        let ps = source.pixel_spacing();
        let min_spacing = ps[0].min(ps[1]).min(
            source
                .regular_spacing()
                .map(f64::abs)
                .unwrap_or(f64::INFINITY),
        );
        let tol = (0.05 * min_spacing).max(1e-3);
        let normal = source.normal();
        let mut out = Vec::with_capacity(self.frames.len());
        for (k, fr) in self.frames.iter().enumerate() {
            let mut hits: Vec<usize> = fr
                .sources
                .iter()
                .filter_map(|r| {
                    by_ref
                        .get(&(r.sop_instance_uid.as_str(), r.frame_number))
                        .copied()
                })
                .collect();
            hits.sort_unstable();
            hits.dedup();
            let by_pos = fr.position.map(|p| source.frame_at(p, tol));
            let idx = match (hits.as_slice(), by_pos) {
                ([i], Some(Some(j))) if *i != j => {
                    return Err(SegError::UnmappedFrame {
                        frame: k + 1,
                        reason: format!(
                            "it references source frame {i} but lies on source frame {j} (distance along normal {:.3} mm)",
                            dot(source.frames()[*i].position, normal) - dot(source.frames()[j].position, normal)
                        ),
                    })
                }
                ([i], _) => *i,
                (_, Some(Some(j))) => j,
                (_, Some(None)) => {
                    return Err(SegError::UnmappedFrame {
                        frame: k + 1,
                        reason: format!("its position {:?} is on no source frame", fr.position.unwrap_or_default()),
                    })
                }
                ([], None) => {
                    return Err(SegError::UnmappedFrame {
                        frame: k + 1,
                        reason: "it references no source frame of this series and has no position".into(),
                    })
                }
                (_, None) => {
                    return Err(SegError::UnmappedFrame {
                        frame: k + 1,
                        reason: "it references several source frames and has no position".into(),
                    })
                }
            };
            out.push(idx);
        }
        Ok(out)
    }

    /// The frames derived from one source instance (and frame, for multi-frame sources), by Referenced
    /// SOP Instance UID; a single-frame reference matches `frame_number` `None` or `Some(1)`.
    pub fn frames_referencing<'s>(
        &'s self,
        sop_instance_uid: &'s str,
        frame_number: Option<u32>,
    ) -> impl Iterator<Item = &'s SegFrame> + 's {
        self.frames.iter().filter(move |f| {
            f.sources.iter().any(|r| {
                r.sop_instance_uid == sop_instance_uid
                    && (r.frame_number == frame_number
                        || (r.frame_number.unwrap_or(1) == 1 && frame_number.unwrap_or(1) == 1))
            })
        })
    }

    /// All masks on the source grid: shape (segments, source frames, rows, columns), segment `n` at index
    /// `n - 1`, source frames in [`SourceSeries::frames`] order. Frames absent from the SEG are 0.
    pub fn masks_on(&self, source: &SourceSeries) -> Result<Array4<u8>> {
        let map = self.map_frames(source)?;
        let nseg = self
            .segments
            .iter()
            .map(|s| s.number.get() as usize)
            .max()
            .unwrap_or(0);
        let [n, r, c] = source.shape();
        let mut out = Array4::<u8>::zeros((nseg, n, r, c));
        for (fr, &i) in self.frames.iter().zip(&map) {
            let mut dst = out.slice_mut(ndarray::s![fr.segment.get() as usize - 1, i, .., ..]);
            ndarray::Zip::from(&mut dst)
                .and(&fr.pixels)
                .for_each(|d, &v| *d = (*d).max(v));
        }
        Ok(out)
    }

    /// One label map on the source grid, shape (source frames, rows, columns) in
    /// [`SourceSeries::frames`] order: each voxel holds `label_of(segment)` of the last segment (in
    /// segment-number order) whose mask covers it, 0 where none does. The inverse of building a SEG
    /// from a label map with one segment per label.
    pub fn labels_on(
        &self,
        source: &SourceSeries,
        label_of: impl Fn(SegmentNumber) -> u8,
    ) -> Result<Array3<u8>> {
        let masks = self.masks_on(source)?;
        let [n, r, c] = source.shape();
        let mut out = Array3::<u8>::zeros((n, r, c));
        let mut numbers: Vec<SegmentNumber> = self.segments.iter().map(|s| s.number).collect();
        numbers.sort_by_key(|n| n.get());
        for number in numbers {
            let label = label_of(number);
            let mask = masks.index_axis(ndarray::Axis(0), number.get() as usize - 1);
            ndarray::Zip::from(&mut out).and(&mask).for_each(|o, &m| {
                if m != 0 {
                    *o = label;
                }
            });
        }
        Ok(out)
    }

    /// The mask of one segment on the source grid (frames, rows, columns).
    pub fn segment_on(&self, source: &SourceSeries, segment: SegmentNumber) -> Result<Array3<u8>> {
        if !self.segments.iter().any(|s| s.number == segment) {
            return Err(SegError::UnknownSegment(segment.get() as u32));
        }
        let all = self.masks_on(source)?;
        Ok(all
            .index_axis(ndarray::Axis(0), segment.get() as usize - 1)
            .to_owned())
    }
}

fn read_segment(it: &Obj) -> Result<ReadSegment> {
    let number = ds::get_u32(it, tags::SEGMENT_NUMBER)
        .and_then(|n| u16::try_from(n).ok())
        .and_then(SegmentNumber::new)
        .ok_or(SegError::SegAttribute {
            attribute: "SegmentNumber",
            problem: "is missing or 0".into(),
        })?;
    let algorithm = ds::first_item(it, tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE)
        .and_then(|a| {
            Some(AlgorithmIdentification {
                family: ds::get_code(a, tags::ALGORITHM_FAMILY_CODE_SEQUENCE)?,
                name: ds::get_str(a, tags::ALGORITHM_NAME)?,
                version: ds::get_str(a, tags::ALGORITHM_VERSION).unwrap_or_default(),
                parameters: ds::get_str(a, tags::ALGORITHM_PARAMETERS),
                source: ds::get_str(a, tags::ALGORITHM_SOURCE),
            })
        });
    let display_color =
        ds::get_u32s(it, tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE).and_then(|v| match v[..] {
            [l, a, b] => Some(DicomLab([l as u16, a as u16, b as u16])),
            _ => None,
        });
    Ok(ReadSegment {
        number,
        label: ds::get_str(it, tags::SEGMENT_LABEL).unwrap_or_default(),
        description: ds::get_str(it, tags::SEGMENT_DESCRIPTION),
        category: ds::get_code(it, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE),
        property_type: ds::get_code(it, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE),
        algorithm_type: ds::get_str(it, tags::SEGMENT_ALGORITHM_TYPE).unwrap_or_default(),
        algorithm_name: ds::get_str(it, tags::SEGMENT_ALGORITHM_NAME),
        algorithm,
        display_color,
        tracking_id: ds::get_str(it, tags::TRACKING_ID),
    })
}

/// Walks the element headers of a Part-10 stream (meta group, then the data set when it is explicit or
/// implicit VR little endian) and checks that every defined length fits in the input.
fn check_lengths(b: &[u8]) -> Result<()> {
    let short = SegError::Truncated;
    let start = if b.len() >= 132 && &b[128..132] == b"DICM" {
        132
    } else if b.len() >= 4 && &b[..4] == b"DICM" {
        4
    } else {
        return Err(short("no DICM prefix"));
    };
    let u16_at = |p: usize| b.get(p..p + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |p: usize| {
        b.get(p..p + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    // Meta group: explicit VR little endian.
    let mut p = start;
    let mut ts = String::new();
    while u16_at(p) == Some(0x0002) {
        let elem = u16_at(p + 2).ok_or(short("meta header"))?;
        let vr = b.get(p + 4..p + 6).ok_or(short("meta header"))?;
        if !known_vr(vr) {
            return Err(short("unknown VR in the meta group"));
        }
        let (len, head) = if long_vr(vr) {
            (u32_at(p + 8).ok_or(short("meta header"))? as usize, 12)
        } else {
            (u16_at(p + 6).ok_or(short("meta header"))? as usize, 8)
        };
        let value = b
            .get(p + head..p + head + len)
            .ok_or(short("meta element length"))?;
        if elem == 0x0010 {
            ts = String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_string();
        }
        p += head + len;
    }
    let explicit = match ts.as_str() {
        uids::EXPLICIT_VR_LITTLE_ENDIAN => true,
        uids::IMPLICIT_VR_LITTLE_ENDIAN => false,
        _ => return Ok(()), // deflated / big endian / encapsulated: left to the parser
    };
    const UNDEFINED: u32 = 0xFFFF_FFFF;
    while p < b.len() {
        let group = u16_at(p).ok_or(short("element header"))?;
        let elem = u16_at(p + 2).ok_or(short("element header"))?;
        let (len, head, vr) = if group == 0xFFFE {
            // Item and delimiters: tag + 4-byte length, no VR.
            (u32_at(p + 4).ok_or(short("item header"))?, 8, None)
        } else if explicit {
            let vr = b.get(p + 4..p + 6).ok_or(short("element header"))?;
            if !known_vr(vr) {
                return Err(short("unknown VR"));
            }
            if long_vr(vr) {
                (u32_at(p + 8).ok_or(short("element header"))?, 12, Some(vr))
            } else {
                (
                    u16_at(p + 6).ok_or(short("element header"))? as u32,
                    8,
                    Some(vr),
                )
            }
        } else {
            (u32_at(p + 4).ok_or(short("element header"))?, 8, None)
        };
        if len == UNDEFINED {
            // Sequence, item or encapsulated pixel data of undefined length: walk into it.
            let _ = (elem, vr);
            p += head;
            continue;
        }
        let end = p
            .checked_add(head)
            .and_then(|x| x.checked_add(len as usize))
            .filter(|&e| e <= b.len())
            .ok_or(short("an element length runs past the end"))?;
        p = end;
    }
    Ok(())
}

fn long_vr(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OW"
            | b"OF"
            | b"OD"
            | b"OL"
            | b"OV"
            | b"SQ"
            | b"UT"
            | b"UN"
            | b"UC"
            | b"UR"
            | b"SV"
            | b"UV"
    )
}

fn known_vr(vr: &[u8]) -> bool {
    long_vr(vr)
        || matches!(
            vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        )
}
