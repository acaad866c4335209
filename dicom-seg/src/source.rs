//! The source grid a segmentation is drawn on: which images (or frames), where they are, how they are
//! oriented and sampled, and the patient/study attributes to copy.

use crate::ds::{self, Obj};
use crate::error::{Result, SegError};
use crate::uid::Uid;
use dicom_core::Tag;
use dicom_dictionary_std::tags;

/// One source frame: a single-frame image, or one frame of a multi-frame (enhanced) image.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFrame {
    /// SOP Class UID of the source instance.
    pub sop_class_uid: Uid,
    /// SOP Instance UID of the source instance.
    pub sop_instance_uid: Uid,
    /// 1-based frame number within a multi-frame source; `None` for a single-frame image.
    pub frame_number: Option<u32>,
    /// Image Position (Patient) of the frame's first pixel, in mm.
    pub position: [f64; 3],
}

/// Patient, study and clinical-trial attributes copied verbatim into the SEG.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyHeader {
    study_instance_uid: Uid,
    elements: Obj,
}

/// Attributes of the Patient, General Study, Patient Study, Clinical Trial Subject and Clinical Trial
/// Study modules (and the trial's Coordinating Center Name) that are copied from the source when present.
const COPIED: &[Tag] = &[
    // Patient
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::PATIENT_COMMENTS,
    tags::PATIENT_IDENTITY_REMOVED,
    tags::DEIDENTIFICATION_METHOD,
    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
    tags::PATIENT_SPECIES_DESCRIPTION,
    tags::PATIENT_BREED_DESCRIPTION,
    tags::RESPONSIBLE_PERSON,
    tags::RESPONSIBLE_ORGANIZATION,
    // Clinical Trial Subject
    tags::CLINICAL_TRIAL_SPONSOR_NAME,
    tags::CLINICAL_TRIAL_PROTOCOL_ID,
    tags::CLINICAL_TRIAL_PROTOCOL_NAME,
    tags::CLINICAL_TRIAL_SITE_ID,
    tags::CLINICAL_TRIAL_SITE_NAME,
    tags::CLINICAL_TRIAL_SUBJECT_ID,
    tags::CLINICAL_TRIAL_SUBJECT_READING_ID,
    tags::CLINICAL_TRIAL_PROTOCOL_ETHICS_COMMITTEE_NAME,
    tags::CLINICAL_TRIAL_PROTOCOL_ETHICS_COMMITTEE_APPROVAL_NUMBER,
    // General Study
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::ISSUER_OF_ACCESSION_NUMBER_SEQUENCE,
    tags::STUDY_DESCRIPTION,
    tags::PROCEDURE_CODE_SEQUENCE,
    // Patient Study
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    // Clinical Trial Study
    tags::CLINICAL_TRIAL_TIME_POINT_ID,
    tags::CLINICAL_TRIAL_TIME_POINT_DESCRIPTION,
    tags::CLINICAL_TRIAL_TIME_POINT_TYPE_CODE_SEQUENCE,
    tags::LONGITUDINAL_TEMPORAL_OFFSET_FROM_EVENT,
    tags::LONGITUDINAL_TEMPORAL_EVENT_TYPE,
    tags::CONSENT_FOR_CLINICAL_TRIAL_USE_SEQUENCE,
    // Clinical Trial Series: the coordinating center names the trial, not the series.
    tags::CLINICAL_TRIAL_COORDINATING_CENTER_NAME,
];

/// Puts the Patient, General Study, Patient Study and Clinical Trial attributes of `from` (those of
/// [`COPIED`] it has) into `o`, the Study Instance UID, and an empty value for each type 2 attribute
/// still missing. Shared by the SEG and the SR builders.
pub(crate) fn put_patient_and_study(o: &mut Obj, from: &Obj, study: &Uid) {
    use dicom_core::VR;
    for &t in COPIED {
        if let Some(e) = from.get(t) {
            o.put(e.clone());
        }
    }
    ds::put_str(o, tags::STUDY_INSTANCE_UID, VR::UI, study.as_str());
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
    ] {
        if o.get(tag).is_none() {
            ds::put_empty(o, tag, vr);
        }
    }
}

impl StudyHeader {
    /// A header with only the Study Instance UID; add attributes with [`StudyHeader::set`].
    pub fn new(study_instance_uid: Uid) -> Self {
        StudyHeader {
            study_instance_uid,
            elements: Obj::new_empty(),
        }
    }

