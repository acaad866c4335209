//! The Segmentation builder: source grid + segment descriptions + masks -> a complete SEG instance.

use crate::code::{CodedConcept, DicomLab};
use crate::ds::{
    self, code_item, put_ds, put_empty, put_opt_str, put_seq, put_str, put_strs, put_u16, Obj,
};
use crate::error::{Result, SegError};
use crate::pixels::BitWriter;
use crate::source::SourceSeries;
use crate::uid::{Uid, UidGenerator};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::FileDicomObject;
use ndarray::{ArrayView2, ArrayView3, Axis};
use std::io::Write;
use std::num::NonZeroU16;

/// A segment number: 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentNumber(NonZeroU16);

impl SegmentNumber {
    /// `Some` unless `n` is 0.
    pub fn new(n: u16) -> Option<Self> {
        NonZeroU16::new(n).map(SegmentNumber)
    }
    /// The number.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// Algorithm Identification (PS3.3 C.8.20.2 / 10.16): family, name, version.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmIdentification {
    /// Algorithm Family Code Sequence, e.g. [`codes::artificial_intelligence`](crate::codes::artificial_intelligence).
    pub family: CodedConcept,
    /// Algorithm Name (also written as Segment Algorithm Name).
    pub name: String,
    /// Algorithm Version.
    pub version: String,
    /// Algorithm Parameters, if any.
    pub parameters: Option<String>,
    /// Algorithm Source (e.g. the organisation), if any.
    pub source: Option<String>,
}

/// How the segment was produced (Segment Algorithm Type).
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentAlgorithm {
    /// AUTOMATIC, with the algorithm that produced it.
    Automatic(AlgorithmIdentification),
    /// SEMIAUTOMATIC, with the algorithm that helped.
    SemiAutomatic(AlgorithmIdentification),
    /// MANUAL.
    Manual,
}

impl SegmentAlgorithm {
    fn type_str(&self) -> &'static str {
        match self {
            SegmentAlgorithm::Automatic(_) => "AUTOMATIC",
            SegmentAlgorithm::SemiAutomatic(_) => "SEMIAUTOMATIC",
            SegmentAlgorithm::Manual => "MANUAL",
        }
    }
    fn identification(&self) -> Option<&AlgorithmIdentification> {
        match self {
            SegmentAlgorithm::Automatic(a) | SegmentAlgorithm::SemiAutomatic(a) => Some(a),
            SegmentAlgorithm::Manual => None,
        }
    }
}

/// One item of the Segment Sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDescription {
    /// Segment Number; segments must be numbered 1..=n.
    pub number: SegmentNumber,
    /// Segment Label (LO).
    pub label: String,
    /// Segment Description (ST), optional.
    pub description: Option<String>,
    /// Segmented Property Category Code Sequence, e.g. SCT 49755003.
    pub category: CodedConcept,
    /// Segmented Property Type Code Sequence, e.g. SCT 6574001 Necrosis.
    pub property_type: CodedConcept,
    /// Segment Algorithm Type and identification.
    pub algorithm: SegmentAlgorithm,
    /// Recommended Display CIELab Value.
    pub display_color: Option<DicomLab>,
    /// Tracking ID (with a Tracking UID generated for it), optional.
    pub tracking_id: Option<String>,
}

impl SegmentDescription {
    /// An AUTOMATIC segment.
    pub fn automatic(
        number: SegmentNumber,
        label: impl Into<String>,
        category: CodedConcept,
        property_type: CodedConcept,
        algorithm: AlgorithmIdentification,
    ) -> Self {
        SegmentDescription {
            number,
            label: label.into(),
            description: None,
            category,
            property_type,
            algorithm: SegmentAlgorithm::Automatic(algorithm),
            display_color: None,
            tracking_id: None,
        }
    }
    /// Sets the description.
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    /// Sets the display colour from sRGB.
    pub fn with_srgb(mut self, r: u8, g: u8, b: u8) -> Self {
        self.display_color = Some(DicomLab::from_srgb(r, g, b));
        self
    }

    fn validate(&self) -> Result<()> {
        check_len("SegmentLabel", &self.label, 64, true)?;
        if let Some(d) = &self.description {
            check_len("SegmentDescription", d, 1024, false)?;
        }
        self.category.validate()?;
        self.property_type.validate()?;
        if let Some(a) = self.algorithm.identification() {
            a.family.validate()?;
            check_len("AlgorithmName", &a.name, 64, true)?;
            check_len("AlgorithmVersion", &a.version, 64, true)?;
            if let Some(p) = &a.parameters {
                check_len("AlgorithmParameters", p, 10240, false)?;
            }
            if let Some(s) = &a.source {
                check_len("AlgorithmSource", s, 64, true)?;
            }
        }
        if let Some(t) = &self.tracking_id {
            check_len("TrackingID", t, 64, true)?;
        }
        Ok(())
    }
}

