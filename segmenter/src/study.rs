//! A study's instances, parsed and grouped by series, with the attributes series selection looks at.

use std::collections::BTreeMap;

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::error::SegmentError;

/// One series of the study and its instances.
#[derive(Debug)]
pub struct Series {
    pub uid: String,
    pub number: Option<i64>,
    pub description: String,
    pub modality: String,
    pub sop_class_uid: String,
    pub echo_time_ms: Option<f64>,
    pub repetition_time_ms: Option<f64>,
    pub inversion_time_ms: Option<f64>,
    pub scanning_sequence: String,
    pub contrast_agent: Option<String>,
    /// Frames over all instances (1 per classic single-frame image).
    pub frames: usize,
    pub instances: Vec<DefaultDicomObject>,
}

impl Series {
    /// "4 'AX T2 FLAIR' (34 MR images)": how a series is named in errors and logs (no patient data).
    pub fn summary(&self) -> String {
        format!(
            "{} {:?} ({} {} frames)",
            self.number.map_or("-".to_string(), |n| n.to_string()),
            self.description,
            self.frames,
            self.modality
        )
    }

    /// MR Image Storage, Enhanced MR or Legacy Converted Enhanced MR Image Storage.
    pub fn is_mr_image(&self) -> bool {
        self.modality == "MR"
            && [
                uids::MR_IMAGE_STORAGE,
                uids::ENHANCED_MR_IMAGE_STORAGE,
                uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
            ]
            .contains(&self.sop_class_uid.as_str())
    }
}

/// The instances of one study, grouped by series (ordered by Series Number, then Series Instance UID).
#[derive(Debug)]
pub struct Study {
    pub study_uid: String,
    pub series: Vec<Series>,
}

pub(crate) fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?.to_str().ok()?;
    dicom_values::trimmed(&e).map(str::to_string)
}

pub(crate) fn float(obj: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)
        .and_then(|e| e.to_float64().ok())
        .filter(|v| v.is_finite())
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

/// Parses one Part-10 object (with or without its 128-byte preamble). Its structure is
/// scanned first (`dimse::scan`: nesting depth, declared lengths against the bytes present,
/// inflated size), so a hostile or truncated object is an error here, never a stack overflow
/// or an allocation sized by a declared length.
pub fn parse_instance(bytes: &[u8], name: &str) -> Result<DefaultDicomObject, SegmentError> {
    dimse::scan::scan_part10(bytes, &dimse::scan::Limits::default()).map_err(|e| {
        SegmentError::Instance {
            sop_uid: staging::escape(name),
            message: format!("not a readable DICOM Part-10 object: {e}"),
        }
    })?;
    OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| SegmentError::Instance {
            sop_uid: name.to_string(),
            message: format!("not a readable DICOM Part-10 object: {e}"),
        })
}

impl Study {
    /// Groups parsed instances by Series Instance UID. Every instance must belong to one study.
    /// A SOP Instance UID seen twice is kept once (the SCP stores duplicates once too).
    pub fn from_instances(
        instances: impl IntoIterator<Item = DefaultDicomObject>,
    ) -> Result<Self, SegmentError> {
        let mut study_uid: Option<String> = None;
        let mut by_series: BTreeMap<String, Vec<DefaultDicomObject>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for obj in instances {
            let sop = text(&obj, tags::SOP_INSTANCE_UID).ok_or_else(|| SegmentError::Instance {
                sop_uid: "?".into(),
                message: "has no SOP Instance UID".into(),
            })?;
            let need = |tag: Tag, what: &str| {
                text(&obj, tag).ok_or_else(|| SegmentError::Instance {
                    sop_uid: sop.clone(),
                    message: format!("has no {what}"),
                })
            };
            let study = need(tags::STUDY_INSTANCE_UID, "Study Instance UID")?;
            let series = need(tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
            match &study_uid {
                None => study_uid = Some(study),
                Some(s) if *s != study => {
                    return Err(SegmentError::BadJob(format!(
                        "instances of two studies in one job: {s} and {study}"
                    )))
                }
                _ => {}
            }
            if seen.insert(sop) {
                by_series.entry(series).or_default().push(obj);
            }
        }
        let study_uid =
            study_uid.ok_or_else(|| SegmentError::BadJob("the job holds no instances".into()))?;
        let mut series: Vec<Series> = by_series
            .into_iter()
            .map(|(uid, instances)| {
                let first = &instances[0];
                let frames = instances
                    .iter()
                    .map(|o| int(o, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize)
                    .sum();
                Series {
                    number: int(first, tags::SERIES_NUMBER),
                    description: text(first, tags::SERIES_DESCRIPTION).unwrap_or_default(),
                    modality: text(first, tags::MODALITY).unwrap_or_default(),
                    sop_class_uid: text(first, tags::SOP_CLASS_UID).unwrap_or_default(),
                    echo_time_ms: float(first, tags::ECHO_TIME),
                    repetition_time_ms: float(first, tags::REPETITION_TIME),
                    inversion_time_ms: float(first, tags::INVERSION_TIME),
                    scanning_sequence: first
                        .get(tags::SCANNING_SEQUENCE)
                        .and_then(|e| e.to_multi_str().ok())
                        .map(|v| v.join("\\"))
                        .unwrap_or_default(),
                    contrast_agent: text(first, tags::CONTRAST_BOLUS_AGENT),
                    frames,
                    uid,
                    instances,
                }
            })
            .collect();
        series.sort_by(|a, b| {
            (a.number.unwrap_or(i64::MAX), &a.uid).cmp(&(b.number.unwrap_or(i64::MAX), &b.uid))
        });
        Ok(Study { study_uid, series })
    }

    /// One line per series, for "series present: ..." in errors.
    pub fn series_summary(&self) -> String {
        self.series
            .iter()
            .map(Series::summary)
            .collect::<Vec<_>>()
            .join("; ")
    }
}