    /// Copies the patient, study and clinical-trial attributes present in `dataset`.
    pub fn from_dataset(dataset: &Obj) -> Result<Self> {
        let sop = ds::get_str(dataset, tags::SOP_INSTANCE_UID).unwrap_or_else(|| "?".into());
        let study =
            ds::get_str(dataset, tags::STUDY_INSTANCE_UID).ok_or(SegError::SourceAttribute {
                sop_instance_uid: sop,
                attribute: "StudyInstanceUID",
                problem: "is missing",
            })?;
        let mut elements = Obj::new_empty();
        for &t in COPIED {
            if let Some(e) = dataset.get(t) {
                elements.put(e.clone());
            }
        }
        Ok(StudyHeader {
            study_instance_uid: Uid::new(&study)?,
            elements,
        })
    }

    /// Sets (or replaces) one attribute, e.g. `set(tags::PATIENT_NAME, VR::PN, "Doe^J")`.
    pub fn set(&mut self, tag: Tag, vr: dicom_core::VR, value: &str) -> &mut Self {
        ds::put_str(&mut self.elements, tag, vr, value);
        self
    }

    /// The Study Instance UID.
    pub fn study_instance_uid(&self) -> &Uid {
        &self.study_instance_uid
    }

    pub(crate) fn elements(&self) -> &Obj {
        &self.elements
    }
}

/// The grid of source frames a segmentation is drawn on.
///
/// Frames keep the order in which they were given: axis 0 of every mask passed to the builder is indexed
/// like [`SourceSeries::frames`]. The SEG itself orders its frames by position along the slice normal
/// ([`SourceSeries::order_along_normal`]), whatever the input order.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSeries {
    header: StudyHeader,
    series_instance_uid: Uid,
    frame_of_reference_uid: Uid,
    orientation: [f64; 6],
    pixel_spacing: [f64; 2],
    slice_thickness: Option<f64>,
    rows: u16,
    columns: u16,
    frames: Vec<SourceFrame>,
    normal: [f64; 3],
    order: Vec<usize>,
    rank: Vec<usize>,
}

/// Light geometry summary, for callers that do not hold the source data sets.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesGeometry {
    /// Series Instance UID of the source series.
    pub series_instance_uid: Uid,
    /// Frame of Reference UID shared by every frame.
    pub frame_of_reference_uid: Uid,
    /// Image Orientation (Patient): row direction cosines then column direction cosines.
    pub orientation: [f64; 6],
    /// Pixel Spacing: (row spacing, column spacing) in mm, i.e. between rows, then between columns.
    pub pixel_spacing: [f64; 2],
    /// Slice Thickness in mm, when known.
    pub slice_thickness: Option<f64>,
    /// Rows of every frame.
    pub rows: u16,
    /// Columns of every frame.
    pub columns: u16,
}

const ORIENTATION_TOL: f64 = 1e-4;
const POSITION_TOL: f64 = 1e-3;

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn normal_of(o: &[f64; 6]) -> Result<[f64; 3]> {
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    let unit = |v: [f64; 3]| (dot(v, v).sqrt() - 1.0).abs() < 1e-3;
    if !unit(r) || !unit(c) || dot(r, c).abs() > 1e-3 {
        return Err(SegError::InvalidOrientation(*o));
    }
    Ok(cross(r, c))
}