fn check_len(attribute: &'static str, v: &str, max: usize, single_line: bool) -> Result<()> {
    let bad = |reason| {
        Err(SegError::InvalidValue {
            attribute,
            value: v.to_string(),
            reason,
        })
    };
    if v.trim().is_empty() {
        return bad("must not be empty");
    }
    if v.chars().count() > max {
        return bad("is too long for its value representation");
    }
    if v.contains('\\') && single_line {
        return bad("must not contain a backslash");
    }
    if single_line && v.chars().any(|c| c.is_control()) {
        return bad("must not contain control characters");
    }
    Ok(())
}

/// Enhanced General Equipment: all four are type 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Equipment {
    /// Manufacturer.
    pub manufacturer: String,
    /// Manufacturer's Model Name.
    pub model_name: String,
    /// Device Serial Number.
    pub device_serial_number: String,
    /// Software Versions.
    pub software_versions: String,
}

impl Equipment {
    /// Puts the four attributes (General and Enhanced General Equipment) into `o`.
    pub(crate) fn put_into(&self, o: &mut Obj) {
        put_str(o, tags::MANUFACTURER, VR::LO, &self.manufacturer);
        put_str(o, tags::MANUFACTURER_MODEL_NAME, VR::LO, &self.model_name);
        put_str(
            o,
            tags::DEVICE_SERIAL_NUMBER,
            VR::LO,
            &self.device_serial_number,
        );
        put_str(o, tags::SOFTWARE_VERSIONS, VR::LO, &self.software_versions);
    }
}

/// `o` as a Part-10 object: explicit VR little endian, this crate's implementation class and name.
pub(crate) fn with_part10_meta(o: Obj) -> Result<FileDicomObject<Obj>> {
    o.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .implementation_class_uid(implementation_class_uid())
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
    )
    .map_err(|e| SegError::write("file meta group", e))
}

/// Content Identification macro: a label (CS: upper case, digits, space, underscore; 16 characters),
/// a description and the creator's name.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentIdentification {
    label: String,
    description: Option<String>,
    creator: Option<String>,
}

impl ContentIdentification {
    /// Validates the label as a CS value.
    pub fn new(
        label: impl Into<String>,
        description: Option<String>,
        creator: Option<String>,
    ) -> Result<Self> {
        let label = label.into();
        if label.is_empty()
            || label.len() > 16
            || !label
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
        {
            return Err(SegError::InvalidValue {
                attribute: "ContentLabel",
                value: label,
                reason: "must be 1-16 characters of A-Z, 0-9, space, underscore",
            });
        }
        if let Some(d) = &description {
            check_len("ContentDescription", d, 64, true)?;
        }
        if let Some(c) = &creator {
            check_len("ContentCreatorName", c, 64, true)?;
        }
        Ok(ContentIdentification {
            label,
            description,
            creator,
        })
    }
}

/// What the fractional values mean (Segmentation Fractional Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FractionalType {
    /// PROBABILITY.
    Probability,
    /// OCCUPANCY.
    Occupancy,
}

impl FractionalType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FractionalType::Probability => "PROBABILITY",
            FractionalType::Occupancy => "OCCUPANCY",
        }
    }
}

