//! The Part-10 side of a received instance: the header we write in front of its data set
//! (preamble, "DICM", File Meta Information with the caller's provenance stamp), and reading
//! back what the data set says about itself (bounded scan first), checked against the C-STORE
//! command that announced it.

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::OpenFileOptions;
use staging::Uid;

use crate::dimse::{Command, Status};
use crate::provenance::CallerId;
use crate::sop::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Why a received instance is refused, and the status its C-STORE gets.
#[derive(Debug)]
pub(crate) struct Refusal(pub Status, pub String);

/// What the data set says about itself, read back from the received bytes.
pub(crate) struct Identity {
    pub study: Uid,
    pub series: Uid,
    pub sop_instance: String,
    pub sop_class: String,
}

/// Where to read a received instance's header from.
pub(crate) enum Source<'a> {
    /// The whole Part-10 file in memory (preamble included).
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Preamble, "DICM" and the File Meta Information for the instance, as received.
/// With the caller's stamp (Private Information, `provenance`): its digest and sequence number
/// are placeholders, filled in at the returned offsets once the data set is complete.
pub(crate) fn file_header(
    command: &Command,
    transfer_syntax: &str,
    caller: &CallerId,
) -> Result<(Vec<u8>, crate::provenance::Placeholders), String> {
    let calling_ae = caller.ae.as_str();
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(command.affected_sop_class_uid.as_str())
        .media_storage_sop_instance_uid(command.affected_sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax.trim_end_matches('\0'))
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .private_information_creator_uid(crate::provenance::creator_uid())
        .private_information(crate::provenance::private_information(caller));
    if crate::config::valid_ae_title(calling_ae) {
        builder = builder.source_application_entity_title(calling_ae);
    }
    let meta = builder
        .build()
        .map_err(|e| format!("cannot build file meta information: {e}"))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| format!("cannot write file meta information: {e}"))?;
    let spots = crate::provenance::Placeholders::find(&out)
        .ok_or_else(|| "the provenance stamp is missing from the header".to_string())?;
    Ok((out, spots))
}

/// Scan a received instance whole (nesting depth, every declared length against the bytes
/// present: a truncated instance is refused here), then read its header (up to Pixel Data)
/// for its identifying UIDs.
pub(crate) fn identify(
    source: Source<'_>,
    limits: &::dimse::scan::Limits,
) -> Result<Identity, Refusal> {
    let scanned = match source {
        Source::Bytes(b) => crate::guard::scan_instance(b, limits).map_err(|e| e.to_string()),
        Source::File(p) => crate::guard::scan_instance_file(p, limits).map_err(|e| e.to_string()),
    };
    if let Err(why) = scanned {
        return Err(Refusal(
            Status::CannotUnderstand,
            format!("data set refused: {why}"),
        ));
    }
    let options = OpenFileOptions::new().read_until(tags::PIXEL_DATA);
    let parsed = match source {
        Source::Bytes(b) => options
            .read_preamble(ReadPreamble::Never)
            .from_reader(b.get(128..).unwrap_or_default()),
        Source::File(p) => options.open_file(p),
    };
    let obj = parsed.map_err(|e| {
        Refusal(
            Status::CannotUnderstand,
            format!("data set cannot be parsed: {}", first_line(&e.to_string())),
        )
    })?;
    let get = |tag| -> Option<String> {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    let uid = |tag, name: &str| -> Result<Uid, Refusal> {
        let raw =
            get(tag).ok_or_else(|| Refusal(Status::CannotUnderstand, format!("{name} missing")))?;
        Uid::new(&raw).map_err(|e| Refusal(Status::CannotUnderstand, format!("{name}: {e}")))
    };
    Ok(Identity {
        study: uid(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
        series: uid(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
        sop_instance: get(tags::SOP_INSTANCE_UID).unwrap_or_default(),
        sop_class: get(tags::SOP_CLASS_UID).unwrap_or_default(),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

/// The data set must be the instance the C-STORE command announced; its SOP Instance UID
/// becomes a file name, so it must also be a valid UID.
pub(crate) fn checked_sop(
    id: &Identity,
    sop_instance: &str,
    sop_class: &str,
) -> Result<Uid, Refusal> {
    if id.sop_instance != sop_instance {
        return Err(Refusal(
            Status::DataSetMismatch,
            "SOP Instance UID differs from the command's".into(),
        ));
    }
    if id.sop_class != sop_class {
        return Err(Refusal(
            Status::DataSetMismatch,
            "SOP Class UID differs from the command's".into(),
        ));
    }
    Uid::new(&id.sop_instance)
        .map_err(|e| Refusal(Status::CannotUnderstand, format!("SOP Instance UID: {e}")))
}
