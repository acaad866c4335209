//! Which series feeds which input channel: the manifest's Series Description rules, then its
//! attribute fallbacks (model.toml, [selection] and [[inputs]]).

use crate::error::SegmentError;
use crate::manifest::{ChannelRule, Fallback, Manifest};
use crate::study::{Series, Study};

/// How a series was chosen for a channel (logged, and shown by `segnode segment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedBy {
    Description,
    Fallback,
}

/// For each input channel (in channel order), the index of the chosen series in `Study::series`.
#[derive(Debug, Clone)]
pub struct Selection {
    pub series: Vec<usize>,
    pub matched_by: Vec<MatchedBy>,
}

fn in_range(v: Option<f64>, r: Option<[f64; 2]>) -> bool {
    match r {
        None => true,
        Some([lo, hi]) => v.is_some_and(|v| v >= lo && v <= hi),
    }
}

fn fallback_holds(f: &Fallback, s: &Series) -> bool {
    if f.is_empty() {
        return false;
    }
    if !in_range(s.echo_time_ms, f.echo_time_ms)
        || !in_range(s.repetition_time_ms, f.repetition_time_ms)
        || !in_range(s.inversion_time_ms, f.inversion_time_ms)
    {
        return false;
    }
    if f.no_inversion == Some(true)
        && (s.inversion_time_ms.is_some() || s.scanning_sequence.contains("IR"))
    {
        return false;
    }
    if let Some(want) = f.contrast_agent {
        if s.contrast_agent.is_some() != want {
            return false;
        }
    }
    true
}

fn description_matches(rule: &ChannelRule, description: &str) -> bool {
    rule.include.iter().any(|r| r.is_match(description))
        && !rule.exclude.iter().any(|r| r.is_match(description))
}