/// The masks, on the source grid: every array has shape [`SourceSeries::shape`], axis 0 indexed like
/// [`SourceSeries::frames`].
#[derive(Debug, Clone)]
pub enum Masks<'a> {
    /// A label volume: value `k` (> 0) marks segment `k`, 0 is background. Encoded as BINARY.
    Labels(ArrayView3<'a, u16>),
    /// One boolean mask per segment (they may overlap). Encoded as BINARY.
    Binary(Vec<(SegmentNumber, ArrayView3<'a, bool>)>),
    /// One mask of values in 0..=1 per segment. Encoded as FRACTIONAL, 8 bits, Maximum Fractional
    /// Value 255 (value = round(p x 255)).
    Fractional {
        /// PROBABILITY or OCCUPANCY.
        kind: FractionalType,
        /// The masks.
        masks: Vec<(SegmentNumber, ArrayView3<'a, f32>)>,
    },
}

/// Builds a DICOM Segmentation (BINARY or FRACTIONAL) over a [`SourceSeries`].
#[derive(Debug, Clone)]
pub struct SegmentationBuilder<'a> {
    source: &'a SourceSeries,
    equipment: Equipment,
    content: ContentIdentification,
    segments: Vec<SegmentDescription>,
    series_number: i32,
    series_description: Option<String>,
    instance_number: i32,
    sop_instance_uid: Option<Uid>,
    series_instance_uid: Option<Uid>,
    uids: UidGenerator,
    omit_empty_frames: bool,
    content_date_time: Option<(String, String)>,
}

/// Maximum Fractional Value used for FRACTIONAL segmentations.
pub const MAX_FRACTIONAL_VALUE: u8 = 255;

impl<'a> SegmentationBuilder<'a> {
    /// A builder with defaults: series number 1 (overridable), instance number 1, empty frames omitted,
    /// UIDs in the 2.25 form.
    pub fn new(
        source: &'a SourceSeries,
        equipment: Equipment,
        content: ContentIdentification,
    ) -> Self {
        SegmentationBuilder {
            source,
            equipment,
            content,
            segments: Vec::new(),
            series_number: 1,
            series_description: None,
            instance_number: 1,
            sop_instance_uid: None,
            series_instance_uid: None,
            uids: UidGenerator::Uuid,
            omit_empty_frames: true,
            content_date_time: None,
        }
    }

    /// Describes one more segment.
    pub fn segment(mut self, s: SegmentDescription) -> Self {
        self.segments.push(s);
        self
    }
    /// Series Number and (optional) Series Description.
    pub fn series(mut self, number: i32, description: Option<String>) -> Self {
        self.series_number = number;
        self.series_description = description;
        self
    }
    /// Instance Number.
    pub fn instance_number(mut self, n: i32) -> Self {
        self.instance_number = n;
        self
    }
    /// The SOP Instance UID to use (e.g. derived from a job id). Unless a series UID is also given, the
    /// Series Instance UID and Dimension Organization UID are then derived from it, so the same input
    /// yields the same UIDs.
    pub fn sop_instance_uid(mut self, uid: Uid) -> Self {
        self.sop_instance_uid = Some(uid);
        self
    }
    /// The Series Instance UID to use.
    pub fn series_instance_uid(mut self, uid: Uid) -> Self {
        self.series_instance_uid = Some(uid);
        self
    }
    /// How fresh UIDs are made.
    pub fn uid_generator(mut self, g: UidGenerator) -> Self {
        self.uids = g;
        self
    }
    /// Whether frames with no pixel of their segment are left out (default true). When every frame is
    /// empty, all frames are kept (a SEG needs at least one frame).
    pub fn omit_empty_frames(mut self, omit: bool) -> Self {
        self.omit_empty_frames = omit;
        self
    }
    /// Content Date (DA, YYYYMMDD) and Time (TM); default: now, UTC.
    pub fn content_date_time(mut self, date: impl Into<String>, time: impl Into<String>) -> Self {
        self.content_date_time = Some((date.into(), time.into()));
        self
    }

    /// Checks everything and encodes the SEG.
    pub fn build(self, masks: Masks<'_>) -> Result<Segmentation> {
        let source = self.source;
        let segs = self.checked_segments()?;
        let nseg = segs.len();
        let shape = source.shape();
        let [nframes, rows, cols] = shape;
        let check_shape = |what: String, got: &[usize]| {
            if got != shape {
                Err(SegError::MaskShape {
                    what,
                    got: got.to_vec(),
                    expected: shape,
                })
            } else {
                Ok(())
            }
        };

        // present[i][s-1]: segment s has a pixel in source frame i.
        let mut present = vec![vec![false; nseg]; nframes];
        let overlap: &str;
        let fractional;
        match &masks {
            Masks::Labels(l) => {
                check_shape("the label volume".into(), l.shape())?;
                for (i, plane) in l.axis_iter(Axis(0)).enumerate() {
                    scan_labels(plane, nseg, &mut present[i])?;
                }
                overlap = "NO";
                fractional = None;
            }
            Masks::Binary(list) => {
                let mut seen = vec![false; nseg];
                for (n, m) in list {
                    check_shape(format!("segment {}", n.get()), m.shape())?;
                    let k = n.get() as usize;
                    if k > nseg {
                        return Err(SegError::UnknownSegment(k as u32));
                    }
                    if std::mem::replace(&mut seen[k - 1], true) {
                        return Err(SegError::DuplicateSegment(n.get()));
                    }
                    for (i, plane) in m.axis_iter(Axis(0)).enumerate() {
                        present[i][k - 1] = plane.iter().any(|&v| v);
                    }
                }
                overlap = if list.len() < 2 {
                    "NO"
                } else if binary_overlap(list) {
                    "YES"
                } else {
                    "NO"
                };
                fractional = None;
            }
            Masks::Fractional { kind, masks: list } => {
                let mut seen = vec![false; nseg];
                for (n, m) in list {
                    check_shape(format!("segment {}", n.get()), m.shape())?;
                    let k = n.get() as usize;
                    if k > nseg {
                        return Err(SegError::UnknownSegment(k as u32));
                    }
                    if std::mem::replace(&mut seen[k - 1], true) {
                        return Err(SegError::DuplicateSegment(n.get()));
                    }
                    for ((i, r, c), &v) in m.indexed_iter() {
                        if !(0.0..=1.0).contains(&v) {
                            return Err(SegError::FractionalOutOfRange {
                                segment: n.get(),
                                index: [i, r, c],
                                value: v,
                            });
                        }
                    }
                    for (i, plane) in m.axis_iter(Axis(0)).enumerate() {
                        present[i][k - 1] = plane.iter().any(|&v| to_fraction(v) > 0);
                    }
                }
                overlap = "UNDEFINED";
                fractional = Some(*kind);
            }
        }

        // Frames: segment-major, then along the normal.
        let mut frames: Vec<(usize, usize)> = Vec::new(); // (segment index, source frame index)
        let any = present.iter().any(|p| p.iter().any(|&b| b));
        let omit = self.omit_empty_frames && any;
        for s in 0..nseg {
            for &i in source.order_along_normal() {
                if !omit || present[i].get(s).copied().unwrap_or(false) {
                    frames.push((s, i));
                }
            }
        }
        if frames.len() > i32::MAX as usize {
            return Err(SegError::TooLarge(frames.len()));
        }

        // Pixel data.
        let ppf = rows * cols;
        let pixel_data = match &masks {
            Masks::Labels(l) => {
                let mut w = BitWriter::with_capacity_bits(ppf * frames.len());
                for &(s, i) in &frames {
                    let value = (s + 1) as u16;
                    let plane = l.index_axis(Axis(0), i);
                    match plane.as_slice() {
                        Some(sl) => w.push_slice(sl, |v| v == value),
                        None => {
                            for &v in plane.iter() {
                                w.push(v == value)
                            }
                        }
                    }
                }
                w.finish()
            }
            Masks::Binary(list) => {
                let mut w = BitWriter::with_capacity_bits(ppf * frames.len());
                for &(s, i) in &frames {
                    match list.iter().find(|(n, _)| n.get() as usize == s + 1) {
                        Some((_, m)) => {
                            let plane = m.index_axis(Axis(0), i);
                            match plane.as_slice() {
                                Some(sl) => w.push_slice(sl, |v| v),
                                None => {
                                    for &v in plane.iter() {
                                        w.push(v)
                                    }
                                }
                            }
                        }
                        None => {
                            for _ in 0..ppf {
                                w.push(false)
                            }
                        }
                    }
                }
                w.finish()
            }
            Masks::Fractional { masks: list, .. } => {
                let mut out = Vec::with_capacity(ppf * frames.len() + 1);
                for &(s, i) in &frames {
                    match list.iter().find(|(n, _)| n.get() as usize == s + 1) {
                        Some((_, m)) => {
                            out.extend(m.index_axis(Axis(0), i).iter().map(|&v| to_fraction(v)))
                        }
                        None => out.resize(out.len() + ppf, 0),
                    }
                }
                if out.len() % 2 == 1 {
                    out.push(0);
                }
                out
            }
        };

        self.assemble(&segs, &frames, pixel_data, overlap, fractional)
    }

    fn checked_segments(&self) -> Result<Vec<SegmentDescription>> {
        if self.segments.is_empty() {
            return Err(SegError::NoSegments);
        }
        let mut segs = self.segments.clone();
        segs.sort_by_key(|s| s.number);
        for w in segs.windows(2) {
            if w[0].number == w[1].number {
                return Err(SegError::DuplicateSegment(w[0].number.get()));
            }
        }
        if segs
            .iter()
            .enumerate()
            .any(|(k, s)| s.number.get() as usize != k + 1)
        {
            return Err(SegError::NonContiguousSegments(
                segs.iter().map(|s| s.number.get()).collect(),
            ));
        }
        for s in &segs {
            s.validate()?;
        }
        let e = &self.equipment;
        check_len("Manufacturer", &e.manufacturer, 64, true)?;
        check_len("ManufacturerModelName", &e.model_name, 64, true)?;
        check_len("DeviceSerialNumber", &e.device_serial_number, 64, true)?;
        check_len("SoftwareVersions", &e.software_versions, 64, true)?;
        if let Some(d) = &self.series_description {
            check_len("SeriesDescription", d, 64, true)?;
        }
        if let Some((d, t)) = &self.content_date_time {
            if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SegError::InvalidValue {
                    attribute: "ContentDate",
                    value: d.clone(),
                    reason: "must be YYYYMMDD",
                });
            }
            if t.is_empty() || t.len() > 14 || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(SegError::InvalidValue {
                    attribute: "ContentTime",
                    value: t.clone(),
                    reason: "must be HHMMSS[.FFFFFF]",
                });
            }
        }
        Ok(segs)
    }

    fn assemble(
        &self,
        segs: &[SegmentDescription],
        frames: &[(usize, usize)],
        pixel_data: Vec<u8>,
        overlap: &str,
        fractional: Option<FractionalType>,
    ) -> Result<Segmentation> {
        let source = self.source;
        let sop_uid = match &self.sop_instance_uid {
            Some(u) => u.clone(),
            None => self.uids.generate(),
        };
        let (series_uid, dim_uid) = match (&self.series_instance_uid, &self.sop_instance_uid) {
            (Some(s), _) => (
                s.clone(),
                self.uids
                    .derive(&format!("{sop_uid}/dimension-organization")),
            ),
            (None, Some(_)) => (
                self.uids.derive(&format!("{sop_uid}/series")),
                self.uids
                    .derive(&format!("{sop_uid}/dimension-organization")),
            ),
            (None, None) => (self.uids.generate(), self.uids.generate()),
        };
        let (date, time) = match &self.content_date_time {
            Some(dt) => dt.clone(),
            None => now_utc(),
        };

        let mut o = Obj::new_empty();
        // SOP Common
        put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put_str(
            &mut o,
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::SEGMENTATION_STORAGE,
        );
        put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str());
        put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
        put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &time);

        // Patient, General Study, Patient Study, Clinical Trial Subject/Study (copied).
        crate::source::put_patient_and_study(
            &mut o,
            source.header().elements(),
            source.header().study_instance_uid(),
        );

        // General Series + Segmentation Series
        put_str(&mut o, tags::MODALITY, VR::CS, "SEG");
        put_str(
            &mut o,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            series_uid.as_str(),
        );
        put_str(
            &mut o,
            tags::SERIES_NUMBER,
            VR::IS,
            &self.series_number.to_string(),
        );
        if let Some(d) = &self.series_description {
            put_str(&mut o, tags::SERIES_DESCRIPTION, VR::LO, d);
        }

        // Frame of Reference
        put_str(
            &mut o,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            source.frame_of_reference_uid().as_str(),
        );
        put_empty(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO);

        // General Equipment + Enhanced General Equipment
        self.equipment.put_into(&mut o);

        // General Image / Segmentation Image
        put_strs(
            &mut o,
            tags::IMAGE_TYPE,
            VR::CS,
            vec!["DERIVED".into(), "PRIMARY".into()],
        );
        put_str(
            &mut o,
            tags::INSTANCE_NUMBER,
            VR::IS,
            &self.instance_number.to_string(),
        );
        put_str(&mut o, tags::CONTENT_DATE, VR::DA, &date);
        put_str(&mut o, tags::CONTENT_TIME, VR::TM, &time);
        put_str(&mut o, tags::CONTENT_LABEL, VR::CS, &self.content.label);
        put_opt_str(
            &mut o,
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            self.content.description.as_deref(),
        );
        put_opt_str(
            &mut o,
            tags::CONTENT_CREATOR_NAME,
            VR::PN,
            self.content.creator.as_deref(),
        );
        put_str(
            &mut o,
            tags::SEGMENTATION_TYPE,
            VR::CS,
            if fractional.is_some() {
                "FRACTIONAL"
            } else {
                "BINARY"
            },
        );
        if let Some(kind) = fractional {
            put_str(
                &mut o,
                tags::SEGMENTATION_FRACTIONAL_TYPE,
                VR::CS,
                kind.as_str(),
            );
            put_u16(
                &mut o,
                tags::MAXIMUM_FRACTIONAL_VALUE,
                MAX_FRACTIONAL_VALUE as u16,
            );
        }
        put_str(&mut o, tags::SEGMENTS_OVERLAP, VR::CS, overlap);
        let seg_items = segs.iter().map(|s| segment_item(s, &self.uids)).collect();
        put_seq(&mut o, tags::SEGMENT_SEQUENCE, seg_items);

        // Image Pixel
        let bits: u16 = if fractional.is_some() { 8 } else { 1 };
        put_u16(&mut o, tags::SAMPLES_PER_PIXEL, 1);
        put_str(
            &mut o,
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2",
        );
        put_u16(&mut o, tags::ROWS, source.rows());
        put_u16(&mut o, tags::COLUMNS, source.columns());
        put_u16(&mut o, tags::BITS_ALLOCATED, bits);
        put_u16(&mut o, tags::BITS_STORED, bits);
        put_u16(&mut o, tags::HIGH_BIT, bits - 1);
        put_u16(&mut o, tags::PIXEL_REPRESENTATION, 0);
        put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");

        // Multi-frame Dimension
        let mut org = Obj::new_empty();
        put_str(
            &mut org,
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            dim_uid.as_str(),
        );
        put_seq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
        let dim = |pointer, group, label: &str| {
            let mut d = Obj::new_empty();
            put_str(
                &mut d,
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                dim_uid.as_str(),
            );
            ds::put_tag(&mut d, tags::DIMENSION_INDEX_POINTER, pointer);
            ds::put_tag(&mut d, tags::FUNCTIONAL_GROUP_POINTER, group);
            put_str(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
            d
        };
        put_seq(
            &mut o,
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                dim(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Referenced Segment Number",
                ),
                dim(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Image Position Patient",
                ),
            ],
        );

        // Common Instance Reference: every source instance once, in the source series.
        let mut refs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for f in source.frames() {
            if seen.insert(f.sop_instance_uid.as_str()) {
                let mut r = Obj::new_empty();
                put_str(
                    &mut r,
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    f.sop_class_uid.as_str(),
                );
                put_str(
                    &mut r,
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    f.sop_instance_uid.as_str(),
                );
                refs.push(r);
            }
        }
        let mut series_ref = Obj::new_empty();
        put_str(
            &mut series_ref,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            source.series_instance_uid().as_str(),
        );
        put_seq(&mut series_ref, tags::REFERENCED_INSTANCE_SEQUENCE, refs);
        put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, vec![series_ref]);

        // Shared functional groups: Pixel Measures, Plane Orientation.
        let mut pm = Obj::new_empty();
        put_ds(&mut pm, tags::PIXEL_SPACING, &source.pixel_spacing());
        let spacing = source.regular_spacing();
        if let Some(t) = source.slice_thickness().or(spacing) {
            put_ds(&mut pm, tags::SLICE_THICKNESS, &[t]);
        }
        if let Some(s) = spacing {
            put_ds(&mut pm, tags::SPACING_BETWEEN_SLICES, &[s]);
        }
        let mut po = Obj::new_empty();
        put_ds(
            &mut po,
            tags::IMAGE_ORIENTATION_PATIENT,
            &source.orientation(),
        );
        let mut shared = Obj::new_empty();
        put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![pm]);
        put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![po]);
        put_seq(
            &mut o,
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            vec![shared],
        );

        // Per-frame functional groups.
        let derivation_code = code_item(&CodedConcept::dcm("113076", "Segmentation"));
        let purpose_code = code_item(&CodedConcept::dcm(
            "121322",
            "Source image for image processing operation",
        ));
        let positions: Vec<Vec<String>> = source
            .frames()
            .iter()
            .map(|f| f.position.iter().map(|x| ds::format_ds(*x)).collect())
            .collect();
        let mut per_frame = Vec::with_capacity(frames.len());
        for &(s, i) in frames {
            let f = &source.frames()[i];
            let mut item = Obj::new_empty();

            let mut src = Obj::new_empty();
            put_str(
                &mut src,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                f.sop_class_uid.as_str(),
            );
            put_str(
                &mut src,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                f.sop_instance_uid.as_str(),
            );
            if let Some(n) = f.frame_number {
                put_str(
                    &mut src,
                    tags::REFERENCED_FRAME_NUMBER,
                    VR::IS,
                    &n.to_string(),
                );
            }
            put_str(&mut src, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
            put_seq(
                &mut src,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![purpose_code.clone()],
            );
            let mut der = Obj::new_empty();
            put_seq(&mut der, tags::SOURCE_IMAGE_SEQUENCE, vec![src]);
            put_seq(
                &mut der,
                tags::DERIVATION_CODE_SEQUENCE,
                vec![derivation_code.clone()],
            );
            put_seq(&mut item, tags::DERIVATION_IMAGE_SEQUENCE, vec![der]);

            let mut fc = Obj::new_empty();
            ds::put_u32s(
                &mut fc,
                tags::DIMENSION_INDEX_VALUES,
                &[(s + 1) as u32, (source.rank_of(i) + 1) as u32],
            );
            put_seq(&mut item, tags::FRAME_CONTENT_SEQUENCE, vec![fc]);

            let mut pp = Obj::new_empty();
            put_strs(
                &mut pp,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                positions[i].clone(),
            );
            put_seq(&mut item, tags::PLANE_POSITION_SEQUENCE, vec![pp]);

            let mut sid = Obj::new_empty();
            put_u16(&mut sid, tags::REFERENCED_SEGMENT_NUMBER, (s + 1) as u16);
            put_seq(&mut item, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![sid]);
            per_frame.push(item);
        }
        put_str(
            &mut o,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &frames.len().to_string(),
        );
        put_seq(
            &mut o,
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            per_frame,
        );

        let header = with_part10_meta(o)?;
        Ok(Segmentation {
            header,
            pixel_data,
            sop_instance_uid: sop_uid,
            series_instance_uid: series_uid,
            number_of_frames: frames.len(),
        })
    }
}

