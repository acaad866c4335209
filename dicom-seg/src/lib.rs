//! dicom-seg
