//! Library behaviour without external tools: encode, read back, check geometry, ordering and errors.

use crate::common::*;
use dicom_dictionary_std::tags;
use dicom_seg::*;
use ndarray::{Array3, Axis};

fn frame_items(seg: &Segmentation) -> Vec<dicom_object::InMemDicomObject> {
    seg.dataset()
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .to_vec()
}

fn first(
    o: &dicom_object::InMemDicomObject,
    seq: dicom_core::Tag,
) -> &dicom_object::InMemDicomObject {
    &o.get(seq).unwrap().items().unwrap()[0]
}

#[test]
fn labels_round_trip_exactly_for_every_orientation_and_odd_frame_size() {
    for plane in [
        Plane::Axial,
        Plane::Sagittal,
        Plane::Coronal,
        Plane::Oblique,
    ] {
        // 13 x 21 = 273 pixels per frame: frames start mid-byte.
        let acq = Acq::new("rt", plane, 11, 13, 21);
        let files = acq.single_frame();
        let source = source_of(&files);
        let labels = labels(&source, 4, &[]);
        for omit in [true, false] {
            let seg = builder(&source, 4)
                .omit_empty_frames(omit)
                .build(Masks::Labels(labels.view()))
                .unwrap();
            let bytes = seg.to_bytes().unwrap();
            let back = ReadSegmentation::from_bytes(&bytes).unwrap();
            assert_eq!(back.segments.len(), 4);
            assert_eq!(
                back.masks_on(&source).unwrap(),
                one_hot(&labels, 4),
                "{plane:?} omit={omit}"
            );
            // And back to the label map itself (segment n painted as label n).
            assert_eq!(
                back.labels_on(&source, |n| n.get() as u8).unwrap(),
                labels.mapv(|v| v as u8),
                "{plane:?} omit={omit}"
            );
            let expected_frames: usize = if omit {
                (1..=4u16)
                    .map(|s| {
                        labels
                            .axis_iter(Axis(0))
                            .filter(|p| p.iter().any(|&v| v == s))
                            .count()
                    })
                    .sum()
            } else {
                4 * 11
            };
            assert_eq!(back.frames.len(), expected_frames, "{plane:?} omit={omit}");
        }
    }
}