/// Implementation Version Name written in the file meta group.
pub const IMPLEMENTATION_VERSION_NAME: &str = "SEGNODE_SEG_01";

/// Implementation Class UID written in the file meta group (derived once from the crate name).
pub fn implementation_class_uid() -> String {
    Uid::derived_from("segnode dicom-seg implementation class").to_string()
}

fn to_fraction(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * MAX_FRACTIONAL_VALUE as f32).round() as u8
}

/// Records which labels occur in one plane; errors on labels beyond the described segments.
fn scan_labels(plane: ArrayView2<'_, u16>, nseg: usize, present: &mut [bool]) -> Result<()> {
    fn mark(present: &mut [bool], v: u16) -> Result<()> {
        if v != 0 {
            match present.get_mut(v as usize - 1) {
                Some(p) => *p = true,
                None => return Err(SegError::UnknownSegment(v as u32)),
            }
        }
        Ok(())
    }
    match plane.as_slice() {
        Some(sl) => {
            // Fast path: most planes are background only; OR-reduce (vectorised) before looking closer.
            for chunk in sl.chunks(4096) {
                if chunk.iter().fold(0u16, |a, &v| a | v) == 0 {
                    continue;
                }
                let mx = chunk.iter().copied().max().unwrap_or(0);
                if mx as usize > nseg {
                    return Err(SegError::UnknownSegment(mx as u32));
                }
                // One vectorised equality pass per segment beats a branchy pass per voxel.
                for (k, p) in present.iter_mut().enumerate() {
                    if !*p {
                        let s = (k + 1) as u16;
                        *p = chunk.iter().fold(false, |a, &v| a | (v == s));
                    }
                }
            }
        }
        None => {
            for &v in plane.iter() {
                mark(present, v)?;
            }
        }
    }
    Ok(())
}

