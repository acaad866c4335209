//! A cheap structural pre-scan of received DICOM bytes, run before any parser builds an
//! object from them.
//!
//! dicom-rs parses sequences recursively and allocates element values by their declared
//! length. Bytes from the network or from an upload are therefore scanned first, without
//! recursion and without allocating by any declared length:
//! - sequence nesting deeper than [`Limits::max_depth`] is refused (a nesting bomb would
//!   otherwise overflow the parser's stack and abort the process);
//! - an element, item or fragment longer than the bytes present (or than its enclosing
//!   defined-length item or sequence) is refused, so memory follows the bytes received,
//!   never a declared length; this is also how a truncated object is recognised;
//! - a data set that ends inside an undefined-length sequence or item is refused (truncated);
//! - a deflated data set is inflated into memory up to [`Limits::max_inflated_bytes`] only.
//!
//! The scanner lives in `staging` because both the listener (`scp`: command sets and received
//! instances) and the worker (`segmenter`: stored instances and uploads) need it and both
//! depend on this crate, not on each other.
//!
//! It follows dicom-rs's own reading rules where they matter: in Implicit VR a defined-length
//! element is a sequence only when the standard dictionary says SQ; an undefined-length element
//! is a sequence, except Pixel Data, whose undefined length means encapsulated fragments, and
//! (in Explicit VR) an undefined-length UN, whose content is read as Implicit VR Little Endian.

use std::io::Read;

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Bounds applied by the scan.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences nested deeper than this are refused.
    pub max_depth: usize,
    /// A deflated data set inflating to more than this is refused.
    pub max_inflated_bytes: u64,
}

/// Nesting depth no real object needs (the deepest in the standard's IODs is about 6).
pub const DEFAULT_MAX_DEPTH: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_inflated_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// Why a byte stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("sequences nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("truncated: {what} at byte {offset} declares {declared} bytes, {available} present")]
    Truncated {
        what: String,
        offset: u64,
        declared: u64,
        available: u64,
    },
    #[error("truncated: the data set ends inside {0}")]
    Unterminated(&'static str),
    #[error("inflated data set larger than the {limit} byte limit")]
    InflatedTooLarge { limit: u64 },
    #[error("malformed: {0}")]
    Malformed(String),
}

/// How a data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

/// The transfer syntax UIDs whose data set encoding differs from Explicit VR Little Endian
/// (every encapsulated syntax encodes its data set in Explicit VR Little Endian).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// What the scan learnt about a Part-10 object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part10Summary {
    /// Transfer Syntax UID from the file meta information, without padding.
    pub transfer_syntax: String,
    /// Deepest sequence nesting seen.
    pub max_depth: usize,
    /// The identifying UIDs of the top-level data set, as the scan passed them.
    pub uids: TopLevelUids,
}

/// The values of four top-level elements, without their padding (NUL, spaces) and surrounding
/// blanks; `None` when absent or empty. Read off the bytes the scan already walks, so that
/// identifying an instance needs no second parse of its header (a dicom-object parse, on the
/// acknowledgement path of every C-STORE; bench/ingest/RESULTS.md has what it cost). Not
/// validated here: they are UIDs only once `dicom_values::Uid` says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopLevelUids {
    /// (0020,000D)
    pub study: Option<String>,
    /// (0020,000E)
    pub series: Option<String>,
    /// (0008,0018)
    pub sop_instance: Option<String>,
    /// (0008,0016)
    pub sop_class: Option<String>,
}

/// The top-level elements `TopLevelUids` holds, in its field order.
const IDENTIFYING: [(u16, u16); 4] = [
    (0x0020, 0x000D),
    (0x0020, 0x000E),
    (0x0008, 0x0018),
    (0x0008, 0x0016),
];

/// Where the values of [`IDENTIFYING`] sit in the scanned bytes.
type Spans = [Option<(usize, usize)>; 4];

