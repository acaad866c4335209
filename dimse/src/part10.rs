//! What a received Part-10 object says it is: its study, series and SOP UIDs, read after a
//! bounded structural scan (nesting depth, every declared length against the bytes present, so a
//! truncated or hostile object is refused before dicom-rs recurses or allocates by it) and only
//! up to Pixel Data. One reading for both ways in: the listener (`scp`, a C-STORE's instance)
//! and the S3 upload path (`segmenter::upload`, each file of an upload).

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_values::{Uid, UidError};

use crate::scan::{self, Limits, ScanError};

/// The identifying UIDs of a Part-10 object. Study and series are validated (they become
/// paths and keys); the SOP Instance UID is kept as written, so that the listener can first
/// compare it with its C-STORE command (a mismatch is 0xA900, an invalid UID 0xC000), and
/// [`Identity::sop_instance_uid`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub study: Uid,
    pub series: Uid,
    pub sop_instance: String,
    /// Empty when the data set has none.
    pub sop_class: String,
}

impl Identity {
    /// The SOP Instance UID, validated like the others.
    pub fn sop_instance_uid(&self) -> Result<Uid, IdentifyError> {
        uid("SOP Instance UID", Some(self.sop_instance.clone()))
    }
}

/// Why an object cannot be identified.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// The structural scan refused it (not Part 10, truncated, nested too deep, ...).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// dicom-rs could not read its header (the first line of its message).
    #[error("{0}")]
    Parse(String),
    /// An identifying UID is missing or empty.
    #[error("{0} missing")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Invalid {
        what: &'static str,
        #[source]
        source: UidError,
    },
}

/// Scans a whole Part-10 object held in memory (preamble and "DICM", or "DICM" first) within
/// `limits` and takes its identity from the top-level elements the scan passed (the same values
/// a dicom-object parse gives: the `same_identity_as_dicom_object` test holds them equal on every
/// committed study).
pub fn identify(bytes: &[u8], limits: &Limits) -> Result<Identity, IdentifyError> {
    // The scan walks every element within its limits anyway and keeps the top-level UIDs, so
    // the acknowledgement path parses the header once, not twice.
    let uids = scan::scan_part10(bytes, limits)?.uids;
    Ok(Identity {
        study: uid("Study Instance UID", uids.study)?,
        series: uid("Series Instance UID", uids.series)?,
        sop_instance: uids.sop_instance.unwrap_or_default(),
        sop_class: uids.sop_class.unwrap_or_default(),
    })
}

/// The identity of a Part-10 file on disk whose caller has already scanned it (the listener
/// scans a large instance through a read-only mapping, which this crate does not do): only its
/// header is read.
pub fn identify_scanned_file(path: &Path) -> Result<Identity, IdentifyError> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(parse_error)?;
    identity_of(&obj)
}

fn parse_error(e: impl std::fmt::Display) -> IdentifyError {
    let text = e.to_string();
    IdentifyError::Parse(
        text.lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    )
}

fn identity_of(obj: &DefaultDicomObject) -> Result<Identity, IdentifyError> {
    Ok(Identity {
        study: uid("Study Instance UID", text(obj, tags::STUDY_INSTANCE_UID))?,
        series: uid("Series Instance UID", text(obj, tags::SERIES_INSTANCE_UID))?,
        sop_instance: text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        sop_class: text(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
    })
}

/// A UI value without its padding (NUL or space) and surrounding blanks; `None` if absent or
/// empty.
fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element(tag).ok()?.to_str().ok()?;
    dicom_values::trimmed(&e).map(str::to_string)
}

fn uid(what: &'static str, raw: Option<String>) -> Result<Uid, IdentifyError> {
    let raw = raw.ok_or(IdentifyError::Missing(what))?;
    Uid::new(&raw).map_err(|source| IdentifyError::Invalid { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::InMemDicomObject;

    const MR: &str = "1.2.840.10008.5.1.4.1.1.4";

    fn object(study: Option<&str>, sop: &str) -> Vec<u8> {
        let mut elements = vec![
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(MR)),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop)),
            DataElement::new(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::from(vec![7u8; 64]),
            ),
        ];
        if let Some(study) = study {
            elements.push(DataElement::new(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(study),
            ));
        }
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(crate::EXPLICIT_VR_LE)
            .media_storage_sop_class_uid(MR)
            .media_storage_sop_instance_uid(sop)
            .build()
            .unwrap();
        let mut out = Vec::new();
        InMemDicomObject::from_element_iter(elements)
            .with_exact_meta(meta)
            .write_all(&mut out)
            .unwrap();
        out
    }

    /// The scan's identity equals dicom-object's header parse (`identify_scanned_file`) on every
    /// instance of the committed studies: explicit and implicit VR, RLE, JPEG-LS, four series each.
    #[test]
    fn same_identity_as_dicom_object() {
        let studies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/studies");
        let mut files = Vec::new();
        let mut dirs = vec![studies];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        let mut seen = 0;
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            if !(bytes.len() >= 132 && &bytes[128..132] == b"DICM") {
                continue;
            }
            let ours = identify(&bytes, &Limits::default()).unwrap();
            let theirs = identify_scanned_file(f).unwrap();
            assert_eq!(ours, theirs, "{}", f.display());
            seen += 1;
        }
        assert!(
            seen >= 300,
            "only {seen} instances found under testdata/studies"
        );
    }

    #[test]
    fn identifies_with_and_without_the_preamble() {
        let bytes = object(Some("1.2.3"), "1.2.3.4.5");
        let id = identify(&bytes, &Limits::default()).unwrap();
        assert_eq!(id.study.as_str(), "1.2.3");
        assert_eq!(id.series.as_str(), "1.2.3.4");
        assert_eq!(id.sop_instance, "1.2.3.4.5");
        assert_eq!(id.sop_class, MR);
        assert_eq!(id.sop_instance_uid().unwrap().as_str(), "1.2.3.4.5");
        assert_eq!(identify(&bytes[128..], &Limits::default()).unwrap(), id);
    }

    #[test]
    fn refusals_say_which_uid_or_why() {
        let limits = Limits::default();
        let no_study = object(None, "1.2.3.4.5");
        assert!(matches!(
            identify(&no_study, &limits),
            Err(IdentifyError::Missing("Study Instance UID"))
        ));
        let bad = object(Some("1.2.3"), "1.2..3");
        let id = identify(&bad, &limits).unwrap();
        let e = id.sop_instance_uid().unwrap_err();
        assert!(
            matches!(
                e,
                IdentifyError::Invalid {
                    what: "SOP Instance UID",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("SOP Instance UID: "), "{e}");
        let good = object(Some("1.2.3"), "1.2.3.4.5");
        let truncated = &good[..good.len() - 10];
        assert!(matches!(
            identify(truncated, &limits),
            Err(IdentifyError::Scan(_))
        ));
        assert!(matches!(
            identify(b"hello", &limits),
            Err(IdentifyError::Scan(_))
        ));
    }
}
