//! The few DIMSE messages segnode speaks (C-ECHO, C-STORE), encoded as PS3.7 says: command sets
//! in Implicit VR Little Endian with a Command Group Length. The SCP side parses requests and
//! writes responses; the SCU side ([`crate::scu`]) writes requests and parses responses.

use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::IMPLICIT_VR_LE;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type value meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;
/// The largest command set accepted (PS3.7 puts no limit; a C-STORE-RQ is ~200 bytes, one with
/// every optional element well under 1 KiB). Checked before a command set is parsed.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// DIMSE status codes the SCP answers with (PS3.4 B.2.3, PS3.7 C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// 0xA700: out of resources (disk below the threshold, full, or object over the size limit).
    OutOfResources,
    /// 0xA900: the data set does not match the SOP class (or the command's UIDs).
    DataSetMismatch,
    /// 0xC000: cannot understand (unparseable data set, missing or invalid identifying UIDs).
    CannotUnderstand,
    /// 0x0110: processing failure (an unexpected local error).
    ProcessingFailure,
    /// 0x0122: SOP class not supported (sent on a context for another abstract syntax).
    SopClassNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0x0000,
            Status::OutOfResources => 0xA700,
            Status::DataSetMismatch => 0xA900,
            Status::CannotUnderstand => 0xC000,
            Status::ProcessingFailure => 0x0110,
            Status::SopClassNotSupported => 0x0122,
        }
    }
}

/// The parts of a request command the SCP acts on.
#[derive(Debug, Clone)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub has_data_set: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot parse the command set: {0}")]
    Parse(String),
    #[error("the command set lacks {0}")]
    Missing(&'static str),
    #[error("command set of {0} bytes, over the {max} byte limit", max = MAX_COMMAND_BYTES)]
    TooLarge(usize),
    #[error("the command set is malformed: {0}")]
    Scan(#[from] crate::scan::ScanError),
}

fn implicit_le() -> &'static dicom_encoding::TransferSyntax {
    TransferSyntaxRegistry
        .get(IMPLICIT_VR_LE)
        .expect("implicit VR LE is always registered")
}

fn trim_uid(s: &str) -> String {
    dicom_values::trimmed(s).unwrap_or_default().to_string()
}

/// A command set as an object: its size capped and its structure scanned (nesting, declared
/// lengths) before dicom-rs builds an object from it.
fn read_command(bytes: &[u8]) -> Result<InMemDicomObject, CommandError> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLarge(bytes.len()));
    }
    crate::scan::scan_dataset(
        bytes,
        crate::scan::Encoding::ImplicitLittle,
        &crate::scan::Limits::default(),
    )?;
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, implicit_le())
        .map_err(|e| CommandError::Parse(e.to_string()))?;
    Ok(obj)
}

/// Parses a command set. Its size is capped and its structure scanned (nesting, declared
/// lengths) before dicom-rs builds an object from it.
pub fn parse_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let obj = read_command(bytes)?;
    let u16_of = |tag, name| -> Result<u16, CommandError> {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_int::<u16>().ok())
            .ok_or(CommandError::Missing(name))
    };
    let str_of = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| trim_uid(&s))
            .unwrap_or_default()
    };
    Ok(Command {
        command_field: u16_of(tags::COMMAND_FIELD, "Command Field (0000,0100)")?,
        message_id: u16_of(tags::MESSAGE_ID, "Message ID (0000,0110)")?,
        affected_sop_class_uid: str_of(tags::AFFECTED_SOP_CLASS_UID),
        affected_sop_instance_uid: str_of(tags::AFFECTED_SOP_INSTANCE_UID),
        has_data_set: u16_of(
            tags::COMMAND_DATA_SET_TYPE,
            "Command Data Set Type (0000,0800)",
        )? != NO_DATA_SET,
    })
}

fn encode(obj: InMemDicomObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    obj.write_dataset_with_ts(&mut out, implicit_le())
        .expect("writing a command set to memory cannot fail");
    out
}

/// Pad a UID to even length with NUL, as UI values must be.
fn uid_value(uid: &str) -> PrimitiveValue {
    let mut s = uid.to_string();
    if s.len() % 2 == 1 {
        s.push('\0');
    }
    PrimitiveValue::from(s)
}

/// The elements every response carries (PS3.7 9.3.1.2, 9.3.5.2), in tag order.
fn response_elements(
    rq: &Command,
    command_field: u16,
    status: Status,
) -> Vec<DataElement<InMemDicomObject>> {
    vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            uid_value(&rq.affected_sop_class_uid),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [command_field]),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [rq.message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status.code()])),
    ]
}

pub fn echo_response(rq: &Command) -> Vec<u8> {
    encode(InMemDicomObject::command_from_element_iter(
        response_elements(rq, C_ECHO_RSP, Status::Success),
    ))
}

/// A C-STORE-RSP; `comment` becomes Error Comment (0000,0902) on failures (at most 64 chars).
pub fn store_response(rq: &Command, status: Status, comment: Option<&str>) -> Vec<u8> {
    let mut elements = response_elements(rq, C_STORE_RSP, status);
    if let (Some(c), false) = (comment, status == Status::Success) {
        let mut c: String = c
            .chars()
            .filter(|ch| ch.is_ascii() && !ch.is_control() && *ch != '\\')
            .take(64)
            .collect();
        if c.len() % 2 == 1 {
            c.push(' ');
        }
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(c),
        ));
    }
    elements.push(DataElement::new(
        tags::AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        uid_value(&rq.affected_sop_instance_uid),
    ));
    encode(InMemDicomObject::command_from_element_iter(elements))
}

