//! A direct explicit-VR-little-endian encoder for the data sets this crate builds. dicom-object's
//! generic writer goes through a token stream (cloning every element); this one writes the same bytes
//! straight into a buffer. It declines (returns `None`) anything it does not handle, and the caller then
//! falls back to dicom-object. A test checks both give identical bytes.

use crate::ds::Obj;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::VR;

const UNDEFINED: u32 = 0xFFFF_FFFF;

fn tag_bytes(out: &mut Vec<u8>, group: u16, element: u16) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
}

fn long_header(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OW
            | VR::OF
            | VR::OD
            | VR::OL
            | VR::OV
            | VR::SQ
            | VR::UT
            | VR::UN
            | VR::UC
            | VR::UR
            | VR::SV
            | VR::UV
    )
}

fn is_text(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    )
}

/// Value bytes (unpadded) of a primitive value, or `None` when this encoder does not handle the
/// combination.
fn value_bytes(vr: VR, v: &PrimitiveValue, out: &mut Vec<u8>) -> Option<()> {
    match v {
        PrimitiveValue::Empty => {}
        PrimitiveValue::Str(s) if is_text(vr) => out.extend_from_slice(s.as_bytes()),
        PrimitiveValue::Strs(v) if is_text(vr) => {
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b'\\');
                }
                out.extend_from_slice(s.as_bytes());
            }
        }
        PrimitiveValue::U8(v) if matches!(vr, VR::OB | VR::UN) => out.extend_from_slice(v),
        PrimitiveValue::U16(v) if matches!(vr, VR::US | VR::OW) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PrimitiveValue::I16(v) if vr == VR::SS => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PrimitiveValue::U32(v) if matches!(vr, VR::UL | VR::OL) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PrimitiveValue::I32(v) if vr == VR::SL => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PrimitiveValue::F32(v) if matches!(vr, VR::FL | VR::OF) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PrimitiveValue::F64(v) if matches!(vr, VR::FD | VR::OD) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        PrimitiveValue::Tags(v) if vr == VR::AT => v.iter().for_each(|t| {
            out.extend_from_slice(&t.group().to_le_bytes());
            out.extend_from_slice(&t.element().to_le_bytes());
        }),
        _ => return None,
    }
    Some(())
}

/// Appends the encoding of `obj` (explicit VR little endian, sequences and items of undefined length)
/// to `out`; `None` if some element is not handled (then `out` holds garbage and must be discarded).
pub(crate) fn encode_dataset(obj: &Obj, out: &mut Vec<u8>) -> Option<()> {
    let mut scratch = Vec::new();
    for e in obj {
        let tag = e.header().tag;
        let vr = e.header().vr;
        match e.value() {
            Value::Primitive(p) => {
                scratch.clear();
                value_bytes(vr, p, &mut scratch)?;
                if scratch.len() % 2 == 1 {
                    scratch.push(match vr {
                        VR::UI | VR::OB | VR::UN => 0,
                        _ => b' ',
                    });
                }
                tag_bytes(out, tag.group(), tag.element());
                out.extend_from_slice(&vr.to_bytes());
                if long_header(vr) {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&u32::try_from(scratch.len()).ok()?.to_le_bytes());
                } else {
                    out.extend_from_slice(&u16::try_from(scratch.len()).ok()?.to_le_bytes());
                }
                out.extend_from_slice(&scratch);
            }
            Value::Sequence(seq) => {
                if vr != VR::SQ {
                    return None;
                }
                tag_bytes(out, tag.group(), tag.element());
                out.extend_from_slice(b"SQ\0\0");
                out.extend_from_slice(&UNDEFINED.to_le_bytes());
                for item in seq.items() {
                    tag_bytes(out, 0xFFFE, 0xE000);
                    out.extend_from_slice(&UNDEFINED.to_le_bytes());
                    encode_dataset(item, out)?;
                    tag_bytes(out, 0xFFFE, 0xE00D);
                    out.extend_from_slice(&0u32.to_le_bytes());
                }
                tag_bytes(out, 0xFFFE, 0xE0DD);
                out.extend_from_slice(&0u32.to_le_bytes());
            }
            Value::PixelSequence(_) => return None,
        }
    }
    Some(())
}
