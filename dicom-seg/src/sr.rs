//! Volumes as a DICOM Structured Report: a TID 1500 *Imaging Measurement Report* (Comprehensive 3D
//! SR) that describes a Segmentation built by this crate (or read from a file).
//!
//! One TID 1411 *Volumetric ROI Measurements* group per measurement: a tracking identifier and UID,
//! the finding, a *Referenced Segment* (the SEG's SOP Instance UID and one or more segment numbers:
//! a BraTS region such as the whole tumour is the union of several segments), the *Source series for
//! segmentation*, and one *Volume* (SCT 118565006) in millilitres (UCUM `ml`) whose algorithm
//! identification (TID 4019) is attached. The structure follows what highdicom 0.28 writes for a
//! `MeasurementReport`, so that highdicom reads it back.
//!
//! Why this lives in `dicom-seg`: the report is a function of the SEG it describes (its UIDs, its
//! patient and study attributes, its segment numbers and property types), which this crate already
//! reads; it needs no I/O and shares the crate's UID, code and encoding helpers.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::FileDicomObject;

use crate::builder::Equipment;
use crate::code::CodedConcept;
use crate::ds::{self, code_item, put_seq, put_str, Obj};
use crate::error::{Result, SegError};
use crate::uid::Uid;

/// SOP Class UID of Comprehensive 3D SR Storage.
pub const COMPREHENSIVE_3D_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.34";

/// One volume: which segments of the SEG it covers, what it is and its value in millilitres.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeMeasurement {
    /// Tracking Identifier (a short human-readable name, e.g. "Oedema" or "WT").
    pub tracking_identifier: String,
    /// Finding (e.g. the segment's property type, or SCT 108369006 Neoplasm for a region).
    pub finding: CodedConcept,
    /// Segment numbers of the SEG whose union was measured (at least one).
    pub segments: Vec<u16>,
    /// The volume in millilitres.
    pub ml: f64,
}

/// The algorithm that produced the volumes (TID 4019).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportAlgorithm {
    /// Algorithm Name.
    pub name: String,
    /// Algorithm Version.
    pub version: String,
}

/// Builds a TID 1500 report of volumes for one Segmentation.
#[derive(Debug, Clone)]
pub struct VolumeReportBuilder<'a> {
    seg: &'a Obj,
    equipment: Equipment,
    algorithm: ReportAlgorithm,
    measurements: Vec<VolumeMeasurement>,
    sop_instance_uid: Option<Uid>,
    series_number: i32,
    series_description: Option<String>,
    procedure: CodedConcept,
    content_date_time: Option<(String, String)>,
}

/// A built report: a Part-10 object (explicit VR little endian).
#[derive(Debug, Clone)]
pub struct VolumeReport {
    file: FileDicomObject<Obj>,
    sop_instance_uid: Uid,
    series_instance_uid: Uid,
}

impl VolumeReport {
    /// The complete file object.
    pub fn file(&self) -> &FileDicomObject<Obj> {
        &self.file
    }
    /// SOP Instance UID.
    pub fn sop_instance_uid(&self) -> &Uid {
        &self.sop_instance_uid
    }
    /// Series Instance UID.
    pub fn series_instance_uid(&self) -> &Uid {
        &self.series_instance_uid
    }
    /// The Part-10 file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(16 * 1024);
        self.file
            .write_all(&mut v)
            .map_err(|e| SegError::write("data set", e))?;
        Ok(v)
    }
}

/// A segment of the SEG as the report needs it.
struct SegSegment {
    number: u16,
}

impl<'a> VolumeReportBuilder<'a> {
    /// A report about the Segmentation whose data set is `seg` (e.g. [`crate::Segmentation::dataset`]).
    pub fn new(seg: &'a Obj, equipment: Equipment, algorithm: ReportAlgorithm) -> Self {
        VolumeReportBuilder {
            seg,
            equipment,
            algorithm,
            measurements: Vec::new(),
            sop_instance_uid: None,
            series_number: 1,
            series_description: None,
            // LOINC 24590-2 "MR Brain" (Procedure reported, CID 100 allows LOINC procedure codes).
            procedure: CodedConcept::new("24590-2", "LN", "MR Brain"),
            content_date_time: None,
        }
    }

