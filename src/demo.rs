//! `segnode demo`: the node's main job in one command, on embedded defaults. It starts the node
//! (DICOM listener, local store, SQLite queue, a worker), sends it the bundled synthetic MR study by
//! C-STORE, and receives the SEG at a built-in destination (a second listener that accepts only
//! Segmentation Storage), or at `--destination` (e.g. dcmtk storescp). Then it reports per-stage
//! timings, tumour volumes, Dice against the study's ground truth, and writes a PNG montage.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use dicom_dictionary_std::uids;
use ndarray::{Array3, Axis};
use scp::Scp;
use segmenter::deliver::{c_store_once, DeliveryOptions, Destination};
use segmenter::postprocess::dice;
use segmenter::truth::GroundTruth;
use staging::{JobQueue, LocalStore, ObjectStore, SqliteQueue};

use crate::config::FileConfig;
use crate::workers;
use segmenter::folder::{parse_files, part10_files};

const BUNDLED_STUDY: &str = "testdata/studies/synth-007-head-axial-rle";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Study to send: a folder with dicom/ (and truth/ for Dice); default: the bundled synthetic study.
    #[arg(long)]
    pub study: Option<PathBuf>,
    /// Working folder for the node's data (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Send the SEG to this AET@HOST:PORT instead of the built-in destination.
    #[arg(long, value_name = "AET@HOST:PORT")]
    pub destination: Option<String>,
    /// Where to write the PNG montage (SEG over FLAIR; ground truth below).
    #[arg(long, default_value = "segnode-demo.png")]
    pub montage: PathBuf,
    /// Model folder; default: the bundled brats-synth-unet2d.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seconds of quiet before the node considers the study complete.
    #[arg(long, default_value_t = 2.0)]
    pub quiet_period: f64,
    /// The node's log file (its listener, worker and delivery lines); `-v` prints them instead.
    #[arg(long, default_value = "segnode-demo.log")]
    pub log: PathBuf,
    /// Print the node's log lines on stderr, interleaved with the demo's progress.
    #[arg(short, long)]
    pub verbose: bool,
}

fn find_bundled(rel: &str) -> Option<PathBuf> {
    let mut c = vec![PathBuf::from(rel)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            c.push(d.join("../share/segnode").join(rel));
            c.push(d.join("../..").join(rel));
        }
    }
    c.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel));
    c.into_iter().find(|p| p.is_dir())
}

fn step(n: usize, what: &str) {
    println!("[{n}/6] {what}");
}

