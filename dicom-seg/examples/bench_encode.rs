//! Encode benchmark (run on demand, not part of the test suite): a 4-segment BINARY SEG over a
//! 240x240x155 single-frame MR series, empty frames omitted. Prints timings as `key=value` lines and
//! writes the sources and the label volume so bench/seg/run.sh can time highdicom on the same input.
//!
//! usage: bench_encode [OUT_DIR] [REPS]

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_seg::*;
use ndarray::Array3;
use std::time::Instant;

const N: usize = 155;
const R: usize = 240;
const C: usize = 240;

fn put(o: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn sources() -> Vec<InMemDicomObject> {
    let uid = |w: &str| Uid::derived_from(&format!("bench {w}")).to_string();
    (0..N)
        .map(|k| {
            let mut d = InMemDicomObject::new_empty();
            put(&mut d, tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE);
            put(
                &mut d,
                tags::SOP_INSTANCE_UID,
                VR::UI,
                &uid(&format!("img {k}")),
            );
            put(&mut d, tags::STUDY_INSTANCE_UID, VR::UI, &uid("study"));
            put(&mut d, tags::SERIES_INSTANCE_UID, VR::UI, &uid("series"));
            put(&mut d, tags::FRAME_OF_REFERENCE_UID, VR::UI, &uid("for"));
            put(&mut d, tags::PATIENT_NAME, VR::PN, "Bench^Brain");
            put(&mut d, tags::PATIENT_ID, VR::LO, "BENCH");
            put(&mut d, tags::PATIENT_BIRTH_DATE, VR::DA, "");
            put(&mut d, tags::PATIENT_SEX, VR::CS, "O");
            put(&mut d, tags::STUDY_DATE, VR::DA, "20260101");
            put(&mut d, tags::STUDY_TIME, VR::TM, "120000");
            put(&mut d, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
            put(&mut d, tags::STUDY_ID, VR::SH, "1");
            put(&mut d, tags::ACCESSION_NUMBER, VR::SH, "");
            put(&mut d, tags::MODALITY, VR::CS, "MR");
            put(&mut d, tags::SERIES_NUMBER, VR::IS, "1");
            put(&mut d, tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string());
            put(&mut d, tags::MANUFACTURER, VR::LO, "Bench");
            put(
                &mut d,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("-120\\-120\\{}", k as f64 - 77.0),
            );
            put(
                &mut d,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0",
            );
            put(&mut d, tags::PIXEL_SPACING, VR::DS, "1\\1");
            put(&mut d, tags::SLICE_THICKNESS, VR::DS, "1");
            d.put(DataElement::new(
                tags::ROWS,
                VR::US,
                PrimitiveValue::from(R as u16),
            ));
            d.put(DataElement::new(
                tags::COLUMNS,
                VR::US,
                PrimitiveValue::from(C as u16),
            ));
            d.put(DataElement::new(
                tags::SAMPLES_PER_PIXEL,
                VR::US,
                PrimitiveValue::from(1u16),
            ));
            put(
                &mut d,
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2",
            );
            d.put(DataElement::new(
                tags::BITS_ALLOCATED,
                VR::US,
                PrimitiveValue::from(16u16),
            ));
            d.put(DataElement::new(
                tags::BITS_STORED,
                VR::US,
                PrimitiveValue::from(16u16),
            ));
            d.put(DataElement::new(
                tags::HIGH_BIT,
                VR::US,
                PrimitiveValue::from(15u16),
            ));
            d.put(DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
            d.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(vec![0u16; R * C].into()),
            ));
            d
        })
        .collect()
}

/// A BraTS-like tumour: edema around enhancing rim around necrosis, plus a small satellite lesion.
fn labels() -> Array3<u16> {
    Array3::from_shape_fn((N, R, C), |(z, y, x)| {
        let (dz, dy, dx) = (z as f64 - 80.0, y as f64 - 110.0, x as f64 - 130.0);
        let d = (dx * dx / 1.2 + dy * dy + dz * dz * 1.3).sqrt();
        let s = ((z as f64 - 40.0).powi(2) + (y as f64 - 60.0).powi(2) + (x as f64 - 60.0).powi(2))
            .sqrt();
        if d < 10.0 {
            1
        } else if d < 18.0 {
            3
        } else if d < 35.0 {
            2
        } else if s < 6.0 {
            4
        } else {
            0
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).cloned();
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let datasets = sources();
    let labels = labels();

    let algo = AlgorithmIdentification {
        family: codes::artificial_intelligence(),
        name: "bench".into(),
        version: "1".into(),
        parameters: None,
        source: None,
    };
    let types = [
        codes::necrosis(),
        codes::edema(),
        codes::enhancing_lesion(),
        codes::neoplasm(),
    ];
    let encode = || -> (Segmentation, Vec<u8>) {
        let source = SourceSeries::from_datasets(&datasets).expect("source");
        let mut b = SegmentationBuilder::new(
            &source,
            Equipment {
                manufacturer: "segnode".into(),
                model_name: "bench".into(),
                device_serial_number: "0".into(),
                software_versions: "0".into(),
            },
            ContentIdentification::new("BENCH", None, None).expect("label"),
        );
        for (k, t) in types.iter().enumerate() {
            b = b.segment(SegmentDescription::automatic(
                SegmentNumber::new(k as u16 + 1).unwrap(),
                t.meaning.clone(),
                codes::morphologically_abnormal_structure(),
                t.clone(),
                algo.clone(),
            ));
        }
        let t = Instant::now();
        let seg = b.build(Masks::Labels(labels.view())).expect("build");
        if std::env::var_os("BENCH_BREAKDOWN").is_some() {
            eprintln!("build_s={:.6}", t.elapsed().as_secs_f64());
        }
        let bytes = seg.to_bytes().expect("bytes");
        (seg, bytes)
    };
    // Warm up, then time.
    let (seg, bytes) = encode();
    let mut build_times = Vec::new();
    let mut total_times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        let source = SourceSeries::from_datasets(&datasets).expect("source");
        drop(source);
        let t1 = Instant::now();
        let (s, b) = encode();
        let t2 = Instant::now();
        std::hint::black_box((s, b));
        build_times.push((t1 - t0).as_secs_f64());
        total_times.push((t2 - t1).as_secs_f64());
    }
    total_times.sort_by(f64::total_cmp);
    build_times.sort_by(f64::total_cmp);
    if std::env::var_os("BENCH_BREAKDOWN").is_some() {
        let source = SourceSeries::from_datasets(&datasets).expect("source");
        let mut scan = Vec::new();
        for _ in 0..reps {
            let t0 = Instant::now();
            let mut any = 0u16;
            for v in labels.as_slice().unwrap().chunks(4096) {
                any |= v.iter().fold(0u16, |a, &x| a | x);
            }
            std::hint::black_box(any);
            scan.push(t0.elapsed().as_secs_f64());
        }
        scan.sort_by(f64::total_cmp);
        println!("breakdown_or_scan_s={:.6}", scan[reps / 2]);
        let mut w = Vec::new();
        for _ in 0..reps {
            let t0 = Instant::now();
            let b = seg.to_bytes().unwrap();
            std::hint::black_box(b);
            w.push(t0.elapsed().as_secs_f64());
        }
        w.sort_by(f64::total_cmp);
        println!("breakdown_to_bytes_s={:.6}", w[reps / 2]);
        let f = seg
            .dataset()
            .clone()
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap();
        let mut w = Vec::new();
        for _ in 0..reps {
            let t0 = Instant::now();
            let mut b = Vec::new();
            f.write_all(&mut b).unwrap();
            std::hint::black_box(b);
            w.push(t0.elapsed().as_secs_f64());
        }
        w.sort_by(f64::total_cmp);
        println!("breakdown_to_bytes_without_pixels_s={:.6}", w[reps / 2]);
        drop(source);
    }
    println!("frames={}", seg.number_of_frames());
    println!("bytes={}", bytes.len());
    println!("ours_source_series_median_s={:.6}", build_times[reps / 2]);
    println!("ours_encode_median_s={:.6}", total_times[reps / 2]);
    println!("ours_encode_min_s={:.6}", total_times[0]);

    if let Some(dir) = out {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir.join("src")).expect("mkdir");
        for (k, d) in datasets.iter().enumerate() {
            let f = d
                .clone()
                .with_meta(
                    FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
                )
                .expect("meta");
            f.write_to_file(dir.join(format!("src/{k:04}.dcm")))
                .expect("write");
        }
        let raw: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("labels.raw"), raw).expect("write");
        std::fs::write(dir.join("ours.seg.dcm"), &bytes).expect("write");
    }
}
