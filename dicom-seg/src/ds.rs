//! Small helpers to put and get attributes of an in-memory data set.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;

pub(crate) type Obj = InMemDicomObject;

pub(crate) fn put_str(o: &mut Obj, tag: Tag, vr: VR, s: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
}

pub(crate) fn put_empty(o: &mut Obj, tag: Tag, vr: VR) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
}

/// Puts `s` or, when `None`, an empty (type 2) element.
pub(crate) fn put_opt_str(o: &mut Obj, tag: Tag, vr: VR, s: Option<&str>) {
    match s {
        Some(s) => put_str(o, tag, vr, s),
        None => put_empty(o, tag, vr),
    }
}

pub(crate) fn put_strs(o: &mut Obj, tag: Tag, vr: VR, v: Vec<String>) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::Strs(v.into())));
}

pub(crate) fn put_u16(o: &mut Obj, tag: Tag, v: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

pub(crate) fn put_u16s(o: &mut Obj, tag: Tag, v: &[u16]) {
    o.put(DataElement::new(
        tag,
        VR::US,
        PrimitiveValue::U16(v.iter().copied().collect()),
    ));
}

pub(crate) fn put_u32s(o: &mut Obj, tag: Tag, v: &[u32]) {
    o.put(DataElement::new(
        tag,
        VR::UL,
        PrimitiveValue::U32(v.iter().copied().collect()),
    ));
}

pub(crate) fn put_tag(o: &mut Obj, tag: Tag, v: Tag) {
    o.put(DataElement::new(tag, VR::AT, PrimitiveValue::from(v)));
}

pub(crate) fn put_seq(o: &mut Obj, tag: Tag, items: Vec<Obj>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

pub(crate) fn put_ds(o: &mut Obj, tag: Tag, v: &[f64]) {
    put_strs(o, tag, VR::DS, v.iter().map(|x| format_ds(*x)).collect());
}

/// Formats a number as a DS value of at most 16 characters, as exact as that allows: the shortest
/// decimal that reads back as the same f64 whenever that fits.
pub(crate) fn format_ds(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let s = format!("{x}");
    if s.len() <= 16 {
        return s;
    }
    let e = format!("{x:e}");
    if e.len() <= 16 {
        return e;
    }
    // Reduce precision until it fits: fixed notation for moderate magnitudes, else scientific.
    let mag = x.abs().log10().floor() as i32;
    if (-4..15).contains(&mag) {
        let int_len = if mag >= 0 { mag as usize + 1 } else { 1 };
        let sign = usize::from(x < 0.0);
        let decimals = 16usize.saturating_sub(int_len + sign + 1);
        let s = format!("{x:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return s;
        }
    }
    for p in (0..16).rev() {
        let s = format!("{x:.p$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{x:.0e}")
}

pub(crate) fn code_item(c: &crate::code::CodedConcept) -> Obj {
    use dicom_dictionary_std::tags;
    let mut o = Obj::new_empty();
    put_str(&mut o, tags::CODE_VALUE, VR::SH, &c.value);
    put_str(&mut o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, &c.scheme);
    put_str(&mut o, tags::CODE_MEANING, VR::LO, &c.meaning);
    o
}

pub(crate) fn get_str(o: &Obj, tag: Tag) -> Option<String> {
    let s = o.get(tag)?.to_str().ok()?;
    dicom_values::trimmed(&s).map(str::to_string)
}

pub(crate) fn get_f64s(o: &Obj, tag: Tag) -> Option<Vec<f64>> {
    // Through the text form, so that a multi-valued DS held as one backslash-joined string (as built in
    // memory) reads the same as one parsed from a file.
    let s = o.get(tag)?.to_str().ok()?;
    let v: Vec<f64> = s
        .trim_end_matches('\0')
        .split('\\')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    if !v.is_empty() && v.iter().all(|x| x.is_finite()) {
        Some(v)
    } else {
        None
    }
}

pub(crate) fn get_u32(o: &Obj, tag: Tag) -> Option<u32> {
    o.get(tag)?.to_int::<u32>().ok()
}

pub(crate) fn get_u32s(o: &Obj, tag: Tag) -> Option<Vec<u32>> {
    o.get(tag)?.to_multi_int::<u32>().ok()
}

pub(crate) fn items(o: &Obj, tag: Tag) -> Option<&[Obj]> {
    o.get(tag)?.items()
}

pub(crate) fn first_item(o: &Obj, tag: Tag) -> Option<&Obj> {
    items(o, tag)?.first()
}

pub(crate) fn get_code(o: &Obj, tag: Tag) -> Option<crate::code::CodedConcept> {
    use dicom_dictionary_std::tags;
    let it = first_item(o, tag)?;
    Some(crate::code::CodedConcept::new(
        get_str(it, tags::CODE_VALUE).or_else(|| get_str(it, tags::LONG_CODE_VALUE))?,
        get_str(it, tags::CODING_SCHEME_DESIGNATOR).unwrap_or_default(),
        get_str(it, tags::CODE_MEANING).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::format_ds;

    #[test]
    fn ds_fits_and_round_trips_when_possible() {
        for x in [
            0.0,
            1.0,
            -120.5,
            0.1,
            -119.53125,
            6.123233995736766e-17,
            std::f64::consts::FRAC_1_SQRT_2,
            -std::f64::consts::FRAC_1_SQRT_2,
            123456.7890123456,
            1e-300,
            -9.87654321e20,
        ] {
            let s = format_ds(x);
            assert!(s.len() <= 16, "{x} -> {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - x).abs() <= x.abs() * 1e-9, "{x} -> {s}");
        }
        assert_eq!(format_ds(-120.5), "-120.5");
        assert_eq!(format_ds(0.1), "0.1");
    }
}