impl TopLevelUids {
    fn from_spans(bytes: &[u8], spans: &Spans) -> Self {
        let text = |i: usize| {
            spans[i].and_then(|(from, to)| {
                let s = String::from_utf8_lossy(&bytes[from..to]);
                dicom_values::trimmed(&s).map(str::to_string)
            })
        };
        TopLevelUids {
            study: text(0),
            series: text(1),
            sop_instance: text(2),
            sop_class: text(3),
        }
    }
}

/// Scans a data set (no preamble, no file meta) in `encoding`.
pub fn scan_dataset(bytes: &[u8], encoding: Encoding, limits: &Limits) -> Result<usize, ScanError> {
    Scanner {
        bytes,
        limits,
        base: 0,
    }
    .run(encoding)
    .map(|(depth, _)| depth)
}

/// Scans a Part-10 object: the 128-byte preamble and "DICM" (or "DICM" at the start), the file
/// meta group in Explicit VR Little Endian, then the data set in its transfer syntax.
pub fn scan_part10(bytes: &[u8], limits: &Limits) -> Result<Part10Summary, ScanError> {
    let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        return Err(ScanError::Malformed(
            "no DICM prefix: not a Part-10 object".into(),
        ));
    };
    let (meta_end, transfer_syntax) = scan_meta(bytes, start)?;
    let body = &bytes[meta_end..];
    let (depth, uids) = match transfer_syntax.as_str() {
        DEFLATED_EXPLICIT_VR_LE => {
            let inflated = inflate_capped(body, limits.max_inflated_bytes)?;
            let (depth, spans) = Scanner {
                bytes: &inflated,
                limits,
                base: 0,
            }
            .run(Encoding::ExplicitLittle)?;
            (depth, TopLevelUids::from_spans(&inflated, &spans))
        }
        ts => {
            let (depth, spans) = Scanner {
                bytes: body,
                limits,
                base: meta_end as u64,
            }
            .run(encoding_of(ts))?;
            (depth, TopLevelUids::from_spans(body, &spans))
        }
    };
    Ok(Part10Summary {
        transfer_syntax,
        max_depth: depth,
        uids,
    })
}

/// The data set encoding of a (non-deflated) transfer syntax.
pub fn encoding_of(transfer_syntax: &str) -> Encoding {
    match transfer_syntax.trim_end_matches(['\0', ' ']) {
        IMPLICIT_VR_LE => Encoding::ImplicitLittle,
        EXPLICIT_VR_BE => Encoding::ExplicitBig,
        _ => Encoding::ExplicitLittle,
    }
}

/// Raw deflate (PS3.5 A.5), inflated into memory but never past `limit` bytes.
pub fn inflate_capped(deflated: &[u8], limit: u64) -> Result<Vec<u8>, ScanError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ScanError::Malformed(format!("deflated data set: {e}")))?;
    if out.len() as u64 > limit {
        return Err(ScanError::InflatedTooLarge { limit });
    }
    Ok(out)
}