    /// Adds one volume.
    pub fn volume(mut self, m: VolumeMeasurement) -> Self {
        self.measurements.push(m);
        self
    }

    /// Fixes the SOP Instance UID (the Series Instance UID is derived from it); generated otherwise.
    pub fn sop_instance_uid(mut self, uid: Uid) -> Self {
        self.sop_instance_uid = Some(uid);
        self
    }

    /// Series Number and Series Description of the report's own series.
    pub fn series(mut self, number: i32, description: Option<String>) -> Self {
        self.series_number = number;
        self.series_description = description;
        self
    }

    /// Procedure reported (default LOINC 24590-2 "MR Brain").
    pub fn procedure_reported(mut self, c: CodedConcept) -> Self {
        self.procedure = c;
        self
    }

    /// Content Date and Time (default: now, UTC).
    pub fn content_date_time(mut self, date: impl Into<String>, time: impl Into<String>) -> Self {
        self.content_date_time = Some((date.into(), time.into()));
        self
    }

    fn seg_str(&self, tag: dicom_core::Tag, attribute: &'static str) -> Result<String> {
        ds::get_str(self.seg, tag).ok_or(SegError::SegAttribute {
            attribute,
            problem: "is missing".into(),
        })
    }

    fn seg_segments(&self) -> Result<Vec<SegSegment>> {
        let items = self
            .seg
            .get(tags::SEGMENT_SEQUENCE)
            .and_then(|e| e.items())
            .ok_or(SegError::SegAttribute {
                attribute: "SegmentSequence",
                problem: "is missing".into(),
            })?;
        items
            .iter()
            .map(|it| {
                let number = it
                    .get(tags::SEGMENT_NUMBER)
                    .and_then(|e| e.to_int::<u16>().ok())
                    .ok_or(SegError::SegAttribute {
                        attribute: "SegmentNumber",
                        problem: "is missing or not a number".into(),
                    })?;
                Ok(SegSegment { number })
            })
            .collect()
    }