fn binary_overlap(list: &[(SegmentNumber, ArrayView3<'_, bool>)]) -> bool {
    let shape = list[0].1.raw_dim();
    let mut count = ndarray::Array3::<u8>::zeros(shape);
    for (_, m) in list {
        ndarray::Zip::from(&mut count)
            .and(m)
            .for_each(|c, &v| *c += u8::from(v));
    }
    count.iter().any(|&c| c > 1)
}

fn segment_item(s: &SegmentDescription, uids: &UidGenerator) -> Obj {
    let mut it = Obj::new_empty();
    put_u16(&mut it, tags::SEGMENT_NUMBER, s.number.get());
    put_str(&mut it, tags::SEGMENT_LABEL, VR::LO, &s.label);
    if let Some(d) = &s.description {
        put_str(&mut it, tags::SEGMENT_DESCRIPTION, VR::ST, d);
    }
    put_str(
        &mut it,
        tags::SEGMENT_ALGORITHM_TYPE,
        VR::CS,
        s.algorithm.type_str(),
    );
    if let Some(a) = s.algorithm.identification() {
        put_str(&mut it, tags::SEGMENT_ALGORITHM_NAME, VR::LO, &a.name);
        let mut ai = Obj::new_empty();
        put_seq(
            &mut ai,
            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
            vec![code_item(&a.family)],
        );
        put_str(&mut ai, tags::ALGORITHM_NAME, VR::LO, &a.name);
        put_str(&mut ai, tags::ALGORITHM_VERSION, VR::LO, &a.version);
        if let Some(p) = &a.parameters {
            put_str(&mut ai, tags::ALGORITHM_PARAMETERS, VR::LT, p);
        }
        if let Some(src) = &a.source {
            put_str(&mut ai, tags::ALGORITHM_SOURCE, VR::LO, src);
        }
        put_seq(
            &mut it,
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![ai],
        );
    }
    put_seq(
        &mut it,
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![code_item(&s.category)],
    );
    put_seq(
        &mut it,
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![code_item(&s.property_type)],
    );
    if let Some(c) = s.display_color {
        ds::put_u16s(&mut it, tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, &c.0);
    }
    if let Some(t) = &s.tracking_id {
        put_str(&mut it, tags::TRACKING_ID, VR::LO, t);
        put_str(
            &mut it,
            tags::TRACKING_UID,
            VR::UI,
            uids.derive(&format!("tracking/{t}")).as_str(),
        );
    }
    it
}

/// Current UTC date (YYYYMMDD) and time (HHMMSS.FFFFFF).
pub(crate) fn now_utc() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!(
            "{:02}{:02}{:02}.{:06}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60,
            now.subsec_micros()
        ),
    )
}