/// The file meta group: explicit VR LE elements of group 0002. Returns where the data set
/// starts and the transfer syntax.
fn scan_meta(bytes: &[u8], start: usize) -> Result<(usize, String), ScanError> {
    let mut pos = start;
    let mut ts = None;
    loop {
        if bytes.len() - pos < 8 {
            break;
        }
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let vr = read_as([bytes[pos + 4], bytes[pos + 5]]);
        let (len, header) = if long_length_vr(vr) {
            if bytes.len() - pos < 12 {
                return Err(truncated(
                    "file meta element header",
                    pos,
                    12,
                    bytes.len() - pos,
                ));
            }
            (
                u32::from_le_bytes([
                    bytes[pos + 8],
                    bytes[pos + 9],
                    bytes[pos + 10],
                    bytes[pos + 11],
                ]),
                12,
            )
        } else {
            (
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as u32,
                8,
            )
        };
        if len == u32::MAX {
            return Err(ScanError::Malformed(
                "undefined length in the file meta information".into(),
            ));
        }
        let tag = (group, element);
        check_value_length(tag, element_vr(tag, Some(vr)), len)?;
        let value_at = pos + header;
        let available = bytes.len() - value_at;
        if len as usize > available {
            return Err(truncated(
                &format!("file meta element (0002,{element:04X})"),
                pos,
                len as u64,
                available,
            ));
        }
        if element == 0x0010 {
            let raw = &bytes[value_at..value_at + len as usize];
            ts = Some(
                String::from_utf8_lossy(raw)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        pos = value_at + len as usize;
    }
    let ts = ts.ok_or_else(|| {
        ScanError::Malformed("file meta information lacks Transfer Syntax UID (0002,0010)".into())
    })?;
    Ok((pos, ts))
}

fn truncated(what: &str, offset: usize, declared: u64, available: usize) -> ScanError {
    ScanError::Truncated {
        what: what.to_string(),
        offset: offset as u64,
        declared,
        available: available as u64,
    }
}

/// The VRs with a 2-byte length in Explicit VR (PS3.5 7.1.2, Table 7.1-2); every other VR has a
/// 2-byte reserved field and a 4-byte length.
const SHORT_LENGTH_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// The VRs with a 4-byte length (PS3.5 7.1.2).
const LONG_LENGTH_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// The VR an Explicit VR element is read as: its own when it is one of PS3.5's, UN otherwise.
/// That is how dicom-rs (`VR::from_binary(..).unwrap_or(VR::UN)`) and dcmtk read bytes that name
/// no VR, and it keeps the scan and the parse that follows it in step: a scan that walked an
/// unknown VR with a 2-byte length admitted instances whose next bytes dicom-rs then took for a
/// 4-byte length of up to 4 GiB, and spent seconds allocating for it before failing.
fn read_as(vr: [u8; 2]) -> [u8; 2] {
    if SHORT_LENGTH_VRS.contains(&&vr) || LONG_LENGTH_VRS.contains(&&vr) {
        vr
    } else {
        *b"UN"
    }
}

/// Whether an Explicit VR element of this VR has a 2-byte reserved field and a 4-byte length
/// (PS3.5 7.1.2): every VR but the short ones, bytes that name no VR included (read as UN).
fn long_length_vr(vr: [u8; 2]) -> bool {
    !SHORT_LENGTH_VRS.contains(&&vr)
}

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const UNDEFINED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A data set (the top level or an item's content): elements until its end.
    DataSet,
    /// A sequence: items until its end or a sequence delimiter.
    Sequence,
    /// Encapsulated pixel data: fragment items until a sequence delimiter.
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    /// Where a defined-length container ends; `None`: at its delimiter.
    end: Option<usize>,
    encoding: Encoding,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    limits: &'a Limits,
    /// Offset of `bytes` in the whole object, for messages.
    base: u64,
}

impl Scanner<'_> {
    fn u16_at(&self, pos: usize, enc: Encoding) -> u16 {
        let b = [self.bytes[pos], self.bytes[pos + 1]];
        match enc {
            Encoding::ExplicitBig => u16::from_be_bytes(b),
            _ => u16::from_le_bytes(b),
        }
    }

    fn u32_at(&self, pos: usize, enc: Encoding) -> u32 {
        let b = [
            self.bytes[pos],
            self.bytes[pos + 1],
            self.bytes[pos + 2],
            self.bytes[pos + 3],
        ];
        match enc {
            Encoding::ExplicitBig => u32::from_be_bytes(b),
            _ => u32::from_le_bytes(b),
        }
    }

    /// `at`: where the element (or header) starts; `value_at`: where its value would start.
    fn truncated(
        &self,
        what: String,
        at: usize,
        value_at: usize,
        declared: u64,
        limit: usize,
    ) -> ScanError {
        ScanError::Truncated {
            what,
            offset: self.base + at as u64,
            declared,
            available: limit.saturating_sub(value_at) as u64,
        }
    }

    /// One sequence deeper, within the limit.
    fn deeper(&self, depth: usize) -> Result<usize, ScanError> {
        if depth + 1 > self.limits.max_depth {
            return Err(ScanError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        Ok(depth + 1)
    }

    /// Returns the deepest sequence nesting seen and where the top-level identifying values are.
    fn run(&self, encoding: Encoding) -> Result<(usize, Spans), ScanError> {
        let mut spans: Spans = [None; 4];
        let mut stack = vec![Frame {
            kind: Kind::DataSet,
            end: Some(self.bytes.len()),
            encoding,
        }];
        let mut depth = 0usize;
        let mut deepest = 0usize;
        let mut pos = 0usize;
        loop {
            // close every defined-length container that ends here
            while let Some(top) = stack.last() {
                match top.end {
                    Some(end) if pos >= end && stack.len() > 1 => {
                        if top.kind == Kind::Sequence {
                            depth -= 1;
                        }
                        stack.pop();
                    }
                    _ => break,
                }
            }
            let top = *stack.last().expect("the top level stays");
            // the nearest enclosing defined end bounds everything inside
            let limit = stack
                .iter()
                .rev()
                .find_map(|f| f.end)
                .unwrap_or(self.bytes.len());
            if stack.len() == 1 && pos >= limit {
                return Ok((deepest, spans));
            }
            if pos >= self.bytes.len() {
                return Err(ScanError::Unterminated(match top.kind {
                    Kind::DataSet => "an item",
                    Kind::Sequence => "a sequence",
                    Kind::Fragments => "encapsulated pixel data",
                }));
            }
            let enc = top.encoding;
            if limit - pos < 8 {
                return Err(self.truncated("an element header".into(), pos, pos, 8, limit));
            }
            let tag = (self.u16_at(pos, enc), self.u16_at(pos + 2, enc));
            match top.kind {
                Kind::Sequence | Kind::Fragments => {
                    let len = self.u32_at(pos + 4, enc);
                    pos += 8;
                    match tag {
                        SEQUENCE_END if top.end.is_none() => {
                            if top.kind == Kind::Sequence {
                                depth -= 1;
                            }
                            stack.pop();
                        }
                        ITEM if top.kind == Kind::Fragments => {
                            if len == UNDEFINED || len as usize > limit - pos {
                                return Err(self.truncated(
                                    "a pixel data fragment".into(),
                                    pos - 8,
                                    pos,
                                    len as u64,
                                    limit,
                                ));
                            }
                            pos += len as usize;
                        }
                        ITEM => {
                            let end = if len == UNDEFINED {
                                None
                            } else if len as usize > limit - pos {
                                return Err(self.truncated(
                                    "an item".into(),
                                    pos - 8,
                                    pos,
                                    len as u64,
                                    limit,
                                ));
                            } else {
                                Some(pos + len as usize)
                            };
                            stack.push(Frame {
                                kind: Kind::DataSet,
                                end,
                                encoding: enc,
                            });
                        }
                        (g, e) => {
                            return Err(ScanError::Malformed(format!(
                                "({g:04X},{e:04X}) inside a sequence where an item was expected"
                            )))
                        }
                    }
                }
                Kind::DataSet => {
                    if tag == ITEM_END {
                        if top.end.is_some() || stack.len() == 1 {
                            return Err(ScanError::Malformed(
                                "item delimiter outside an undefined-length item".into(),
                            ));
                        }
                        pos += 8;
                        stack.pop();
                        continue;
                    }
                    if tag.0 == 0xFFFE {
                        return Err(ScanError::Malformed(format!(
                            "delimiter ({:04X},{:04X}) where an element was expected",
                            tag.0, tag.1
                        )));
                    }
                    let (vr, len, header) = match enc {
                        Encoding::ImplicitLittle => (None, self.u32_at(pos + 4, enc), 8),
                        _ => {
                            let vr = read_as([self.bytes[pos + 4], self.bytes[pos + 5]]);
                            if long_length_vr(vr) {
                                if limit - pos < 12 {
                                    return Err(self.truncated(
                                        "an element header".into(),
                                        pos,
                                        pos,
                                        12,
                                        limit,
                                    ));
                                }
                                (Some(vr), self.u32_at(pos + 8, enc), 12)
                            } else {
                                (Some(vr), self.u16_at(pos + 6, enc) as u32, 8)
                            }
                        }
                    };
                    let at = pos;
                    pos += header;
                    if len == UNDEFINED {
                        let (kind, inner) = if tag == PIXEL_DATA {
                            (Kind::Fragments, enc)
                        } else if vr == Some(*b"UN") {
                            (Kind::Sequence, Encoding::ImplicitLittle)
                        } else {
                            (Kind::Sequence, enc)
                        };
                        if kind == Kind::Sequence {
                            depth = self.deeper(depth)?;
                            deepest = deepest.max(depth);
                        }
                        stack.push(Frame {
                            kind,
                            end: None,
                            encoding: inner,
                        });
                        continue;
                    }
                    if len as usize > limit - pos {
                        return Err(self.truncated(
                            format!("element ({:04X},{:04X})", tag.0, tag.1),
                            at,
                            pos,
                            len as u64,
                            limit,
                        ));
                    }
                    let read_vr = element_vr(tag, vr);
                    let is_sequence = read_vr == Some(VR::SQ);
                    if !is_sequence {
                        check_value_length(tag, read_vr, len)?;
                    }
                    if stack.len() == 1 && !is_sequence {
                        if let Some(i) = IDENTIFYING.iter().position(|&t| t == tag) {
                            spans[i] = Some((pos, pos + len as usize));
                        }
                    }
                    if is_sequence {
                        depth = self.deeper(depth)?;
                        deepest = deepest.max(depth);
                        stack.push(Frame {
                            kind: Kind::Sequence,
                            end: Some(pos + len as usize),
                            encoding: enc,
                        });
                    } else {
                        pos += len as usize;
                    }
                }
            }
        }
    }
}

/// The VR dicom-rs reads a defined-length element as: the Explicit VR one ([`read_as`] has made
/// bytes that name no VR UN); in Implicit VR, OW for Pixel Data and Overlay Data and the
/// dictionary's otherwise, `None` for a tag the dictionary does not know (read as bytes).
fn element_vr(tag: (u16, u16), explicit: Option<[u8; 2]>) -> Option<VR> {
    match explicit {
        Some(vr) => VR::from_binary(vr),
        None if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) => Some(VR::OW),
        None => StandardDataDictionary
            .by_tag(Tag(tag.0, tag.1))
            .map(|e| e.vr.relaxed()),
    }
}

/// The size of one value of the binary VRs whose values dicom-rs reads by count.
fn binary_value_size(vr: VR) -> Option<u32> {
    match vr {
        VR::OW | VR::SS | VR::US => Some(2),
        VR::AT | VR::FL | VR::OF | VR::OL | VR::SL | VR::UL => Some(4),
        VR::FD | VR::OD | VR::OV | VR::SV | VR::UV => Some(8),
        _ => None,
    }
}

/// Refuses a binary element whose length is not a whole number of values (PS3.5 6.2: a UL value
/// is 4 bytes, and so on). dicom-rs reads `length / size` values of such an element but counts
/// the whole length as read, so it parses what follows from the wrong offset: in the property
/// tests, one bit flipped a US into a UL of length 2 and dicom-rs then spent 5 s allocating for
/// lengths read out of pixel values before failing. `vr` is [`element_vr`]'s.
fn check_value_length(tag: (u16, u16), vr: Option<VR>, len: u32) -> Result<(), ScanError> {
    match vr.and_then(|vr| binary_value_size(vr).map(|size| (vr, size))) {
        Some((vr, size)) if !len.is_multiple_of(size) => Err(ScanError::Malformed(format!(
            "({:04X},{:04X}) {} with a length of {len}, not a multiple of {size}",
            tag.0,
            tag.1,
            vr.to_string()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
