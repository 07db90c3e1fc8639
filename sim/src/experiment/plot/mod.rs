//! `sim plot`: draws an experiment's results table as the figure its config describes, PNG and SVG, with
//! the CSV of the plotted points. Text uses DejaVu Sans shipped in `sim/assets/` (no system fonts); the PNG's
//! text goes through `glyphs` (plotters' bitmap text misplaces glyphs).
//!
//! The config's `plot` section:
//!
//! ```json
//! "plot": {
//!   "kind": "line",                      // line (numeric or categorical x) | bar (grouped bars) |
//!                                        // timeline | cdf (per-run files: `timeline_plot`)
//!   "x": "rate", "x_label": "Request rate (RPS)",
//!   "series": ["system"],                // axes whose labels name a curve (joined with " / ")
//!   "series_label": "{}",                // optional template for the name, e.g. "{} RPS"
//!   "panels": [ { "y": "ttft_p99_s", "label": "P99 TTFT (s)", "scale": 1, "log": true,
//!                 "hline": 5, "hline_label": "SLO 5 s", "err": ["throughput_slo_ci_lo", "throughput_slo_ci_hi"],
//!                 "zero": false, "min": 0, "max": 100 } ],
//!   "paper": [ { "series": "S-LoRA", "y": "ttft_p99_s", "points": [[6, 1.9], [8, 4.1]] } ]
//! }
//! ```
//!
//! Rows with the same x and series (seeds) are averaged; the whisker is a 95% percentile-bootstrap interval of
//! that mean over the seeds (none for one seed), or the `err` columns (e.g. the throughput's interval).
//! Every series has its own colour, marker and dash pattern, so overlapping curves stay apart in grey
//! print. `log` defaults to on where a panel's positive values span two decades or more; `zero` (the y axis
//! from 0) defaults to on for bars. A metric that is a fraction (hit rate, attainment, share, utilisation)
//! keeps its axis within [0, 1] x `scale`; `min` / `max` clamp any axis. The paper's own numbers are
//! overlaid: `paper` points (metric units), and the experiment's `claims` whose paper value is a number at
//! a plotted point (filled diamonds), or a change / ratio against a baseline (hollow diamonds: the paper's
//! change applied to this model's baseline).
//!
//! Rooms: `spec` (the config's `plot` section, parsed by serde), `data` (rows -> points, whiskers, the paper's
//! numbers, CSV), `style` (font, colours, markers, dashes, numbers), `render` (plotters).

mod data;
mod render;
mod spec;
mod style;
#[cfg(test)]
mod tests;

pub use data::{
    Figure, PanelData, PaperMark, Point, Series, Whisker, add_claims, bootstrap_ci, figure,
    figure_csv, label_text,
};
pub use render::{LogAxis, draw_log_grid, log_ticks, write_figure};
pub use spec::{Kind, Panel, PaperSpec, PlotSpec, Source};
pub(super) use style::FONT;
pub use style::{colour, dash, fmt_num, register_font};