/// A C-STORE-RQ command set (PS3.7 9.3.1.1), medium priority, a data set follows.
pub fn store_request(sop_class_uid: &str, sop_instance_uid: &str, message_id: u16) -> Vec<u8> {
    encode(InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            uid_value(sop_class_uid),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [C_STORE_RQ])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0x0000])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            uid_value(sop_instance_uid),
        ),
    ]))
}

/// What a C-STORE-RSP says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResponse {
    pub status: u16,
    /// Error Comment (0000,0902), trimmed, when present.
    pub comment: Option<String>,
}

impl StoreResponse {
    /// Success (0x0000) or a warning the object was stored with (0xB000 coercion, 0xB006
    /// elements discarded, 0xB007 data set does not match the SOP class).
    pub fn is_stored(&self) -> bool {
        matches!(self.status, 0x0000 | 0xB000 | 0xB006 | 0xB007)
    }
}

/// Parses a C-STORE-RSP command set (bounded and scanned like a request).
pub fn parse_store_response(bytes: &[u8]) -> Result<StoreResponse, CommandError> {
    let obj = read_command(bytes)?;
    let status = obj
        .element(tags::STATUS)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok())
        .ok_or(CommandError::Missing("Status (0000,0900)"))?;
    let comment = obj
        .element(tags::ERROR_COMMENT)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string());
    Ok(StoreResponse { status, comment })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_rq_with(extra: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut el = |g: u16, e: u16, v: &[u8]| {
            body.extend_from_slice(&g.to_le_bytes());
            body.extend_from_slice(&e.to_le_bytes());
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v);
        };
        el(0x0000, 0x0002, b"1.2.840.10008.1.1\0");
        el(0x0000, 0x0100, &C_ECHO_RQ.to_le_bytes());
        el(0x0000, 0x0110, &1u16.to_le_bytes());
        el(0x0000, 0x0800, &NO_DATA_SET.to_le_bytes());
        body.extend_from_slice(extra);
        body
    }

    #[test]
    fn hostile_command_sets_are_errors_not_crashes() {
        assert!(parse_command(&echo_rq_with(&[])).is_ok());
        // 3,000 nested undefined-length sequences (48 KB): overflowed the stack before
        let mut bomb = Vec::new();
        for _ in 0..3000 {
            bomb.extend_from_slice(&[0x08, 0, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            bomb.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert!(matches!(
            parse_command(&echo_rq_with(&bomb)),
            Err(CommandError::Scan(crate::scan::ScanError::TooDeep { .. }))
        ));
        // an Error Comment declaring 1 GiB with 34 KB present: allocated 1 GiB before
        let mut huge = vec![0x00, 0x00, 0x02, 0x09];
        huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
        huge.extend(vec![b'A'; 34 * 1024]);
        assert!(matches!(
            parse_command(&echo_rq_with(&huge)),
            Err(CommandError::Scan(crate::scan::ScanError::Truncated { .. }))
        ));
        // over the cap, however well formed
        let mut big = vec![0x00, 0x00, 0x02, 0x09];
        big.extend_from_slice(&(70_000u32).to_le_bytes());
        big.extend(vec![b'A'; 70_000]);
        assert!(matches!(
            parse_command(&echo_rq_with(&big)),
            Err(CommandError::TooLarge(_))
        ));
    }

    #[test]
    fn store_response_round_trips_with_group_length() {
        let rq = Command {
            command_field: C_STORE_RQ,
            message_id: 7,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            affected_sop_instance_uid: "1.2.3".into(),
            has_data_set: true,
        };
        let bytes = store_response(&rq, Status::OutOfResources, Some("disk below threshold"));
        let obj = InMemDicomObject::read_dataset_with_ts(bytes.as_slice(), implicit_le()).unwrap();
        let group_len = obj
            .element(tags::COMMAND_GROUP_LENGTH)
            .unwrap()
            .to_int::<u32>()
            .unwrap();
        assert_eq!(
            group_len as usize,
            bytes.len() - 12,
            "group length counts everything after itself"
        );
        assert_eq!(
            obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap(),
            0xA700
        );
        let u16_of = |tag| obj.element(tag).unwrap().to_int::<u16>().unwrap();
        let str_of = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO), 7);
        assert_eq!(u16_of(tags::COMMAND_FIELD), C_STORE_RSP);
        assert_eq!(u16_of(tags::COMMAND_DATA_SET_TYPE), NO_DATA_SET);
        assert_eq!(str_of(tags::AFFECTED_SOP_INSTANCE_UID), "1.2.3");
        assert_eq!(str_of(tags::ERROR_COMMENT), "disk below threshold");
    }

    #[test]
    fn store_request_and_response_round_trip() {
        let rq = parse_command(&store_request("1.2.840.10008.5.1.4.1.1.66.4", "1.2.3", 9)).unwrap();
        assert_eq!(rq.command_field, C_STORE_RQ);
        assert_eq!(rq.message_id, 9);
        assert!(rq.has_data_set);
        assert_eq!(rq.affected_sop_class_uid, "1.2.840.10008.5.1.4.1.1.66.4");
        assert_eq!(rq.affected_sop_instance_uid, "1.2.3");
        let rsp = parse_store_response(&store_response(
            &rq,
            Status::OutOfResources,
            Some("disk full"),
        ))
        .unwrap();
        assert_eq!(
            rsp,
            StoreResponse {
                status: 0xA700,
                comment: Some("disk full".into())
            }
        );
        assert!(!rsp.is_stored());
        let ok =
            parse_store_response(&store_response(&rq, Status::Success, Some("ignored"))).unwrap();
        assert_eq!(ok.comment, None, "no Error Comment on success");
        assert!(ok.is_stored());
    }
}