/// Matches channels in the manifest's `match_order`; a series taken by one channel is not offered
/// to later ones. A channel left unmatched fails with the list of series present.
pub fn select(manifest: &Manifest, study: &Study) -> Result<Selection, SegmentError> {
    let min = manifest.file.selection.min_slices;
    let candidates: Vec<usize> = (0..study.series.len())
        .filter(|&i| study.series[i].is_mr_image() && study.series[i].frames >= min)
        .collect();
    let mut taken = vec![false; study.series.len()];
    let mut chosen: Vec<Option<(usize, MatchedBy)>> = vec![None; manifest.channels()];
    for name in &manifest.file.selection.match_order {
        let rule = manifest
            .rules
            .iter()
            .find(|r| &r.name == name)
            .expect("validated: match_order names inputs");
        let free = || candidates.iter().copied().filter(|&i| !taken[i]);
        let pick = free()
            .find(|&i| description_matches(rule, &study.series[i].description))
            .map(|i| (i, MatchedBy::Description))
            .or_else(|| {
                free()
                    .find(|&i| fallback_holds(&rule.fallback, &study.series[i]))
                    .map(|i| (i, MatchedBy::Fallback))
            });
        match pick {
            Some((i, by)) => {
                taken[i] = true;
                chosen[rule.channel] = Some((i, by));
            }
            None => {
                return Err(SegmentError::MissingSeries(format!(
                "no {name} series found for model {}: needs an MR series of at least {min} slices \
                     whose Series Description matches {:?}{}; series present: {}",
                manifest.name(),
                manifest.file.inputs[rule.channel].series_description,
                if rule.fallback.is_empty() {
                    String::new()
                } else {
                    " (or whose attributes meet the manifest's fallback)".to_string()
                },
                if study.series.is_empty() {
                    "none".to_string()
                } else {
                    study.series_summary()
                }
            )))
            }
        }
    }
    let (series, matched_by) = chosen
        .into_iter()
        .map(|c| c.expect("every channel matched"))
        .unzip();
    Ok(Selection { series, matched_by })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn series(n: i64, desc: &str) -> Series {
        Series {
            uid: format!("1.2.{n}"),
            number: Some(n),
            description: desc.into(),
            modality: "MR".into(),
            sop_class_uid: dicom_dictionary_std::uids::MR_IMAGE_STORAGE.into(),
            echo_time_ms: None,
            repetition_time_ms: None,
            inversion_time_ms: None,
            scanning_sequence: String::new(),
            contrast_agent: None,
            frames: 30,
            instances: vec![],
        }
    }

    fn manifest() -> Manifest {
        Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/brats-synth-unet2d"))
            .unwrap()
    }

    fn names(m: &Manifest, st: &Study) -> Result<Vec<String>, String> {
        select(m, st)
            .map(|s| {
                s.series
                    .iter()
                    .map(|&i| st.series[i].description.clone())
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn scanner_style_names_map_to_channels() {
        let m = manifest();
        let st = Study {
            study_uid: "1.2".into(),
            series: vec![
                series(1, "AX T1 SE"),
                series(2, "AX T1 SE POST-CONTRAST"),
                series(3, "AX T2 TSE"),
                series(4, "AX T2 FLAIR"),
                series(5, "DWI b1000"),
            ],
        };
        assert_eq!(
            names(&m, &st).unwrap(),
            [
                "AX T1 SE",
                "AX T1 SE POST-CONTRAST",
                "AX T2 TSE",
                "AX T2 FLAIR"
            ]
        );
        let st = Study {
            study_uid: "1.2".into(),
            series: vec![
                series(7, "t2_flair_dark-fluid_tra"),
                series(3, "T1 MPRAGE +C"),
                series(2, "t1_mprage_sag"),
                series(5, "t2w_tse_tra"),
            ],
        };
        assert_eq!(
            names(&m, &st).unwrap(),
            [
                "t1_mprage_sag",
                "T1 MPRAGE +C",
                "t2w_tse_tra",
                "t2_flair_dark-fluid_tra"
            ]
        );
    }

    #[test]
    fn missing_flair_names_the_series_present() {
        let m = manifest();
        let st = Study {
            study_uid: "1.2".into(),
            series: vec![
                series(1, "AX T1 SE"),
                series(2, "AX T1 SE POST-CONTRAST"),
                series(3, "AX T2 TSE"),
            ],
        };
        let e = names(&m, &st).unwrap_err();
        assert!(e.starts_with("no FLAIR series found"), "{e}");
        assert!(e.contains("\"AX T2 TSE\""), "{e}");
    }

    #[test]
    fn fallback_on_acquisition_attributes() {
        let m = manifest();
        let mut flair = series(4, "Ax 3");
        flair.inversion_time_ms = Some(2500.0);
        flair.echo_time_ms = Some(120.0);
        flair.scanning_sequence = "SE\\IR".into();
        let mut t2 = series(3, "Ax 2");
        t2.echo_time_ms = Some(100.0);
        t2.repetition_time_ms = Some(5000.0);
        let mut t1 = series(1, "Ax 1");
        t1.echo_time_ms = Some(10.0);
        t1.repetition_time_ms = Some(500.0);
        let mut t1ce = series(2, "Ax 1b");
        t1ce.echo_time_ms = Some(10.0);
        t1ce.repetition_time_ms = Some(500.0);
        t1ce.contrast_agent = Some("GADOVIST".into());
        let st = Study {
            study_uid: "1.2".into(),
            series: vec![t1, t1ce, t2, flair],
        };
        let sel = select(&m, &st).unwrap();
        assert_eq!(sel.series, vec![0, 1, 2, 3]);
        assert!(sel.matched_by.iter().all(|b| *b == MatchedBy::Fallback));
    }

    #[test]
    fn too_short_or_non_mr_series_are_not_candidates() {
        let m = manifest();
        let mut short = series(4, "AX T2 FLAIR");
        short.frames = 3;
        let mut ct = series(9, "FLAIR");
        ct.modality = "CT".into();
        let st = Study {
            study_uid: "1.2".into(),
            series: vec![
                series(1, "AX T1"),
                series(2, "AX T1 +C"),
                series(3, "AX T2"),
                short,
                ct,
            ],
        };
        assert!(names(&m, &st).unwrap_err().starts_with("no FLAIR"));
    }
}
