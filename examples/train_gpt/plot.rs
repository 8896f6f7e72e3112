//! The loss curve as a PNG: training loss per step and validation loss per
//! evaluation, drawn with plotters and an embedded DejaVu font (no system fonts).

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Draws the curves into `path` (800×480).
pub fn loss_curve(path: &str, title: &str, train: &[(u64, f32)], val: &[(u64, f32)]) -> Result<(), String> {
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded font did not load".to_string())?;
    let err = |e: &dyn std::fmt::Display| format!("{path}: {e}");
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let last = train.iter().chain(val).map(|p| p.0).max().unwrap_or(1).max(1);
    let values = || train.iter().chain(val).map(|p| p.1).filter(|v| v.is_finite());
    let lo = values().fold(f32::INFINITY, f32::min).min(f32::MAX);
    let hi = values().fold(f32::NEG_INFINITY, f32::max).max(lo + 1e-3);
    let pad = (hi - lo) * 0.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0u64..last, (lo - pad)..(hi + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("cross-entropy (nats per byte)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let blue = RGBColor(70, 110, 200);
    let orange = RGBColor(230, 120, 30);
    chart
        .draw_series(LineSeries::new(train.iter().copied(), blue.stroke_width(1)))
        .map_err(|e| err(&e))?
        .label("training batch")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], blue.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(val.iter().copied(), orange.stroke_width(3)))
        .map_err(|e| err(&e))?
        .label("validation")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], orange.stroke_width(3)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
