//! Coded entries (PS3.3 8.8 Code Sequence Macro) and display colours.

use crate::error::{Result, SegError};

/// A coded concept: code value, coding scheme designator, code meaning.
///
/// Any scheme can be read back from a SEG; the builder refuses the retired `SRT` scheme (SNOMED CT
/// concepts are written with `SCT` since 2019).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodedConcept {
    /// Code Value (0008,0100).
    pub value: String,
    /// Coding Scheme Designator (0008,0102), e.g. `SCT`, `DCM`, `NCIt`.
    pub scheme: String,
    /// Code Meaning (0008,0104).
    pub meaning: String,
}

impl CodedConcept {
    /// A concept in any scheme.
    pub fn new(
        value: impl Into<String>,
        scheme: impl Into<String>,
        meaning: impl Into<String>,
    ) -> Self {
        CodedConcept {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }
    /// A SNOMED CT concept (scheme `SCT`).
    pub fn sct(value: impl Into<String>, meaning: impl Into<String>) -> Self {
        Self::new(value, "SCT", meaning)
    }
    /// A DICOM-defined concept (scheme `DCM`).
    pub fn dcm(value: impl Into<String>, meaning: impl Into<String>) -> Self {
        Self::new(value, "DCM", meaning)
    }
    /// An NCI Thesaurus concept (scheme `NCIt`).
    pub fn ncit(value: impl Into<String>, meaning: impl Into<String>) -> Self {
        Self::new(value, "NCIt", meaning)
    }

    /// Checks that the concept can be written: non-empty value, scheme and meaning within their VRs
    /// (SH 16 characters for value and scheme, LO 64 for meaning) and no retired `SRT` scheme.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason| {
            Err(SegError::InvalidCode {
                value: self.value.clone(),
                scheme: self.scheme.clone(),
                meaning: self.meaning.clone(),
                reason,
            })
        };
        if self.value.trim().is_empty()
            || self.scheme.trim().is_empty()
            || self.meaning.trim().is_empty()
        {
            return bad("value, scheme and meaning must all be non-empty");
        }
        if self.value.chars().count() > 16 {
            return bad(
                "code value longer than 16 characters (use Long Code Value, not supported)",
            );
        }
        if self.scheme.chars().count() > 16 {
            return bad("coding scheme designator longer than 16 characters");
        }
        if self.meaning.chars().count() > 64 {
            return bad("code meaning longer than 64 characters");
        }
        if self.scheme == "SRT" {
            return bad("the SRT scheme is retired: use SCT for SNOMED CT concepts");
        }
        if self.value.contains('\\') || self.scheme.contains('\\') || self.meaning.contains('\\') {
            return bad("backslash is not allowed");
        }
        Ok(())
    }
}

/// Well-known concepts for brain-tumour segments (CID 7150/7151 category, CID 7168/7169 types as
/// BraTS-style DICOM-SEGs use them) and algorithm families.
pub mod codes {
    use super::CodedConcept;

    /// Category: SCT 49755003 "Morphologically abnormal structure".
    pub fn morphologically_abnormal_structure() -> CodedConcept {
        CodedConcept::sct("49755003", "Morphologically abnormal structure")
    }
    /// Category: SCT 85756007 "Tissue".
    pub fn tissue() -> CodedConcept {
        CodedConcept::sct("85756007", "Tissue")
    }
    /// Category: SCT 123037004 "Anatomical Structure".
    pub fn anatomical_structure() -> CodedConcept {
        CodedConcept::sct("123037004", "Anatomical Structure")
    }
    /// Type: SCT 6574001 "Necrosis".
    pub fn necrosis() -> CodedConcept {
        CodedConcept::sct("6574001", "Necrosis")
    }
    /// Type: SCT 79654002 "Edema".
    pub fn edema() -> CodedConcept {
        CodedConcept::sct("79654002", "Edema")
    }
    /// Type: NCIt C113842 "Enhancing Lesion".
    pub fn enhancing_lesion() -> CodedConcept {
        CodedConcept::ncit("C113842", "Enhancing Lesion")
    }
    /// Type: SCT 108369006 "Neoplasm" (e.g. whole tumour).
    pub fn neoplasm() -> CodedConcept {
        CodedConcept::sct("108369006", "Neoplasm")
    }
    /// Algorithm family: DCM 123109 "Artificial Intelligence".
    pub fn artificial_intelligence() -> CodedConcept {
        CodedConcept::dcm("123109", "Artificial Intelligence")
    }
}