impl SourceSeries {
    /// A source grid from a geometry summary and the frames (in mask order).
    pub fn new(
        header: StudyHeader,
        geometry: SeriesGeometry,
        frames: Vec<SourceFrame>,
    ) -> Result<Self> {
        if frames.is_empty() {
            return Err(SegError::NoSourceImages);
        }
        let normal = normal_of(&geometry.orientation)?;
        let bad_value =
            |attribute: &'static str, problem: &'static str| SegError::SourceAttribute {
                sop_instance_uid: frames[0].sop_instance_uid.to_string(),
                attribute,
                problem,
            };
        if geometry.rows == 0 || geometry.columns == 0 {
            return Err(bad_value("Rows/Columns", "must be positive"));
        }
        if !geometry
            .pixel_spacing
            .iter()
            .all(|s| s.is_finite() && *s > 0.0)
        {
            return Err(bad_value("PixelSpacing", "must be two positive numbers"));
        }
        if frames.len() > i32::MAX as usize {
            return Err(SegError::TooLarge(frames.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &frames {
            if !seen.insert((f.sop_instance_uid.as_str(), f.frame_number)) {
                return Err(SegError::DuplicateSource(match f.frame_number {
                    Some(n) => format!("{} frame {n}", f.sop_instance_uid),
                    None => f.sop_instance_uid.to_string(),
                }));
            }
            if !f.position.iter().all(|x| x.is_finite()) {
                return Err(SegError::SourceAttribute {
                    sop_instance_uid: f.sop_instance_uid.to_string(),
                    attribute: "ImagePositionPatient",
                    problem: "is not finite",
                });
            }
        }
        let dist: Vec<f64> = frames.iter().map(|f| dot(f.position, normal)).collect();
        let mut order: Vec<usize> = (0..frames.len()).collect();
        order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]));
        for w in order.windows(2) {
            if (dist[w[1]] - dist[w[0]]).abs() < POSITION_TOL {
                let name = |i: usize| match frames[i].frame_number {
                    Some(n) => format!("{} frame {n}", frames[i].sop_instance_uid),
                    None => frames[i].sop_instance_uid.to_string(),
                };
                return Err(SegError::DuplicatePosition {
                    first: name(w[0]),
                    second: name(w[1]),
                });
            }
        }
        let mut rank = vec![0; frames.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        Ok(SourceSeries {
            header,
            series_instance_uid: geometry.series_instance_uid,
            frame_of_reference_uid: geometry.frame_of_reference_uid,
            orientation: geometry.orientation,
            pixel_spacing: geometry.pixel_spacing,
            slice_thickness: geometry.slice_thickness,
            rows: geometry.rows,
            columns: geometry.columns,
            frames,
            normal,
            order,
            rank,
        })
    }

    /// A source grid from source data sets: single-frame images (one frame each, in the order given) or
    /// multi-frame enhanced images (their frames in frame-number order, geometry from the functional
    /// groups). Patient and study attributes are taken from the first data set.
    pub fn from_datasets<'a>(datasets: impl IntoIterator<Item = &'a Obj>) -> Result<Self> {
        let mut header: Option<StudyHeader> = None;
        let mut geometry: Option<(SeriesGeometry, String)> = None;
        let mut frames = Vec::new();
        let mut study_uid: Option<Uid> = None;
        for d in datasets {
            let sop = ds::get_str(d, tags::SOP_INSTANCE_UID).unwrap_or_else(|| "?".into());
            let need = |tag: Tag, attribute: &'static str| {
                ds::get_str(d, tag).ok_or(SegError::SourceAttribute {
                    sop_instance_uid: sop.clone(),
                    attribute,
                    problem: "is missing",
                })
            };
            let sop_uid = Uid::new(&need(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?)?;
            let class_uid = Uid::new(&need(tags::SOP_CLASS_UID, "SOPClassUID")?)?;
            let this_study = Uid::new(&need(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?)?;
            match &study_uid {
                None => study_uid = Some(this_study),
                Some(s) if *s != this_study => {
                    return Err(SegError::InconsistentSources {
                        what: "StudyInstanceUID",
                        first: s.to_string(),
                        other: this_study.to_string(),
                    })
                }
                _ => {}
            }
            if header.is_none() {
                header = Some(StudyHeader::from_dataset(d)?);
            }
            let (g, positions) = read_geometry(d, &sop)?;
            let frame_numbers: Vec<Option<u32>> = if positions.len() == 1 && !is_multiframe(d) {
                vec![None]
            } else {
                (1..=positions.len() as u32).map(Some).collect()
            };
            for (p, n) in positions.into_iter().zip(frame_numbers) {
                frames.push(SourceFrame {
                    sop_class_uid: class_uid.clone(),
                    sop_instance_uid: sop_uid.clone(),
                    frame_number: n,
                    position: p,
                });
            }
            match &geometry {
                None => geometry = Some((g, sop)),
                Some((first, first_sop)) => check_same(first, &g, first_sop, &sop)?,
            }
        }
        let (geometry, _) = geometry.ok_or(SegError::NoSourceImages)?;
        SourceSeries::new(header.ok_or(SegError::NoSourceImages)?, geometry, frames)
    }

    /// The frames, in the order axis 0 of the masks follows.
    pub fn frames(&self) -> &[SourceFrame] {
        &self.frames
    }
    /// Indices into [`frames`](Self::frames), sorted by position along the slice normal (ascending).
    pub fn order_along_normal(&self) -> &[usize] {
        &self.order
    }
    /// 0-based rank of frame `i` along the normal.
    pub fn rank_of(&self, i: usize) -> usize {
        self.rank[i]
    }
    /// Mask shape expected by the builder: (frames, rows, columns).
    pub fn shape(&self) -> [usize; 3] {
        [self.frames.len(), self.rows as usize, self.columns as usize]
    }
    /// Rows of each frame.
    pub fn rows(&self) -> u16 {
        self.rows
    }
    /// Columns of each frame.
    pub fn columns(&self) -> u16 {
        self.columns
    }
    /// Image Orientation (Patient).
    pub fn orientation(&self) -> [f64; 6] {
        self.orientation
    }
    /// Slice normal (row cosines x column cosines).
    pub fn normal(&self) -> [f64; 3] {
        self.normal
    }
    /// Pixel Spacing (between rows, between columns).
    pub fn pixel_spacing(&self) -> [f64; 2] {
        self.pixel_spacing
    }
    /// Slice Thickness, when known.
    pub fn slice_thickness(&self) -> Option<f64> {
        self.slice_thickness
    }
    /// Frame of Reference UID.
    pub fn frame_of_reference_uid(&self) -> &Uid {
        &self.frame_of_reference_uid
    }
    /// Series Instance UID of the source series.
    pub fn series_instance_uid(&self) -> &Uid {
        &self.series_instance_uid
    }
    /// Patient and study attributes.
    pub fn header(&self) -> &StudyHeader {
        &self.header
    }

    /// Spacing between consecutive frames along the normal, when it is regular (within 1 %).
    pub fn regular_spacing(&self) -> Option<f64> {
        if self.order.len() < 2 {
            return None;
        }
        let d: Vec<f64> = self
            .order
            .iter()
            .map(|&i| dot(self.frames[i].position, self.normal))
            .collect();
        let first = d[1] - d[0];
        if d.windows(2)
            .all(|w| ((w[1] - w[0]) - first).abs() <= first.abs() * 0.01)
        {
            Some(first)
        } else {
            None
        }
    }

    /// Index of the frame whose position matches `position` (within `tol` mm), if any.
    pub fn frame_at(&self, position: [f64; 3], tol: f64) -> Option<usize> {
        let d = dot(position, self.normal);
        // Binary search along the normal, then check the full 3D distance.
        let idx = self
            .order
            .partition_point(|&i| dot(self.frames[i].position, self.normal) < d - tol);
        self.order[idx..]
            .iter()
            .take_while(|&&i| dot(self.frames[i].position, self.normal) <= d + tol)
            .copied()
            .find(|&i| {
                let p = self.frames[i].position;
                let dd = [p[0] - position[0], p[1] - position[1], p[2] - position[2]];
                dot(dd, dd).sqrt() <= tol
            })
    }
}

fn is_multiframe(d: &Obj) -> bool {
    d.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).is_some()
        || ds::get_u32(d, tags::NUMBER_OF_FRAMES).is_some_and(|n| n > 1)
}

