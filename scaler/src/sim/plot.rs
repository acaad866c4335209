//! A PNG of simulated runs over time: backlog, tasks, and each study's queue wait.
//! Bitmap backend only; labels use a vendored DejaVu Sans subset (no system fonts).

use std::path::Path;
use std::sync::Once;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;

use super::engine::{Run, Sample};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

/// Registers the embedded font (once) and returns its family name, for any plotters drawing in
/// the workspace (the demo's montage labels too): no system fonts are needed.
pub fn embedded_font() -> &'static str {
    register_font();
    FAMILY
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse (a unit test draws a plot).
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draw `runs` (the first is the policy; others for comparison) of trace `title` to `path`.
pub fn plot(path: &Path, title: &str, runs: &[&Run]) -> Result<(), PlotError> {
    register_font();
    draw(path, title, runs).map_err(|e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn draw(path: &Path, title: &str, runs: &[&Run]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FAMILY, 22))?;
    let panels = root.split_evenly((3, 1));
    let hours = runs.iter().map(|r| r.horizon).fold(0.0, f64::max) / 3600.0;
    let x = 0.0..hours.max(0.01);

    let backlog = |s: &Sample| (s.queued + s.busy) as f64;
    let max_backlog = max_over_samples(runs, backlog);
    line_panel(
        &panels[0],
        x.clone(),
        ("backlog (waiting + in flight)", "studies"),
        (max_backlog * 1.05).max(1.0),
        runs,
        backlog,
    )?;
    let tasks = |s: &Sample| f64::from(s.tasks);
    let max_tasks = max_over_samples(runs, tasks);
    line_panel(
        &panels[1],
        x.clone(),
        ("tasks (billed)", "tasks"),
        max_tasks + 1.0,
        runs,
        tasks,
    )?;

    // Waits span seconds to hours between sizings: a log axis keeps both readable.
    let max_wait = runs
        .iter()
        .flat_map(|r| r.waits.iter().copied())
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&panels[2])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption(
            "queue wait of each study, by arrival (log scale; 0 shown as 0.1 s)",
            (FAMILY, 16),
        )
        .build_cartesian_2d(x, (0.1..max_wait * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc("seconds")
        .label_style((FAMILY, 12))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(
                r.arrivals
                    .iter()
                    .zip(&r.waits)
                    .map(|(a, w)| Circle::new((a / 3600.0, w.max(0.1)), 1, c.filled())),
            )?
            .label(r.label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, c.filled()));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn max_over_samples(runs: &[&Run], value: impl Fn(&Sample) -> f64) -> f64 {
    runs.iter()
        .flat_map(|r| r.samples.iter().map(&value))
        .fold(0.0, f64::max)
}

/// One panel: `value` of every sample over time, a line per run, y from 0 to `y_top`.
fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: std::ops::Range<f64>,
    (caption, y_desc): (&str, &str),
    y_top: f64,
    runs: &[&Run],
    value: impl Fn(&Sample) -> f64,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption(caption, (FAMILY, 16))
        .build_cartesian_2d(x, 0.0..y_top)?;
    chart
        .configure_mesh()
        .x_desc("hours")
        .y_desc(y_desc)
        .label_style((FAMILY, 12))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                r.samples.iter().map(|s| (s.t / 3600.0, value(s))),
                c.stroke_width(2),
            ))?
            .label(r.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    legend(&mut chart)?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()
}