/// A Recommended Display CIELab Value (0062,000D) as stored in DICOM: L*, a*, b* scaled to 0..=65535
/// (L* 0..100, a* and b* -128..127 shifted by 128; PS3.3 C.10.7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DicomLab(pub [u16; 3]);

impl DicomLab {
    /// Converts an sRGB colour (0..=255 per channel, D65 white point, the same convention as highdicom and
    /// pixelmed) to the DICOM-scaled CIELab triplet.
    pub fn from_srgb(r: u8, g: u8, b: u8) -> Self {
        let lin = |c: u8| {
            let c = c as f64 / 255.0;
            if c > 0.04045 {
                ((c + 0.055) / 1.055).powf(2.4)
            } else {
                c / 12.92
            }
        };
        let (r, g, b) = (lin(r), lin(g), lin(b));
        let x = r * 0.4124 + g * 0.3576 + b * 0.1805;
        let y = r * 0.2126 + g * 0.7152 + b * 0.0722;
        let z = r * 0.0193 + g * 0.1192 + b * 0.9505;
        let f = |t: f64| {
            if t >= 8.856_451_679_035_631e-3 {
                t.cbrt()
            } else {
                (841.0 / 108.0) * t + 4.0 / 29.0
            }
        };
        let (fx, fy, fz) = (f(x / 0.95047), f(y), f(z / 1.08883));
        let l = 116.0 * fy - 16.0;
        let a = 500.0 * (fx - fy);
        let bb = 200.0 * (fy - fz);
        Self::from_lab(l, a, bb)
    }

    /// Scales CIELab (L* 0..100, a*/b* -128..127; clamped) to the DICOM encoding.
    pub fn from_lab(l: f64, a: f64, b: f64) -> Self {
        let sl = (l.clamp(0.0, 100.0) * 65535.0 / 100.0).round() as u16;
        let sab = |v: f64| ((v.clamp(-128.0, 127.0) + 128.0) * 65535.0 / 255.0).round() as u16;
        DicomLab([sl, sab(a), sab(b)])
    }

    /// The unscaled L*, a*, b*.
    pub fn to_lab(self) -> [f64; 3] {
        let [l, a, b] = self.0;
        [
            l as f64 * 100.0 / 65535.0,
            a as f64 * 255.0 / 65535.0 - 128.0,
            b as f64 * 255.0 / 65535.0 - 128.0,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_reference_colours() {
        // White is L*=100, a*=b*=0 -> 0xFFFF, 0x8080, 0x8080 (to the precision of the 4-digit sRGB
        // matrix, which highdicom and pixelmed use too).
        let [l, a, b] = DicomLab::from_srgb(255, 255, 255).0;
        assert_eq!(l, 65535);
        assert!(a.abs_diff(32896) <= 4 && b.abs_diff(32896) <= 4, "{a} {b}");
        assert_eq!(DicomLab::from_srgb(0, 0, 0).0, [0, 32896, 32896]);
        // sRGB red is about L*=53.24, a*=80.09, b*=67.20 (D65).
        let [l, a, b] = DicomLab::from_srgb(255, 0, 0).to_lab();
        assert!((l - 53.24).abs() < 0.05, "{l}");
        assert!((a - 80.09).abs() < 0.1, "{a}");
        assert!((b - 67.20).abs() < 0.1, "{b}");
    }

    #[test]
    fn srt_is_refused() {
        assert!(
            CodedConcept::new("M-01000", "SRT", "Morphologically Altered Structure")
                .validate()
                .is_err()
        );
        assert!(codes::necrosis().validate().is_ok());
        assert!(codes::enhancing_lesion().validate().is_ok());
        assert!(CodedConcept::sct("", "x").validate().is_err());
    }
}
