//! A study from a folder, offline (`segnode segment DIR`, `segnode demo`): every DICOM Part-10 file
//! under it, parsed through the same bounded scan as received instances, and the seed that gives the
//! same study and model the same SEG SOP Instance UID.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use sha2::{Digest, Sha256};

use crate::error::SegmentError;
use crate::study::{parse_instance, text};

/// A file's path and bytes.
pub type Part10File = (PathBuf, Vec<u8>);

/// Why a study folder cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no DICOM Part-10 files under {}", .0.display())]
    Empty(PathBuf),
    #[error("{} is more than {MAX_DEPTH} folders deep; point segnode at the study's own folder", .0.display())]
    TooDeep(PathBuf),
    /// A Part-10 file the bounded scan or dicom-rs refuses (it names the file).
    #[error(transparent)]
    Instance(#[from] SegmentError),
}

/// How deep [`part10_files`] descends below the folder it is given. Exported studies nest two to
/// four levels (patient/study/series/instance); the bound keeps a pathological tree from recursing
/// without end.
pub const MAX_DEPTH: usize = 16;

fn files_under(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), FolderError> {
    let read = |source| FolderError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for e in std::fs::read_dir(dir).map_err(read)? {
        let e = e.map_err(read)?;
        let p = e.path();
        // The entry's own type: a symbolic link to a folder is not followed (no loops); one to a
        // file is read like the file.
        let kind = e.file_type().map_err(read)?;
        if kind.is_dir() {
            if depth >= MAX_DEPTH {
                return Err(FolderError::TooDeep(p));
            }
            files_under(&p, depth + 1, out)?;
        } else if kind.is_file() || (kind.is_symlink() && p.is_file()) {
            out.push(p);
        }
    }
    Ok(())
}

/// Every DICOM Part-10 file under `dir` (recursively, at most [`MAX_DEPTH`] folders down, links to
/// folders not followed; sorted by path, DICOMDIR excluded) with its bytes, and how many other files
/// were skipped.
pub fn part10_files(dir: &Path) -> Result<(Vec<Part10File>, usize), FolderError> {
    let mut files = Vec::new();
    files_under(dir, 0, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    let mut skipped = 0;
    for f in files {
        let bytes = std::fs::read(&f).map_err(|source| FolderError::Read {
            path: f.clone(),
            source,
        })?;
        let is_part10 = bytes.len() > 132 && &bytes[128..132] == b"DICM";
        if !is_part10 || f.file_name().is_some_and(|n| n == "DICOMDIR") {
            skipped += 1;
            continue;
        }
        out.push((f, bytes));
    }
    Ok((out, skipped))
}

/// Parses Part-10 files read by [`part10_files`].
pub fn parse_files(files: &[Part10File]) -> Result<Vec<DefaultDicomObject>, FolderError> {
    Ok(files
        .iter()
        .map(|(f, bytes)| parse_instance(bytes, &f.display().to_string()))
        .collect::<Result<_, _>>()?)
}

/// Every DICOM Part-10 file under `dir`, parsed, and how many files were not DICOM; an error when
/// there is none.
pub fn read_study_folder(dir: &Path) -> Result<(Vec<DefaultDicomObject>, usize), FolderError> {
    let (files, skipped) = part10_files(dir)?;
    if files.is_empty() {
        return Err(FolderError::Empty(dir.to_path_buf()));
    }
    Ok((parse_files(&files)?, skipped))
}

/// The SOP Instance UID of a parsed instance, padding removed.
pub fn sop_instance_uid(o: &DefaultDicomObject) -> Option<String> {
    text(o, tags::SOP_INSTANCE_UID)
}

/// A stable seed for the SEG UID: the same study (its SOP Instance UIDs) and model (`name version`)
/// give the same SEG SOP Instance UID, whatever the files' order.
pub fn offline_seed(instances: &[DefaultDicomObject], model: &str) -> String {
    let mut uids: Vec<String> = instances.iter().filter_map(sop_instance_uid).collect();
    uids.sort();
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    for u in &uids {
        h.update(b"\n");
        h.update(u.as_bytes());
    }
    format!("segment:{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_dicom_is_an_error_naming_it_and_other_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not DICOM").unwrap();
        let (files, skipped) = part10_files(dir.path()).unwrap();
        assert!(files.is_empty());
        assert_eq!(skipped, 1);
        let e = read_study_folder(dir.path()).unwrap_err();
        assert!(matches!(e, FolderError::Empty(_)), "{e}");
        let missing = dir.path().join("missing");
        assert!(matches!(
            part10_files(&missing),
            Err(FolderError::Read { .. })
        ));
    }

    #[test]
    fn a_link_loop_is_not_followed_and_a_tree_too_deep_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("study");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(inner.join("a.dcm"), b"not DICOM either").unwrap();
        std::os::unix::fs::symlink(dir.path(), inner.join("loop")).unwrap();
        std::os::unix::fs::symlink(inner.join("a.dcm"), inner.join("b.dcm")).unwrap();
        let (files, skipped) = part10_files(dir.path()).unwrap();
        assert!(files.is_empty());
        assert_eq!(
            skipped, 2,
            "the file and the link to it, not the folder link"
        );

        let mut deep = dir.path().join("deep");
        for i in 0..=MAX_DEPTH {
            deep = deep.join(i.to_string());
        }
        std::fs::create_dir_all(&deep).unwrap();
        let e = part10_files(dir.path()).unwrap_err();
        assert!(matches!(e, FolderError::TooDeep(_)), "{e}");
    }
}