fn check_same(a: &SeriesGeometry, b: &SeriesGeometry, sa: &str, sb: &str) -> Result<()> {
    let diff = |what: &'static str, x: String, y: String| {
        Err(SegError::InconsistentSources {
            what,
            first: format!("{x} in {sa}"),
            other: format!("{y} in {sb}"),
        })
    };
    if a.frame_of_reference_uid != b.frame_of_reference_uid {
        return diff(
            "FrameOfReferenceUID",
            a.frame_of_reference_uid.to_string(),
            b.frame_of_reference_uid.to_string(),
        );
    }
    if a.series_instance_uid != b.series_instance_uid {
        return diff(
            "SeriesInstanceUID",
            a.series_instance_uid.to_string(),
            b.series_instance_uid.to_string(),
        );
    }
    if (a.rows, a.columns) != (b.rows, b.columns) {
        return diff(
            "Rows/Columns",
            format!("{}x{}", a.rows, a.columns),
            format!("{}x{}", b.rows, b.columns),
        );
    }
    if a.orientation
        .iter()
        .zip(&b.orientation)
        .any(|(x, y)| (x - y).abs() > ORIENTATION_TOL)
    {
        return diff(
            "ImageOrientationPatient",
            format!("{:?}", a.orientation),
            format!("{:?}", b.orientation),
        );
    }
    if a.pixel_spacing
        .iter()
        .zip(&b.pixel_spacing)
        .any(|(x, y)| (x - y).abs() > 1e-4 * x.abs().max(1.0))
    {
        return diff(
            "PixelSpacing",
            format!("{:?}", a.pixel_spacing),
            format!("{:?}", b.pixel_spacing),
        );
    }
    Ok(())
}

