//! The Part-10 side of a received instance: the header we write in front of its data set
//! (preamble, "DICM", File Meta Information with the caller's provenance stamp), and reading
//! back what the data set says about itself (bounded scan first, `dimse::part10`), checked
//! against the C-STORE command that announced it.

use ::dimse::part10::{self, IdentifyError};
use ::dimse::scan::Limits;
use dicom_object::meta::FileMetaTableBuilder;
use staging::Uid;

use crate::dimse::{Command, Status};
use crate::provenance::CallerId;
use crate::sop::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// What the data set says about itself (`dimse::part10`).
pub(crate) use ::dimse::part10::Identity;

/// Why a received instance is refused, and the status its C-STORE gets.
#[derive(Debug)]
pub(crate) struct Refusal(pub Status, pub String);

/// Where to read a received instance's header from.
pub(crate) enum Source<'a> {
    /// The whole Part-10 file in memory (preamble included).
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Why the File Meta Information of a received instance cannot be made (its C-STORE is answered
/// 0xC000 with this text).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The command's UIDs or the transfer syntax do not make a valid meta group.
    #[error("cannot build file meta information: {0}")]
    Build(#[source] dicom_object::meta::Error),
    #[error("cannot write file meta information: {0}")]
    Write(#[source] dicom_object::meta::Error),
    /// A defect of ours: the stamp's placeholders are not where the header puts them.
    #[error("the provenance stamp is missing from the header")]
    NoStamp,
}

/// Preamble, "DICM" and the File Meta Information for the instance, as received.
/// With the caller's stamp (Private Information, `provenance`): its digest and sequence number
/// are placeholders, filled in at the returned offsets once the data set is complete.
pub(crate) fn file_header(
    command: &Command,
    transfer_syntax: &str,
    caller: &CallerId,
) -> Result<(Vec<u8>, crate::provenance::Placeholders), HeaderError> {
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
    let meta = builder.build().map_err(HeaderError::Build)?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(HeaderError::Write)?;
    let spots = crate::provenance::Placeholders::find(&out).ok_or(HeaderError::NoStamp)?;
    Ok((out, spots))
}

/// Scan a received instance whole (nesting depth, every declared length against the bytes
/// present: a truncated instance is refused here) and take its identifying UIDs from the
/// top-level elements the scan passed (`dimse::part10::identify`, which the S3 upload path
/// shares; no parse on the acknowledgement path). An instance streamed to disk (over 4 MiB) is
/// scanned through the read-only mapping of `guard`, then its header is read by dicom-object.
pub(crate) fn identify(source: Source<'_>, limits: &Limits) -> Result<Identity, Refusal> {
    let identified = match source {
        Source::Bytes(b) => part10::identify(b, limits),
        Source::File(p) => match crate::guard::scan_instance_file(p, limits) {
            Ok(()) => part10::identify_scanned_file(p),
            Err(e) => return Err(cannot_understand(format!("data set refused: {e}"))),
        },
    };
    identified.map_err(|e| {
        cannot_understand(match e {
            IdentifyError::Scan(e) => format!("data set refused: {e}"),
            IdentifyError::Parse(why) => format!("data set cannot be parsed: {why}"),
            other => other.to_string(),
        })
    })
}

fn cannot_understand(why: String) -> Refusal {
    Refusal(Status::CannotUnderstand, why)
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
    id.sop_instance_uid()
        .map_err(|e| cannot_understand(e.to_string()))
}
