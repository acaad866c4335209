//! Bounds on what a peer can make the listener hold or parse, checked before dicom-rs sees
//! the bytes (see `dimse::scan` for the structural scan itself).

use std::path::Path;

use dimse::scan::{self, Limits, ScanError};

/// A command set larger than this ends the association (A-ABORT). Real C-STORE/C-ECHO
/// command sets are 100-300 bytes; PS3.7 sets no maximum.
pub use dimse::command::MAX_COMMAND_BYTES;

/// The scan limits for a received instance: the default depth, and a deflated data set may
/// not inflate past the object size limit.
pub fn instance_limits(max_object_bytes: u64) -> Limits {
    Limits {
        max_inflated_bytes: max_object_bytes,
        ..Limits::default()
    }
}

/// Scans a received Part-10 instance held in memory.
pub fn scan_instance(bytes: &[u8], limits: &Limits) -> Result<(), ScanError> {
    scan::scan_part10(bytes, limits).map(|_| ())
}

/// Scans a received Part-10 instance written to `path`, through a read-only mapping: only
/// the pages holding element headers are read, values (Pixel Data) are skipped.
pub fn scan_instance_file(path: &Path, limits: &Limits) -> Result<(), ScanFileError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Err(ScanFileError::Scan(ScanError::Malformed(
            "empty object".into(),
        )));
    }
    let map = Mapping::new(&file, len)?;
    scan_instance(map.bytes(), limits).map_err(ScanFileError::Scan)
}

#[derive(Debug, thiserror::Error)]
pub enum ScanFileError {
    #[error("{0}")]
    Scan(ScanError),
    #[error("cannot read the received object back: {0}")]
    Io(#[from] std::io::Error),
}

/// A private read-only mapping of a whole file (the crate's only `unsafe`).
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

#[allow(unsafe_code)]
impl Mapping {
    fn new(file: &std::fs::File, len: usize) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of a file we own; it is only read while
        // `Mapping` lives and unmapped in `drop`. The `.part` file is written by this
        // association alone and is complete (fsynced) before it is scanned.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

#[allow(unsafe_code)]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}