async fn wait_until<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) -> Result<Duration> {
    let started = Instant::now();
    let mut last_dot = Instant::now();
    while !f() {
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        if last_dot.elapsed() > Duration::from_secs(2) {
            println!(
                "      ... {what} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            last_dot = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

pub async fn run(args: DemoArgs, file: &mut FileConfig) -> Result<()> {
    let study_dir = match &args.study {
        Some(s) => s.clone(),
        None => find_bundled(BUNDLED_STUDY).with_context(|| {
            format!("the bundled study {BUNDLED_STUDY} is not here; pass --study DIR")
        })?,
    };
    let _tmp;
    let data = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            _tmp = tempfile::tempdir().context("cannot create a temporary folder")?;
            _tmp.path().to_path_buf()
        }
    };
    if args.model.is_some() {
        file.worker.model = args.model.clone();
    }

    if !args.verbose {
        println!(
            "segnode demo: the node's log goes to {} (-v prints it here)",
            args.log.display()
        );
    }
    step(1, "loading the model");
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);

    // The destination first, so the node knows where to send.
    let mut viewer_spool: Option<PathBuf> = None;
    let destination: Destination = match &args.destination {
        Some(d) => d.parse().map_err(anyhow::Error::msg)?,
        None => {
            // A receiver only: the same listener, but its studies never complete (a quiet
            // period of a year, and no drain at shutdown), so nothing is staged or enqueued; the
            // SEG stays, durable, in its spool, where step 5 reads it. Its store and queue are
            // never written.
            let dir = data.join("viewer");
            std::fs::create_dir_all(&dir)?;
            let store = Arc::new(LocalStore::open(dir.join("store"))?);
            let queue: Arc<dyn JobQueue> =
                Arc::new(SqliteQueue::open(dir.join("queue.sqlite"), 3)?);
            let spool = dir.join("spool");
            let mut c = scp::ScpConfig::new(spool.clone());
            c.ae_title = "DEMO_VIEWER".into();
            c.bind = "127.0.0.1:0".parse().unwrap();
            c.sop_classes = vec![uids::SEGMENTATION_STORAGE.to_string()];
            c.quiet_period = Duration::from_secs(365 * 24 * 3600);
            c.drain_time = Duration::ZERO;
            let viewer = Scp::bind(c, store as Arc<dyn ObjectStore>, queue).await?;
            let addr = viewer.local_addr();
            let rx = shutdown.clone();
            tokio::spawn(async move { viewer.serve(crate::wait_for(rx)).await });
            viewer_spool = Some(spool);
            Destination {
                ae_title: dimse::AeTitle::new("DEMO_VIEWER")?,
                host: "127.0.0.1".into(),
                port: addr.port(),
                tls: false,
            }
        }
    };

    file.node.data_dir = data.join("node");
    file.scp.bind = "127.0.0.1".into();
    file.scp.port = 0;
    file.scp.quiet_period_secs = args.quiet_period;
    file.worker.destinations = vec![destination.to_string()];
    file.worker.workers = 1;
    let (store, queue) = crate::local_backends(file)?;
    let started = Instant::now();
    let pool = workers::start_pool(
        file,
        store.clone(),
        queue.clone(),
        shutdown.clone(),
        audit::AuditLog::disabled(),
    )?;
    println!(
        "      model ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    step(
        2,
        "starting the node (DICOM listener, local store, SQLite queue, 1 worker)",
    );
    let node = Scp::bind(file.scp_config()?, store.clone(), queue.clone()).await?;
    let node_addr = node.local_addr();
    let node_metrics = node.metrics();
    let rx = shutdown.clone();
    let node_task = tokio::spawn(async move { node.serve(crate::wait_for(rx)).await });
    println!(
        "      listening as {}@{node_addr}; results go to {destination}",
        file.scp.ae_title
    );

    step(3, "sending the study by C-STORE");
    let dicom_dir = study_dir.join("dicom");
    let dicom_dir = if dicom_dir.is_dir() {
        dicom_dir
    } else {
        study_dir.clone()
    };
    let (files, _) = part10_files(&dicom_dir)?;
    if files.is_empty() {
        bail!("no DICOM Part-10 files under {}", dicom_dir.display());
    }
    let instances = parse_files(&files)?;
    let refs: Vec<&[u8]> = files.iter().map(|(_, b)| b.as_slice()).collect();
    let to_node = Destination {
        ae_title: dimse::AeTitle::new(&file.scp.ae_title)?,
        host: "127.0.0.1".into(),
        port: node_addr.port(),
        tls: false,
    };
    let sent_at = Instant::now();
    let statuses = c_store_once(
        &refs,
        &to_node,
        &DeliveryOptions {
            calling_ae_title: "DEMO_MODALITY".into(),
            ..DeliveryOptions::default()
        },
    )
    .await?;
    let last_received = Instant::now();
    println!(
        "      {} instances accepted in {:.2} s ({} stored by the node)",
        statuses.len(),
        (last_received - sent_at).as_secs_f64(),
        node_metrics.instances_stored.load(Ordering::Relaxed)
    );

    step(4, "waiting for the quiet period, segmentation and delivery");
    let metrics = pool.context().metrics.clone();
    let m2 = metrics.clone();
    let waited = wait_until(
        "the SEG to be accepted by the destination",
        Duration::from_secs(600),
        || {
            m2.jobs_done.load(Ordering::Relaxed) >= 1
                || m2.jobs_dead_lettered.load(Ordering::Relaxed) >= 1
        },
    )
    .await?;
    if metrics.jobs_dead_lettered.load(Ordering::Relaxed) > 0 {
        let dl = queue.dead_letters(1).await?;
        bail!(
            "the job failed: {}",
            dl.first()
                .map(|d| d.reason.as_str())
                .unwrap_or("see the log")
        );
    }
    let stage = |name: &str| metrics.last_stage(name).unwrap_or_default().as_secs_f64();
    let pipeline = waited.as_secs_f64() - args.quiet_period;
    println!(
        "      last instance received -> SEG accepted: {:.2} s ({:.2} s after the {:.1} s quiet period)",
        waited.as_secs_f64(),
        pipeline,
        args.quiet_period
    );
    for s in segmenter::metrics::STAGES {
        println!("        {s:<16} {:>7.3} s", stage(s));
    }
    if let Some(ml) = metrics.last_brain_ml() {
        println!("      brain volume (brain extraction): {ml:.0} mL");
    }

    step(5, "reading the SEG back and checking it");
    let seg_bytes = match &viewer_spool {
        Some(spool) => {
            // The receiver writes the file from its journal after acknowledging it: wait until
            // a whole SEG is there (a file being written does not parse yet).
            let complete = || {
                find_seg(spool).into_iter().find_map(|p| {
                    let bytes = std::fs::read(p).ok()?;
                    dicom_seg::ReadSegmentation::from_bytes(&bytes)
                        .ok()
                        .map(|_| bytes)
                })
            };
            wait_until(
                "the destination to file the SEG",
                Duration::from_secs(60),
                || complete().is_some(),
            )
            .await?;
            complete().context("the SEG vanished from the destination's spool")?
        }
        None => {
            let keys = store.list("results/").await?;
            // results/<study>/ holds the SEG (<sop>.dcm) and volumes.json.
            let k = keys
                .iter()
                .find(|k| k.as_str().ends_with(".dcm"))
                .context("no SEG in the results store")?;
            store.get(k).await?.to_vec()
        }
    };
    let report = check_seg(&seg_bytes, instances, &study_dir, file)?;
    println!("{}", report.text);
    write_montage(&args.montage, &report)?;
    println!("      montage: {}", args.montage.display());

    step(6, "stopping");
    let _ = shutdown_tx.send(true);
    pool.join().await;
    let _ = node_task.await;
    Ok(())
}

/// SEG files the built-in destination has filed so far.
fn find_seg(root: &Path) -> Vec<PathBuf> {
    part10_files(root)
        .map(|(files, _)| files.into_iter().map(|(p, _)| p).collect())
        .unwrap_or_default()
}

struct Report {
    text: String,
    flair: Array3<f32>,
    predicted: Array3<u8>,
    truth: Option<Array3<u8>>,
    /// (label, colour, segment name) per segment of the manifest.
    colours: Vec<(u8, [u8; 3], String)>,
}

/// Reads the delivered SEG onto the reference (FLAIR) series, measures volumes and Dice.
fn check_seg(
    seg: &[u8],
    instances: Vec<dicom_object::DefaultDicomObject>,
    study_dir: &Path,
    file: &FileConfig,
) -> Result<Report> {
    let model_dir = workers::model_dir(file.worker.model.as_ref())?;
    let manifest = segmenter::Manifest::load(&model_dir)?;
    let read = dicom_seg::ReadSegmentation::from_bytes(seg)?;
    // The reference series: the one the SEG references.
    let study = segmenter::study::Study::from_instances(instances)?;
    let referenced: std::collections::HashSet<String> = read
        .frames
        .iter()
        .flat_map(|f| f.sources.iter().map(|s| s.sop_instance_uid.clone()))
        .collect();
    let series = study
        .series
        .iter()
        .find(|s| {
            s.instances.iter().any(|o| {
                segmenter::folder::sop_instance_uid(o).is_some_and(|u| referenced.contains(&u))
            })
        })
        .context("the SEG references no series of the study")?;
    let volume = segmenter::volume::Volume::from_series(series)?;
    // The SEG as one label map (source frames order), its segments painted with the manifest's
    // labels (segment n is the manifest's n-th segment), then put in the volume's slice order.
    let labels = read.labels_on(&volume.source, |number| {
        manifest
            .file
            .segments
            .get(number.get() as usize - 1)
            .map(|s| s.label)
            .unwrap_or(0)
    })?;
    let mut predicted =
        Array3::<u8>::zeros((volume.grid.slices, volume.grid.rows, volume.grid.cols));
    for (k, &frame) in volume.frame_of_slice.iter().enumerate() {
        predicted
            .index_axis_mut(Axis(0), k)
            .assign(&labels.index_axis(Axis(0), frame));
    }
    let voxel_ml = volume.grid.voxel_ml();
    let mut text = format!(
        "      SEG {}: {} segments, {} frames, on series {}",
        read.sop_instance_uid,
        read.segments.len(),
        read.frames.len(),
        series.summary()
    );
    let mut counts = [0usize; 256];
    for &l in predicted.iter() {
        counts[l as usize] += 1;
    }
    for s in &manifest.file.segments {
        text.push_str(&format!(
            "\n        {:<18} {:>7.2} mL",
            s.name,
            counts[s.label as usize] as f64 * voxel_ml
        ));
    }
    let truth = load_truth(study_dir, &volume)?;
    if let Some(gt) = &truth {
        text.push_str("\n      Dice against the ground truth:");
        for r in &manifest.file.regions {
            text.push_str(&format!(
                " {} {:.3}",
                r.name,
                dice(&predicted, gt, &r.labels)
            ));
        }
    } else {
        text.push_str("\n      (no truth/ folder: Dice not computed)");
    }
    Ok(Report {
        text,
        flair: volume.data.clone(),
        predicted,
        truth,
        colours: manifest
            .file
            .segments
            .iter()
            .map(|s| (s.label, s.colour_rgb, s.name.clone()))
            .collect(),
    })
}

/// The study's ground truth labels (truth/, segmenter::truth) re-ordered like the volume's slices.
fn load_truth(study_dir: &Path, volume: &segmenter::volume::Volume) -> Result<Option<Array3<u8>>> {
    let Some(truth) = GroundTruth::open(study_dir)? else {
        return Ok(None);
    };
    let sops: Vec<String> = volume
        .frame_of_slice
        .iter()
        .map(|&frame| volume.source.frames()[frame].sop_instance_uid.to_string())
        .collect();
    let sops: Vec<&str> = sops.iter().map(String::as_str).collect();
    Ok(truth.volume("raw_file", &sops, volume.grid.rows, volume.grid.cols)?)
}

/// Height of the caption strip above each row of the montage, in pixels.
const CAPTION_H: usize = 26;

/// Up to 8 slices across the tumour: FLAIR with the SEG on top, the ground truth below; each row
/// has a caption strip saying what it shows, the first one with the segments' colours.
fn write_montage(path: &Path, r: &Report) -> Result<()> {
    let (slices, rows, cols) = r.predicted.dim();
    let tumour: Vec<usize> = (0..slices)
        .filter(|&k| r.predicted.index_axis(Axis(0), k).iter().any(|&l| l != 0))
        .collect();
    let picks: Vec<usize> = if tumour.is_empty() {
        (0..8).map(|i| i * slices / 8).collect()
    } else {
        let n = tumour.len().min(8);
        (0..n).map(|i| tumour[i * tumour.len() / n]).collect()
    };
    let mut v: Vec<f32> = r.flair.iter().copied().collect();
    v.sort_by(f32::total_cmp);
    let lo = v[v.len() / 100];
    let hi = v[v.len() * 995 / 1000].max(lo + 1.0);
    let scale = 2usize;
    let bands = if r.truth.is_some() { 2 } else { 1 };
    let band_h = CAPTION_H + rows * scale;
    let (w, h) = (picks.len() * cols * scale, bands * band_h);
    let mut img = vec![0u8; w * h * 3];
    for band in 0..bands {
        let labels = if band == 0 {
            &r.predicted
        } else {
            r.truth.as_ref().expect("band 1 only with truth")
        };
        for (t, &k) in picks.iter().enumerate() {
            for j in 0..rows {
                for i in 0..cols {
                    let g = ((r.flair[[k, j, i]] - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0;
                    let mut px = [g, g, g];
                    let l = labels[[k, j, i]];
                    if let Some((_, c, _)) =
                        r.colours.iter().find(|(lab, _, _)| *lab == l && l != 0)
                    {
                        for (p, c) in px.iter_mut().zip(c) {
                            *p = 0.45 * *p + 0.55 * *c as f32;
                        }
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let x = t * cols * scale + i * scale + dx;
                            let y = band * band_h + CAPTION_H + j * scale + dy;
                            let o = (y * w + x) * 3;
                            img[o..o + 3].copy_from_slice(&px.map(|p| p as u8));
                        }
                    }
                }
            }
        }
    }
    draw_captions(&mut img, (w, h), band_h, r)
        .map_err(|e| anyhow::anyhow!("cannot draw the montage's captions: {e}"))?;
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&img)?;
    Ok(())
}

/// Row captions: "SEG (segnode) over FLAIR" with a colour key, and "ground truth over FLAIR".
fn draw_captions(
    img: &mut [u8],
    size: (usize, usize),
    band_h: usize,
    r: &Report,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let family = scaler::sim::plot::embedded_font();
    let root = BitMapBackend::with_buffer(img, (size.0 as u32, size.1 as u32)).into_drawing_area();
    let style = (family, 17).into_font().color(&WHITE);
    let mut captions = vec![(0usize, "SEG (segnode) over FLAIR")];
    if r.truth.is_some() {
        captions.push((1, "ground truth over FLAIR"));
    }
    for (band, text) in captions {
        let y = (band * band_h + 4) as i32;
        root.draw(&Text::new(text, (6, y), style.clone()))?;
        if band == 0 {
            // The colour key, after the caption.
            let mut x = 250i32;
            for (_, c, name) in &r.colours {
                root.draw(&Rectangle::new(
                    [(x, y + 2), (x + 14, y + 16)],
                    RGBColor(c[0], c[1], c[2]).filled(),
                ))?;
                root.draw(&Text::new(name.as_str(), (x + 18, y), style.clone()))?;
                x += 18 + 9 * name.len() as i32 + 16;
            }
        }
    }
    root.present()?;
    Ok(())
}
