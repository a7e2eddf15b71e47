//! The fleet bench's chart: requests per second at the control plane over time (100 ms
//! buckets), the phases marked, as a PNG a platform team can read at a glance.

use plotters::prelude::*;
use std::path::Path;

/// A font for the labels: DejaVu Sans, as Debian installs it.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws `times` (seconds since the start, one per request) as requests per second in
/// 100 ms buckets, with a vertical line and label per `marks` entry, to `path`.
pub fn draw(path: &Path, times: &[f64], marks: &[(&str, f64)], sidecars: usize) -> Result<(), String> {
    let font = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font).map_err(|_| "bad font".to_owned())?;
    let end = times.iter().copied().fold(0.0f64, f64::max) + 1.0;
    let mut buckets = vec![0u32; (end * 10.0) as usize + 1];
    for t in times {
        buckets[(t * 10.0) as usize] += 1;
    }
    let top = buckets.iter().copied().max().unwrap_or(1) as f64 * 10.0 * 1.15;
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!("control-plane requests/s, {sidecars} connd serve sidecars (100 ms buckets)");
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the fleet started")
        .y_desc("requests/s")
        .draw()
        .map_err(|e| e.to_string())?;
    let series = buckets.iter().enumerate().map(|(i, n)| (i as f64 / 10.0, *n as f64 * 10.0));
    chart.draw_series(LineSeries::new(series, &BLUE)).map_err(|e| e.to_string())?;
    for (i, (label, at)) in marks.iter().enumerate() {
        chart.draw_series(LineSeries::new([(*at, 0.0), (*at, top)], RED.stroke_width(2))).map_err(|e| e.to_string())?;
        let text = Text::new(
            label.to_string(),
            (*at + end / 200.0, top * (0.95 - 0.06 * (i % 2) as f64)),
            ("sans-serif", 16).into_font().color(&RED),
        );
        chart.draw_series(std::iter::once(text)).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