#[test]
fn frames_are_sorted_along_the_normal_with_exact_positions_and_indices() {
    let acq = Acq::new("order", Plane::Oblique, 9, 16, 16);
    let files = acq.single_frame();
    let source = source_of(&files);
    // The input order is shuffled on purpose.
    assert_ne!(
        source.order_along_normal(),
        (0..9).collect::<Vec<_>>().as_slice()
    );
    let labels = labels(&source, 2, &[]);
    let seg = builder(&source, 2)
        .build(Masks::Labels(labels.view()))
        .unwrap();
    let n = source.normal();
    let mut last: Option<(u32, f64)> = None;
    for item in frame_items(&seg) {
        let idx = first(&item, tags::FRAME_CONTENT_SEQUENCE)
            .get(tags::DIMENSION_INDEX_VALUES)
            .unwrap()
            .to_multi_int::<u32>()
            .unwrap();
        let pos = first(&item, tags::PLANE_POSITION_SEQUENCE)
            .get(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let sop = first(
            first(&item, tags::DERIVATION_IMAGE_SEQUENCE),
            tags::SOURCE_IMAGE_SEQUENCE,
        )
        .get(tags::REFERENCED_SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
        let segno = first(&item, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .get(tags::REFERENCED_SEGMENT_NUMBER)
            .unwrap()
            .to_int::<u32>()
            .unwrap();
        assert_eq!(idx[0], segno);
        // The referenced image is the one at this position, and the index is its rank along the normal.
        let i = source
            .frames()
            .iter()
            .position(|f| f.sop_instance_uid.as_str() == sop)
            .unwrap();
        let p = source.frames()[i].position;
        for k in 0..3 {
            assert!((p[k] - pos[k]).abs() < 1e-9);
        }
        assert_eq!(idx[1] as usize, source.rank_of(i) + 1);
        let d = p[0] * n[0] + p[1] * n[1] + p[2] * n[2];
        if let Some((s, prev)) = last {
            assert!(
                s < segno || (s == segno && d > prev),
                "frames not ordered along the normal"
            );
        }
        last = Some((segno, d));
    }
}

#[test]
fn enhanced_multiframe_source_maps_by_frame_number() {
    let acq = Acq::new("enh", Plane::Coronal, 10, 12, 14);
    let file = acq.enhanced();
    let source = SourceSeries::from_datasets([&*file]).unwrap();
    assert!(source.frames().iter().all(|f| f.frame_number.is_some()));
    let labels = labels(&source, 3, &[]);
    let seg = builder(&source, 3)
        .build(Masks::Labels(labels.view()))
        .unwrap();
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    for f in &back.frames {
        assert_eq!(f.sources.len(), 1);
        assert!(f.sources[0].frame_number.is_some());
    }
    assert_eq!(back.masks_on(&source).unwrap(), one_hot(&labels, 3));
}

#[test]
fn binary_masks_may_overlap_and_fractional_round_trips() {
    let acq = Acq::new("bin", Plane::Axial, 6, 10, 10);
    let files = acq.single_frame();
    let source = source_of(&files);
    let mut a = Array3::from_elem(source.shape(), false);
    let mut b = Array3::from_elem(source.shape(), false);
    a.slice_mut(ndarray::s![1..4, 2..6, 2..6]).fill(true);
    b.slice_mut(ndarray::s![2..5, 4..8, 4..8]).fill(true);
    let s1 = SegmentNumber::new(1).unwrap();
    let s2 = SegmentNumber::new(2).unwrap();
    let seg = builder(&source, 2)
        .build(Masks::Binary(vec![(s1, a.view()), (s2, b.view())]))
        .unwrap();
    assert_eq!(
        seg.dataset()
            .get(tags::SEGMENTS_OVERLAP)
            .unwrap()
            .to_str()
            .unwrap(),
        "YES"
    );
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    let m = back.masks_on(&source).unwrap();
    assert_eq!(m.index_axis(Axis(0), 0), a.mapv(u8::from));
    assert_eq!(m.index_axis(Axis(0), 1), b.mapv(u8::from));

    let p = Array3::from_shape_fn(source.shape(), |(i, y, x)| {
        ((i * 31 + y * 7 + x) % 17) as f32 / 16.0
    });
    let seg = builder(&source, 1)
        .build(Masks::Fractional {
            kind: FractionalType::Probability,
            masks: vec![(s1, p.view())],
        })
        .unwrap();
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    assert_eq!(
        back.segmentation_type,
        SegmentationType::Fractional {
            kind: FractionalType::Probability,
            max: 255
        }
    );
    let m = back.masks_on(&source).unwrap();
    assert_eq!(
        m.index_axis(Axis(0), 0),
        p.mapv(|v| (v * 255.0).round() as u8)
    );
}

#[test]
fn empty_segment_is_described_and_all_empty_keeps_frames() {
    let acq = Acq::new("empty", Plane::Axial, 8, 12, 12);
    let files = acq.single_frame();
    let source = source_of(&files);
    let l = labels(&source, 4, &[3]);
    let seg = builder(&source, 4).build(Masks::Labels(l.view())).unwrap();
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    assert_eq!(back.segments.len(), 4);
    assert_eq!(back.segments[2].label, "Enhancing tumour");
    assert!(back.frames.iter().all(|f| f.segment.get() != 3));

    let zero = Array3::<u16>::zeros(source.shape());
    let seg = builder(&source, 2)
        .build(Masks::Labels(zero.view()))
        .unwrap();
    assert_eq!(seg.number_of_frames(), 2 * 8);
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    assert!(back.masks_on(&source).unwrap().iter().all(|&v| v == 0));
}

#[test]
fn metadata_codes_colours_and_copied_attributes() {
    let mut acq = Acq::new("meta", Plane::Axial, 4, 8, 8);
    acq.clinical_trial = true;
    let files = acq.single_frame();
    let source = source_of(&files);
    let l = labels(&source, 3, &[]);
    let seg = builder(&source, 3).build(Masks::Labels(l.view())).unwrap();
    let d = seg.dataset();
    let s = |t| {
        d.get(t)
            .map(|e| e.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(s(tags::MODALITY), "SEG");
    assert_eq!(s(tags::CLINICAL_TRIAL_PROTOCOL_ID), "PROT-7");
    assert_eq!(s(tags::CLINICAL_TRIAL_SUBJECT_ID), "SUBJ-42");
    assert_eq!(s(tags::CLINICAL_TRIAL_TIME_POINT_ID), "BASELINE");
    assert_eq!(
        s(tags::CLINICAL_TRIAL_COORDINATING_CENTER_NAME),
        "Coordinating Center"
    );
    assert_eq!(s(tags::PATIENT_ID), "SYN-0001");
    assert_eq!(
        s(tags::STUDY_INSTANCE_UID),
        files[0]
            .get(tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert_eq!(s(tags::DEVICE_SERIAL_NUMBER), "SN-0001");
    assert_eq!(s(tags::CONTENT_LABEL), "TUMOUR_SEG");
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    let seg3 = &back.segments[2];
    assert_eq!(
        seg3.property_type.as_ref().unwrap(),
        &codes::enhancing_lesion()
    );
    assert_eq!(
        back.segments[0].property_type.as_ref().unwrap(),
        &codes::necrosis()
    );
    assert_eq!(
        back.segments[1].property_type.as_ref().unwrap(),
        &codes::edema()
    );
    assert_eq!(seg3.category.as_ref().unwrap().scheme, "SCT");
    assert_eq!(seg3.algorithm_type, "AUTOMATIC");
    assert_eq!(seg3.algorithm.as_ref().unwrap().version, "0.1.0");
    assert_eq!(seg3.display_color, Some(DicomLab::from_srgb(255, 0, 0)));
}

#[test]
fn supplied_sop_instance_uid_gives_stable_uids() {
    let acq = Acq::new("idem", Plane::Axial, 4, 8, 8);
    let files = acq.single_frame();
    let source = source_of(&files);
    let l = labels(&source, 2, &[]);
    let uid = Uid::derived_from("job-0001");
    let a = builder(&source, 2)
        .sop_instance_uid(uid.clone())
        .build(Masks::Labels(l.view()))
        .unwrap();
    let b = builder(&source, 2)
        .sop_instance_uid(uid.clone())
        .build(Masks::Labels(l.view()))
        .unwrap();
    assert_eq!(a.sop_instance_uid(), &uid);
    assert_eq!(a.series_instance_uid(), b.series_instance_uid());
    let c = builder(&source, 2)
        .uid_generator(UidGenerator::with_root("1.2.826.0.1.3680043.10.1234").unwrap())
        .build(Masks::Labels(l.view()))
        .unwrap();
    assert!(c
        .sop_instance_uid()
        .as_str()
        .starts_with("1.2.826.0.1.3680043.10.1234."));
    assert_ne!(c.series_instance_uid(), a.series_instance_uid());
}

#[test]
fn inconsistent_input_is_an_error_not_a_panic() {
    let acq = Acq::new("err", Plane::Axial, 5, 8, 8);
    let files = acq.single_frame();
    let source = source_of(&files);

    // Mask shape differs from the grid.
    let wrong = Array3::<u16>::zeros((5, 8, 9));
    assert!(matches!(
        builder(&source, 1).build(Masks::Labels(wrong.view())),
        Err(SegError::MaskShape { .. })
    ));
    // A label without a segment.
    let mut l = Array3::<u16>::zeros(source.shape());
    l[[2, 3, 3]] = 3;
    assert!(matches!(
        builder(&source, 2).build(Masks::Labels(l.view())),
        Err(SegError::UnknownSegment(3))
    ));
    // A binary mask for an undescribed segment.
    let m = Array3::from_elem(source.shape(), false);
    assert!(matches!(
        builder(&source, 1).build(Masks::Binary(vec![(
            SegmentNumber::new(2).unwrap(),
            m.view()
        )])),
        Err(SegError::UnknownSegment(2))
    ));
    // Segment numbers with a gap.
    let mut segs = segments(3);
    segs.remove(1);
    let mut b = SegmentationBuilder::new(
        &source,
        equipment(),
        ContentIdentification::new("X", None, None).unwrap(),
    );
    for s in segs {
        b = b.segment(s);
    }
    let z = Array3::<u16>::zeros(source.shape());
    assert!(matches!(
        b.build(Masks::Labels(z.view())),
        Err(SegError::NonContiguousSegments(_))
    ));
    // Retired SRT scheme.
    let mut s = segments(1).remove(0);
    s.category = CodedConcept::new("M-01000", "SRT", "Morphologically Altered Structure");
    let b = SegmentationBuilder::new(
        &source,
        equipment(),
        ContentIdentification::new("X", None, None).unwrap(),
    )
    .segment(s);
    assert!(matches!(
        b.build(Masks::Labels(z.view())),
        Err(SegError::InvalidCode { .. })
    ));
    // Fractional out of range.
    let mut p = Array3::<f32>::zeros(source.shape());
    p[[0, 0, 0]] = 1.5;
    assert!(matches!(
        builder(&source, 1).build(Masks::Fractional {
            kind: FractionalType::Probability,
            masks: vec![(SegmentNumber::new(1).unwrap(), p.view())]
        }),
        Err(SegError::FractionalOutOfRange { .. })
    ));
    // Bad content label.
    assert!(ContentIdentification::new("lower case", None, None).is_err());

    // Mixed frames of reference.
    let mut files2 = files.clone();
    put(
        &mut files2[1],
        tags::FRAME_OF_REFERENCE_UID,
        dicom_core::VR::UI,
        "1.2.3.4",
    );
    assert!(matches!(
        SourceSeries::from_datasets(files2.iter().map(|f| &**f)),
        Err(SegError::InconsistentSources {
            what: "FrameOfReferenceUID",
            ..
        })
    ));
    // Two images at the same place.
    let mut files3 = files.clone();
    let p0 = files3[0]
        .get(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    put(
        &mut files3[1],
        tags::IMAGE_POSITION_PATIENT,
        dicom_core::VR::DS,
        &p0,
    );
    assert!(matches!(
        SourceSeries::from_datasets(files3.iter().map(|f| &**f)),
        Err(SegError::DuplicatePosition { .. })
    ));
    // Missing geometry.
    let mut files4 = files.clone();
    files4[2].take(tags::PIXEL_SPACING);
    assert!(matches!(
        SourceSeries::from_datasets(files4.iter().map(|f| &**f)),
        Err(SegError::SourceAttribute {
            attribute: "PixelSpacing",
            ..
        })
    ));
    // The reader refuses what is not a SEG and maps nothing onto a different grid.
    let mut bytes = Vec::new();
    files[0].write_all(&mut bytes).unwrap();
    assert!(matches!(
        ReadSegmentation::from_bytes(&bytes),
        Err(SegError::NotASegmentation(_))
    ));
    assert!(ReadSegmentation::from_bytes(b"garbage").is_err());
    let l = labels(&source, 2, &[]);
    let seg = builder(&source, 2).build(Masks::Labels(l.view())).unwrap();
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    let other = source_of(&Acq::new("other", Plane::Axial, 5, 8, 8).single_frame());
    assert!(matches!(
        back.masks_on(&other),
        Err(SegError::FrameOfReferenceMismatch { .. })
    ));
}

#[test]
fn streamed_bytes_equal_dicom_object_encoding_of_the_full_file() {
    // to_bytes appends Pixel Data by hand; it must be byte-identical to dicom-object writing the whole
    // object, for an even and an odd packed length.
    for (rows, cols, enhanced, fractional) in [
        (16u16, 16u16, false, false),
        (13, 21, false, false),
        (13, 21, true, false),
        (9, 11, false, true),
    ] {
        let mut acq = Acq::new("bytes", Plane::Sagittal, 7, rows, cols);
        acq.clinical_trial = true;
        let files = if enhanced {
            vec![acq.enhanced()]
        } else {
            acq.single_frame()
        };
        // Sources as parsed from files (typed values), not only as built in memory.
        let files: Vec<File> = files
            .iter()
            .map(|f| {
                let mut b = Vec::new();
                f.write_all(&mut b).unwrap();
                dicom_object::OpenFileOptions::new()
                    .from_reader(&b[..])
                    .unwrap()
            })
            .collect();
        let source = source_of(&files);
        let l = labels(&source, 3, &[]);
        let b = builder(&source, 3);
        let seg = if fractional {
            let p = l.mapv(|v| v as f32 / 3.0);
            let masks = (1..=3u16)
                .map(|s| (SegmentNumber::new(s).unwrap(), p.view()))
                .collect();
            b.build(Masks::Fractional {
                kind: FractionalType::Occupancy,
                masks,
            })
            .unwrap()
        } else {
            b.build(Masks::Labels(l.view())).unwrap()
        };
        let mut via_object = Vec::new();
        seg.to_file().write_all(&mut via_object).unwrap();
        assert_eq!(seg.to_bytes().unwrap(), via_object);
        assert_eq!(seg.pixel_data().len() % 2, 0);
    }
}

#[test]
fn reader_survives_truncated_and_corrupted_input() {
    let acq = Acq::new("trunc", Plane::Axial, 5, 9, 11);
    let files = acq.single_frame();
    let source = source_of(&files);
    let l = labels(&source, 2, &[]);
    let bytes = builder(&source, 2)
        .build(Masks::Labels(l.view()))
        .unwrap()
        .to_bytes()
        .unwrap();
    let step = (bytes.len() / 300).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        // Must return (Ok or Err), never panic.
        let t = std::time::Instant::now();
        if let Ok(seg) = ReadSegmentation::from_bytes(&bytes[..cut]) {
            let _ = seg.masks_on(&source);
        }
        assert!(
            t.elapsed().as_secs() < 2,
            "cut at {cut} took {:?}",
            t.elapsed()
        );
    }
    let mut flipped = bytes.clone();
    for i in (132..flipped.len()).step_by(step) {
        flipped[i] ^= 0x5A;
        let t = std::time::Instant::now();
        if let Ok(seg) = ReadSegmentation::from_bytes(&flipped) {
            let _ = seg.masks_on(&source);
        }
        assert!(
            t.elapsed().as_secs() < 2,
            "flip at {i} took {:?}",
            t.elapsed()
        );
        flipped[i] ^= 0x5A;
    }
}

/// Rewrites every per-frame item of a SEG file with `f`.
fn edit_frames(file: &mut File, f: impl Fn(usize, &mut dicom_object::InMemDicomObject)) {
    let mut items = file
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .to_vec();
    for (k, it) in items.iter_mut().enumerate() {
        f(k, it);
    }
    file.put(dicom_core::DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        dicom_core::VR::SQ,
        dicom_core::value::DataSetSequence::from(items),
    ));
}

#[test]
fn reader_maps_by_position_when_references_are_missing_and_rejects_contradictions() {
    let acq = Acq::new("bypos", Plane::Oblique, 9, 12, 10);
    let files = acq.single_frame();
    let source = source_of(&files);
    let l = labels(&source, 3, &[]);
    let seg = builder(&source, 3).build(Masks::Labels(l.view())).unwrap();

    // By reference: frames_referencing finds each source image's frames.
    let back = ReadSegmentation::from_bytes(&seg.to_bytes().unwrap()).unwrap();
    for (i, f) in source.frames().iter().enumerate() {
        let n = back
            .frames_referencing(f.sop_instance_uid.as_str(), None)
            .count();
        let want = (1..=3u16)
            .filter(|&s| l.index_axis(Axis(0), i).iter().any(|&v| v == s))
            .count();
        assert_eq!(n, want);
    }

    // No Derivation Image Sequence at all: frames are placed by Image Position (Patient) alone.
    let mut file = seg.to_file();
    edit_frames(&mut file, |_, it| {
        it.take(tags::DERIVATION_IMAGE_SEQUENCE);
    });
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    let back = ReadSegmentation::from_bytes(&bytes).unwrap();
    assert!(back.frames.iter().all(|f| f.sources.is_empty()));
    assert_eq!(back.masks_on(&source).unwrap(), one_hot(&l, 3));

    // A frame whose position is off the grid (and no reference) is an error.
    let mut off = file.clone();
    edit_frames(&mut off, |k, it| {
        if k == 0 {
            let mut pp = dicom_object::InMemDicomObject::new_empty();
            put(
                &mut pp,
                tags::IMAGE_POSITION_PATIENT,
                dicom_core::VR::DS,
                "1000\\1000\\1000",
            );
            it.put(dicom_core::DataElement::new(
                tags::PLANE_POSITION_SEQUENCE,
                dicom_core::VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![pp]),
            ));
        }
    });
    let mut bytes = Vec::new();
    off.write_all(&mut bytes).unwrap();
    let back = ReadSegmentation::from_bytes(&bytes).unwrap();
    assert!(matches!(
        back.masks_on(&source),
        Err(SegError::UnmappedFrame { frame: 1, .. })
    ));

    // Reference and position that contradict each other: an error, not a silent choice.
    let mut swapped = seg.to_file();
    let first_pos = {
        let it = &swapped
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        it.get(tags::PLANE_POSITION_SEQUENCE).unwrap().clone()
    };
    edit_frames(&mut swapped, |k, it| {
        if k == 1 {
            it.put(first_pos.clone());
        }
    });
    let mut bytes = Vec::new();
    swapped.write_all(&mut bytes).unwrap();
    let back = ReadSegmentation::from_bytes(&bytes).unwrap();
    // Frames 1 and 2 are consecutive slices of the same segment, so their positions differ.
    assert!(matches!(
        back.masks_on(&source),
        Err(SegError::UnmappedFrame { frame: 2, .. })
    ));
}

#[test]
fn non_contiguous_mask_views_encode_like_contiguous_ones() {
    let acq = Acq::new("views", Plane::Coronal, 6, 10, 12);
    let files = acq.single_frame();
    let source = source_of(&files);
    let l = labels(&source, 3, &[]);
    // The same labels stored column-major (a transposed buffer viewed back in (frames, rows, cols)).
    let t = |a: ndarray::ArrayView3<'_, u16>| {
        let p = a.permuted_axes([0, 2, 1]);
        Array3::from_shape_vec(p.raw_dim(), p.iter().copied().collect()).unwrap()
    };
    let stored = t(l.view()); // (frames, cols, rows), standard layout
    let view = stored.view().permuted_axes([0, 2, 1]); // (frames, rows, cols), not contiguous
    assert!(view.as_slice().is_none());
    let a = builder(&source, 3).build(Masks::Labels(l.view())).unwrap();
    let b = builder(&source, 3).build(Masks::Labels(view)).unwrap();
    assert_eq!(a.pixel_data(), b.pixel_data());
    let bools: Vec<Array3<bool>> = (1..=3u16).map(|s| l.mapv(|v| v == s)).collect();
    let tb: Vec<Array3<bool>> = bools
        .iter()
        .map(|m| m.view().permuted_axes([0, 2, 1]).to_owned())
        .collect();
    let masks = tb
        .iter()
        .enumerate()
        .map(|(k, m)| {
            (
                SegmentNumber::new(k as u16 + 1).unwrap(),
                m.view().permuted_axes([0, 2, 1]),
            )
        })
        .collect();
    let c = builder(&source, 3).build(Masks::Binary(masks)).unwrap();
    assert_eq!(a.pixel_data(), c.pixel_data());
}