/// A built Segmentation instance: a Part-10 file (meta group + data set, explicit VR little endian).
///
/// The Pixel Data is kept apart from the other attributes so that writing streams it in one piece
/// (it is the last element of the data set); [`Segmentation::to_file`] / [`Segmentation::into_file`]
/// give the complete object.
#[derive(Debug, Clone)]
pub struct Segmentation {
    header: FileDicomObject<Obj>,
    pixel_data: Vec<u8>,
    sop_instance_uid: Uid,
    series_instance_uid: Uid,
    number_of_frames: usize,
}

impl Segmentation {
    /// Every attribute of the data set except Pixel Data.
    pub fn dataset(&self) -> &Obj {
        &self.header
    }
    /// The Pixel Data value (bit-packed for BINARY, one byte per pixel for FRACTIONAL; even length).
    pub fn pixel_data(&self) -> &[u8] {
        &self.pixel_data
    }
    /// The complete file object (a copy), Pixel Data included.
    pub fn to_file(&self) -> FileDicomObject<Obj> {
        self.clone().into_file()
    }
    /// The complete file object, Pixel Data included.
    pub fn into_file(self) -> FileDicomObject<Obj> {
        let mut f = self.header;
        f.put(dicom_core::DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            dicom_core::PrimitiveValue::U8(self.pixel_data.into()),
        ));
        f
    }
    /// SOP Instance UID.
    pub fn sop_instance_uid(&self) -> &Uid {
        &self.sop_instance_uid
    }
    /// Series Instance UID.
    pub fn series_instance_uid(&self) -> &Uid {
        &self.series_instance_uid
    }
    /// Number of frames encoded.
    pub fn number_of_frames(&self) -> usize {
        self.number_of_frames
    }
    /// Writes the Part-10 file (preamble, DICM, meta group, data set) to `to`.
    pub fn write_to(&self, mut to: impl Write) -> Result<()> {
        let werr = |e: std::io::Error| SegError::write("output", e);
        let mut buf = Vec::with_capacity(64 * 1024 + self.number_of_frames * 512);
        buf.extend_from_slice(&[0u8; 128]);
        buf.extend_from_slice(b"DICM");
        self.header
            .meta()
            .write(&mut buf)
            .map_err(|e| SegError::write("file meta group", e))?;
        let start = buf.len();
        if crate::encode::encode_dataset(&self.header, &mut buf).is_some() {
            to.write_all(&buf).map_err(werr)?;
        } else {
            // Something the direct encoder does not handle (e.g. a copied attribute with an unusual
            // value type): let dicom-object write it.
            buf.truncate(start);
            self.header
                .write_all(&mut to)
                .map_err(|e| SegError::write("data set", e))?;
        }
        // Pixel Data (7FE0,0010), explicit VR little endian: tag, "OB", 2 reserved bytes, 4-byte length.
        let len = u32::try_from(self.pixel_data.len())
            .map_err(|_| SegError::PixelDataTooLong(self.pixel_data.len()))?;
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&[0xE0, 0x7F, 0x10, 0x00]);
        head[4..6].copy_from_slice(b"OB");
        head[8..].copy_from_slice(&len.to_le_bytes());
        to.write_all(&head).map_err(werr)?;
        to.write_all(&self.pixel_data).map_err(werr)?;
        to.flush().map_err(werr)
    }
    /// The Part-10 file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v =
            Vec::with_capacity(self.pixel_data.len() + 64 * 1024 + self.number_of_frames * 512);
        self.write_to(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SeriesGeometry, SourceFrame, StudyHeader};

    #[test]
    fn geometry_summary_source_and_direct_encoder() {
        let uid = |s: &str| Uid::derived_from(s);
        let mut header = StudyHeader::new(uid("study"));
        header.set(tags::PATIENT_ID, VR::LO, "P1");
        header.set(tags::PATIENT_WEIGHT, VR::DS, "70.5");
        let frames = (0..4)
            .map(|k| SourceFrame {
                sop_class_uid: Uid::new(uids::MR_IMAGE_STORAGE).unwrap(),
                sop_instance_uid: uid(&format!("img{k}")),
                frame_number: None,
                position: [0.0, 0.0, 3.0 - k as f64],
            })
            .collect();
        let source = SourceSeries::new(
            header,
            SeriesGeometry {
                series_instance_uid: uid("series"),
                frame_of_reference_uid: uid("for"),
                orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                pixel_spacing: [0.5, 0.5],
                slice_thickness: None,
                rows: 5,
                columns: 3,
            },
            frames,
        )
        .unwrap();
        // Given in descending z: the SEG sorts them ascending.
        assert_eq!(source.order_along_normal(), &[3, 2, 1, 0]);
        assert_eq!(source.regular_spacing(), Some(1.0));
        let mut labels = ndarray::Array3::<u16>::zeros(source.shape());
        labels[[0, 1, 1]] = 1;
        labels[[3, 4, 2]] = 1;
        let seg = SegmentationBuilder::new(
            &source,
            Equipment {
                manufacturer: "m".into(),
                model_name: "n".into(),
                device_serial_number: "1".into(),
                software_versions: "2".into(),
            },
            ContentIdentification::new("L", None, None).unwrap(),
        )
        .segment(SegmentDescription::automatic(
            SegmentNumber::new(1).unwrap(),
            "x",
            crate::codes::tissue(),
            crate::codes::neoplasm(),
            AlgorithmIdentification {
                family: crate::codes::artificial_intelligence(),
                name: "a".into(),
                version: "1".into(),
                parameters: None,
                source: None,
            },
        ))
        .content_date_time("20260101", "120000")
        .build(Masks::Labels(labels.view()))
        .unwrap();
        assert_eq!(seg.number_of_frames(), 2);
        // The direct encoder handles everything we build (no fallback).
        let mut out = Vec::new();
        assert!(crate::encode::encode_dataset(seg.dataset(), &mut out).is_some());
        // Frame 1 is the lowest z (source index 3, rank 1).
        let back = crate::ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
        assert_eq!(back.frames[0].position, Some([0.0, 0.0, 0.0]));
        assert_eq!(back.frames[0].pixels[[4, 2]], 1);
        assert_eq!(back.frames[1].position, Some([0.0, 0.0, 3.0]));
    }

    #[test]
    fn now_is_well_formed() {
        let (d, t) = now_utc();
        assert_eq!(d.len(), 8);
        assert!(d.as_str() >= "20240101");
        assert_eq!(t.len(), 13);
    }
}