    /// Checks the measurements against the SEG and writes the report.
    pub fn build(self) -> Result<VolumeReport> {
        let class = self.seg_str(tags::SOP_CLASS_UID, "SOPClassUID")?;
        let seg_uid = Uid::new(&self.seg_str(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?)?;
        let seg_series = Uid::new(&self.seg_str(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?)?;
        let study = Uid::new(&self.seg_str(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?)?;
        let source_series = self
            .seg
            .get(tags::REFERENCED_SERIES_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
            .and_then(|it| ds::get_str(it, tags::SERIES_INSTANCE_UID))
            .ok_or(SegError::SegAttribute {
                attribute: "ReferencedSeriesSequence",
                problem: "names no source series".into(),
            })?;
        let source_series = Uid::new(&source_series)?;
        let known = self.seg_segments()?;
        if self.measurements.is_empty() {
            return Err(SegError::NoSegments);
        }
        for m in &self.measurements {
            check_text("TrackingIdentifier", &m.tracking_identifier, 64)?;
            m.finding.validate()?;
            if m.segments.is_empty() {
                return Err(SegError::InvalidValue {
                    attribute: "ReferencedSegmentNumber",
                    value: m.tracking_identifier.clone(),
                    reason: "names no segment",
                });
            }
            if let Some(&n) = m
                .segments
                .iter()
                .find(|&&n| !known.iter().any(|s| s.number == n))
            {
                return Err(SegError::UnknownSegment(n as u32));
            }
            if !m.ml.is_finite() || m.ml < 0.0 {
                return Err(SegError::InvalidValue {
                    attribute: "NumericValue",
                    value: m.ml.to_string(),
                    reason: "a volume must be a finite number >= 0",
                });
            }
        }
        check_text("AlgorithmName", &self.algorithm.name, 1024)?;
        check_text("AlgorithmVersion", &self.algorithm.version, 1024)?;
        for (what, v) in [
            ("Manufacturer", &self.equipment.manufacturer),
            ("ManufacturerModelName", &self.equipment.model_name),
            ("DeviceSerialNumber", &self.equipment.device_serial_number),
            ("SoftwareVersions", &self.equipment.software_versions),
        ] {
            check_text(what, v, 64)?;
        }

        let sop_uid = self
            .sop_instance_uid
            .clone()
            .unwrap_or_else(|| Uid::derived_from(&format!("{seg_uid}/volume-report")));
        let series_uid = Uid::derived_from(&format!("{sop_uid}/series"));
        let (date, time) = self
            .content_date_time
            .clone()
            .unwrap_or_else(crate::builder::now_utc);

        let mut o = Obj::new_empty();
        // SOP Common
        put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put_str(
            &mut o,
            tags::SOP_CLASS_UID,
            VR::UI,
            COMPREHENSIVE_3D_SR_STORAGE,
        );
        put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str());
        put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
        put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
        // Patient, General Study, Patient Study, Clinical Trial (as the SEG has them).
        crate::source::put_patient_and_study(&mut o, self.seg, &study);
        // SR Document Series
        put_str(&mut o, tags::MODALITY, VR::CS, "SR");
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
            check_text("SeriesDescription", d, 64)?;
            put_str(&mut o, tags::SERIES_DESCRIPTION, VR::LO, d);
        }
        put_seq(
            &mut o,
            tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
            vec![],
        );
        // General Equipment + Enhanced General Equipment
        let e = &self.equipment;
        e.put_into(&mut o);
        // SR Document General
        put_str(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
        put_str(&mut o, tags::CONTENT_DATE, VR::DA, &date);
        put_str(&mut o, tags::CONTENT_TIME, VR::TM, &time);
        put_str(&mut o, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
        put_str(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
        put_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
        let mut sop_ref = Obj::new_empty();
        put_str(&mut sop_ref, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &class);
        put_str(
            &mut sop_ref,
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            seg_uid.as_str(),
        );
        let mut series_ref = Obj::new_empty();
        put_seq(
            &mut series_ref,
            tags::REFERENCED_SOP_SEQUENCE,
            vec![sop_ref],
        );
        put_str(
            &mut series_ref,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            seg_series.as_str(),
        );
        let mut evidence = Obj::new_empty();
        put_seq(
            &mut evidence,
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![series_ref],
        );
        put_str(
            &mut evidence,
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            study.as_str(),
        );
        put_seq(
            &mut o,
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![evidence],
        );

        // SR Document Content: the TID 1500 tree.
        put_str(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
        put_seq(
            &mut o,
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code_item(&CodedConcept::dcm(
                "126000",
                "Imaging Measurement Report",
            ))],
        );
        put_str(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
        put_seq(
            &mut o,
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![template("1500")],
        );
        let device_uid = Uid::derived_from(&format!(
            "segnode device {} {}",
            e.model_name, e.device_serial_number
        ));
        let mut root = vec![
            code_content(
                "HAS CONCEPT MOD",
                CodedConcept::dcm("121049", "Language of Content Item and Descendants"),
                CodedConcept::new("en-US", "RFC5646", "English (United States)"),
            ),
            code_content(
                "HAS OBS CONTEXT",
                CodedConcept::dcm("121005", "Observer Type"),
                CodedConcept::dcm("121007", "Device"),
            ),
            uidref_content(
                "HAS OBS CONTEXT",
                CodedConcept::dcm("121012", "Device Observer UID"),
                device_uid.as_str(),
            ),
            text_content(
                "HAS OBS CONTEXT",
                CodedConcept::dcm("121013", "Device Observer Name"),
                &e.model_name,
            ),
            text_content(
                "HAS OBS CONTEXT",
                CodedConcept::dcm("121014", "Device Observer Manufacturer"),
                &e.manufacturer,
            ),
            code_content(
                "HAS CONCEPT MOD",
                CodedConcept::dcm("121058", "Procedure reported"),
                self.procedure.clone(),
            ),
        ];
        let mut groups = Vec::with_capacity(self.measurements.len());
        for (i, m) in self.measurements.iter().enumerate() {
            groups.push(self.group(m, i, &sop_uid, &class, &seg_uid, &source_series));
        }
        let mut imaging = container(
            "CONTAINS",
            CodedConcept::dcm("126010", "Imaging Measurements"),
            None,
        );
        put_seq(&mut imaging, tags::CONTENT_SEQUENCE, groups);
        root.push(imaging);
        put_seq(&mut o, tags::CONTENT_SEQUENCE, root);

        let file = crate::builder::with_part10_meta(o)?;
        Ok(VolumeReport {
            file,
            sop_instance_uid: sop_uid,
            series_instance_uid: series_uid,
        })
    }

    /// One TID 1411 group.
    fn group(
        &self,
        m: &VolumeMeasurement,
        index: usize,
        report_uid: &Uid,
        seg_class: &str,
        seg_uid: &Uid,
        source_series: &Uid,
    ) -> Obj {
        let mut items = vec![
            text_content(
                "HAS OBS CONTEXT",
                CodedConcept::dcm("112039", "Tracking Identifier"),
                &m.tracking_identifier,
            ),
            uidref_content(
                "HAS OBS CONTEXT",
                CodedConcept::dcm("112040", "Tracking Unique Identifier"),
                Uid::derived_from(&format!("{report_uid}/tracking/{index}")).as_str(),
            ),
            code_content(
                "CONTAINS",
                CodedConcept::dcm("121071", "Finding"),
                m.finding.clone(),
            ),
        ];
        // Referenced Segment: an IMAGE item whose Referenced SOP Sequence names the SEG and the
        // segment numbers (Referenced Segment Number is US 1-n).
        let mut seg_ref = Obj::new_empty();
        put_str(
            &mut seg_ref,
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            seg_class,
        );
        put_str(
            &mut seg_ref,
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            seg_uid.as_str(),
        );
        ds::put_u16s(&mut seg_ref, tags::REFERENCED_SEGMENT_NUMBER, &m.segments);
        let mut image = content_item(
            "CONTAINS",
            "IMAGE",
            CodedConcept::dcm("121191", "Referenced Segment"),
        );
        put_seq(&mut image, tags::REFERENCED_SOP_SEQUENCE, vec![seg_ref]);
        items.push(image);
        items.push(uidref_content(
            "CONTAINS",
            CodedConcept::dcm("121232", "Source series for segmentation"),
            source_series.as_str(),
        ));
        // The volume, with the algorithm that measured it.
        let mut num = content_item("CONTAINS", "NUM", CodedConcept::sct("118565006", "Volume"));
        let mut value = Obj::new_empty();
        put_seq(
            &mut value,
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            vec![code_item(&CodedConcept::new("ml", "UCUM", "milliliter"))],
        );
        value.put(DataElement::new(
            tags::NUMERIC_VALUE,
            VR::DS,
            PrimitiveValue::from(ds::format_ds(m.ml)),
        ));
        value.put(DataElement::new(
            tags::FLOATING_POINT_VALUE,
            VR::FD,
            PrimitiveValue::from(m.ml),
        ));
        put_seq(&mut num, tags::MEASURED_VALUE_SEQUENCE, vec![value]);
        put_seq(
            &mut num,
            tags::CONTENT_SEQUENCE,
            vec![
                text_content(
                    "HAS CONCEPT MOD",
                    CodedConcept::dcm("111001", "Algorithm Name"),
                    &self.algorithm.name,
                ),
                text_content(
                    "HAS CONCEPT MOD",
                    CodedConcept::dcm("111003", "Algorithm Version"),
                    &self.algorithm.version,
                ),
            ],
        );
        items.push(num);
        let mut group = container(
            "CONTAINS",
            CodedConcept::dcm("125007", "Measurement Group"),
            Some("1411"),
        );
        put_seq(&mut group, tags::CONTENT_SEQUENCE, items);
        group
    }
}

fn check_text(attribute: &'static str, v: &str, max: usize) -> Result<()> {
    if v.trim().is_empty() || v.chars().count() > max || v.contains('\\') {
        return Err(SegError::InvalidValue {
            attribute,
            value: v.to_string(),
            reason: "must be non-empty, without backslash, and fit its value representation",
        });
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(SegError::InvalidValue {
            attribute,
            value: v.to_string(),
            reason: "must not contain control characters",
        });
    }
    Ok(())
}

fn template(id: &str) -> Obj {
    let mut t = Obj::new_empty();
    put_str(&mut t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut t, tags::TEMPLATE_IDENTIFIER, VR::CS, id);
    t
}

fn content_item(relationship: &str, value_type: &str, name: CodedConcept) -> Obj {
    let mut o = Obj::new_empty();
    put_str(&mut o, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    put_str(&mut o, tags::VALUE_TYPE, VR::CS, value_type);
    put_seq(
        &mut o,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code_item(&name)],
    );
    o
}

fn container(relationship: &str, name: CodedConcept, template_id: Option<&str>) -> Obj {
    let mut o = content_item(relationship, "CONTAINER", name);
    put_str(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    if let Some(t) = template_id {
        put_seq(&mut o, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template(t)]);
    }
    o
}

fn code_content(relationship: &str, name: CodedConcept, value: CodedConcept) -> Obj {
    let mut o = content_item(relationship, "CODE", name);
    put_seq(&mut o, tags::CONCEPT_CODE_SEQUENCE, vec![code_item(&value)]);
    o
}

fn text_content(relationship: &str, name: CodedConcept, text: &str) -> Obj {
    let mut o = content_item(relationship, "TEXT", name);
    put_str(&mut o, tags::TEXT_VALUE, VR::UT, text);
    o
}

fn uidref_content(relationship: &str, name: CodedConcept, uid: &str) -> Obj {
    let mut o = content_item(relationship, "UIDREF", name);
    put_str(&mut o, tags::UID, VR::UI, uid);
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{
        AlgorithmIdentification, ContentIdentification, Masks, SegmentDescription, SegmentNumber,
        SegmentationBuilder,
    };
    use crate::source::{SeriesGeometry, SourceFrame, SourceSeries, StudyHeader};
    use dicom_dictionary_std::uids;

    fn equipment() -> Equipment {
        Equipment {
            manufacturer: "segnode".into(),
            model_name: "segnode".into(),
            device_serial_number: "0".into(),
            software_versions: "0.1.0".into(),
        }
    }

    fn seg() -> crate::Segmentation {
        let uid = |s: &str| Uid::derived_from(s);
        let mut header = StudyHeader::new(uid("study"));
        header.set(tags::PATIENT_ID, VR::LO, "P1");
        let frames = (0..3)
            .map(|k| SourceFrame {
                sop_class_uid: Uid::new(uids::MR_IMAGE_STORAGE).unwrap(),
                sop_instance_uid: uid(&format!("img{k}")),
                frame_number: None,
                position: [0.0, 0.0, k as f64],
            })
            .collect();
        let source = SourceSeries::new(
            header,
            SeriesGeometry {
                series_instance_uid: uid("series"),
                frame_of_reference_uid: uid("for"),
                orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                pixel_spacing: [1.0, 1.0],
                slice_thickness: None,
                rows: 4,
                columns: 4,
            },
            frames,
        )
        .unwrap();
        let mut labels = ndarray::Array3::<u16>::zeros(source.shape());
        labels[[0, 1, 1]] = 1;
        labels[[1, 2, 2]] = 2;
        let algo = AlgorithmIdentification {
            family: crate::codes::artificial_intelligence(),
            name: "a".into(),
            version: "1".into(),
            parameters: None,
            source: None,
        };
        let mut b = SegmentationBuilder::new(
            &source,
            equipment(),
            ContentIdentification::new("L", None, None).unwrap(),
        );
        for n in 1..=2 {
            b = b.segment(SegmentDescription::automatic(
                SegmentNumber::new(n).unwrap(),
                format!("s{n}"),
                crate::codes::tissue(),
                crate::codes::neoplasm(),
                algo.clone(),
            ));
        }
        b.sop_instance_uid(uid("seg"))
            .build(Masks::Labels(labels.view()))
            .unwrap()
    }

    fn algorithm() -> ReportAlgorithm {
        ReportAlgorithm {
            name: "unet".into(),
            version: "0.2.0".into(),
        }
    }

    fn m(id: &str, segments: Vec<u16>, ml: f64) -> VolumeMeasurement {
        VolumeMeasurement {
            tracking_identifier: id.into(),
            finding: crate::codes::neoplasm(),
            segments,
            ml,
        }
    }

    fn items(o: &Obj, tag: dicom_core::Tag) -> Vec<Obj> {
        o.get(tag).and_then(|e| e.items()).unwrap_or(&[]).to_vec()
    }

    fn concept(o: &Obj) -> String {
        ds::get_str(
            &items(o, tags::CONCEPT_NAME_CODE_SEQUENCE)[0],
            tags::CODE_VALUE,
        )
        .unwrap()
    }

    #[test]
    fn report_references_the_seg_and_reads_back() {
        let seg = seg();
        let report = VolumeReportBuilder::new(seg.dataset(), equipment(), algorithm())
            .volume(m("s1", vec![1], 0.001))
            .volume(m("both", vec![1, 2], 1.0 / 3.0))
            .content_date_time("20260101", "120000")
            .build()
            .unwrap();
        let bytes = report.to_bytes().unwrap();
        let back = dicom_object::OpenFileOptions::new()
            .from_reader(bytes.as_slice())
            .unwrap();
        let get = |t| ds::get_str(&back, t).unwrap();
        assert_eq!(get(tags::SOP_CLASS_UID), COMPREHENSIVE_3D_SR_STORAGE);
        assert_eq!(
            get(tags::STUDY_INSTANCE_UID),
            seg.dataset()
                .element(tags::STUDY_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
        );
        assert_eq!(get(tags::PATIENT_ID), "P1");
        assert_eq!(get(tags::MODALITY), "SR");
        // Same SEG, same report UID (a redone job re-sends the same instance).
        let again = VolumeReportBuilder::new(seg.dataset(), equipment(), algorithm())
            .volume(m("s1", vec![1], 0.001))
            .build()
            .unwrap();
        assert_eq!(again.sop_instance_uid(), report.sop_instance_uid());

        let root = items(&back, tags::CONTENT_SEQUENCE);
        let imaging = root.iter().find(|i| concept(i) == "126010").unwrap();
        let groups = items(imaging, tags::CONTENT_SEQUENCE);
        assert_eq!(groups.len(), 2);
        let mut seen = Vec::new();
        for g in &groups {
            let content = items(g, tags::CONTENT_SEQUENCE);
            let image = content.iter().find(|i| concept(i) == "121191").unwrap();
            let r = &items(image, tags::REFERENCED_SOP_SEQUENCE)[0];
            assert_eq!(
                ds::get_str(r, tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
                seg.sop_instance_uid().as_str()
            );
            let numbers: Vec<u16> = r
                .get(tags::REFERENCED_SEGMENT_NUMBER)
                .unwrap()
                .to_multi_int::<u16>()
                .unwrap();
            let num = content.iter().find(|i| concept(i) == "118565006").unwrap();
            let value = &items(num, tags::MEASURED_VALUE_SEQUENCE)[0];
            let fd = value
                .get(tags::FLOATING_POINT_VALUE)
                .unwrap()
                .to_float64()
                .unwrap();
            let unit = &items(value, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)[0];
            assert_eq!(ds::get_str(unit, tags::CODE_VALUE).unwrap(), "ml");
            assert_eq!(
                ds::get_str(unit, tags::CODING_SCHEME_DESIGNATOR).unwrap(),
                "UCUM"
            );
            seen.push((numbers, fd));
        }
        assert_eq!(seen, vec![(vec![1], 0.001), (vec![1, 2], 1.0 / 3.0)]);
    }

    #[test]
    fn bad_measurements_are_refused() {
        let seg = seg();
        let build = |x: VolumeMeasurement| {
            VolumeReportBuilder::new(seg.dataset(), equipment(), algorithm())
                .volume(x)
                .build()
        };
        assert!(matches!(
            build(m("x", vec![3], 1.0)),
            Err(SegError::UnknownSegment(3))
        ));
        assert!(build(m("x", vec![], 1.0)).is_err());
        assert!(build(m("x", vec![1], f64::NAN)).is_err());
        assert!(build(m("x", vec![1], -1.0)).is_err());
        assert!(build(m("a\\b", vec![1], 1.0)).is_err());
        assert!(
            VolumeReportBuilder::new(seg.dataset(), equipment(), algorithm())
                .build()
                .is_err()
        );
        // Not a SEG at all.
        let empty = Obj::new_empty();
        assert!(VolumeReportBuilder::new(&empty, equipment(), algorithm())
            .volume(m("x", vec![1], 1.0))
            .build()
            .is_err());
    }
}