/// Reads the geometry of one data set and the position of each of its frames.
fn read_geometry(d: &Obj, sop: &str) -> Result<(SeriesGeometry, Vec<[f64; 3]>)> {
    let err = |attribute: &'static str, problem: &'static str| SegError::SourceAttribute {
        sop_instance_uid: sop.to_string(),
        attribute,
        problem,
    };
    let uid = |tag: Tag, attribute: &'static str| -> Result<Uid> {
        Ok(Uid::new(
            &ds::get_str(d, tag).ok_or(err(attribute, "is missing"))?,
        )?)
    };
    let series_instance_uid = uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    let frame_of_reference_uid = uid(tags::FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID")?;
    let rows = ds::get_u32(d, tags::ROWS).ok_or(err("Rows", "is missing"))?;
    let columns = ds::get_u32(d, tags::COLUMNS).ok_or(err("Columns", "is missing"))?;
    let rows = u16::try_from(rows).map_err(|_| err("Rows", "is out of range"))?;
    let columns = u16::try_from(columns).map_err(|_| err("Columns", "is out of range"))?;

    let shared = ds::first_item(d, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = ds::items(d, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    // Look an attribute up in a functional group macro: per-frame item, then shared, then top level.
    let fg = |frame: Option<&Obj>, seq: Tag, tag: Tag| -> Option<Vec<f64>> {
        frame
            .and_then(|f| ds::first_item(f, seq))
            .and_then(|m| ds::get_f64s(m, tag))
            .or_else(|| {
                shared
                    .and_then(|s| ds::first_item(s, seq))
                    .and_then(|m| ds::get_f64s(m, tag))
            })
            .or_else(|| ds::get_f64s(d, tag))
    };
    let first_frame = per_frame.and_then(|p| p.first());
    let o = fg(
        first_frame,
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
    )
    .ok_or(err("ImageOrientationPatient", "is missing"))?;
    let orientation: [f64; 6] = o
        .try_into()
        .map_err(|_| err("ImageOrientationPatient", "must have 6 values"))?;
    let ps = fg(
        first_frame,
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::PIXEL_SPACING,
    )
    .ok_or(err("PixelSpacing", "is missing"))?;
    let pixel_spacing: [f64; 2] = ps
        .try_into()
        .map_err(|_| err("PixelSpacing", "must have 2 values"))?;
    let slice_thickness = fg(
        first_frame,
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::SLICE_THICKNESS,
    )
    .and_then(|v| v.first().copied())
    .filter(|t| *t > 0.0);

    let pos = |v: Vec<f64>| -> Result<[f64; 3]> {
        v.try_into()
            .map_err(|_| err("ImagePositionPatient", "must have 3 values"))
    };
    let positions = match per_frame {
        Some(items) if !items.is_empty() => {
            let n = ds::get_u32(d, tags::NUMBER_OF_FRAMES).unwrap_or(items.len() as u32);
            if n as usize != items.len() {
                return Err(err(
                    "PerFrameFunctionalGroupsSequence",
                    "does not have NumberOfFrames items",
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                // Every frame must share the orientation of the first (one grid per series).
                let o2 = fg(
                    Some(it),
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                )
                .ok_or(err("ImageOrientationPatient", "is missing for a frame"))?;
                if o2.len() != 6
                    || o2
                        .iter()
                        .zip(&orientation)
                        .any(|(a, b)| (a - b).abs() > ORIENTATION_TOL)
                {
                    return Err(err("ImageOrientationPatient", "differs between frames"));
                }
                let p = ds::first_item(it, tags::PLANE_POSITION_SEQUENCE)
                    .and_then(|m| ds::get_f64s(m, tags::IMAGE_POSITION_PATIENT))
                    .ok_or(err(
                        "PlanePositionSequence/ImagePositionPatient",
                        "is missing for a frame",
                    ))?;
                out.push(pos(p)?);
            }
            out
        }
        _ => {
            if ds::get_u32(d, tags::NUMBER_OF_FRAMES).is_some_and(|n| n > 1) {
                return Err(err(
                    "PerFrameFunctionalGroupsSequence",
                    "is missing: a multi-frame source needs per-frame positions",
                ));
            }
            vec![pos(ds::get_f64s(d, tags::IMAGE_POSITION_PATIENT)
                .ok_or(err("ImagePositionPatient", "is missing"))?)?]
        }
    };
    Ok((
        SeriesGeometry {
            series_instance_uid,
            frame_of_reference_uid,
            orientation,
            pixel_spacing,
            slice_thickness,
            rows,
            columns,
        },
        positions,
    ))
}
