//! conformance: black-box tests of the segnode binary against real DICOM peers (see tests/).
#![forbid(unsafe_code)]
