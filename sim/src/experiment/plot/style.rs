//! How a figure looks: the shipped font, each series' colour, marker and dash pattern, number formatting.

use std::sync::Once;

use plotters::prelude::*;

pub(crate) static FONT: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
pub(super) const FAMILY: &str = "sans-serif";

/// Registers the shipped font for every style plotters asks for.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            for family in [FAMILY, "serif", "monospace"] {
                assert!(
                    plotters::style::register_font(family, style, FONT).is_ok(),
                    "the shipped TTF parses"
                );
            }
        }
    });
}

/// Eight colours a reader tells apart on screen and in print, colour-blind safe in pairs that matter: no two
/// blues or two oranges (Okabe-Ito's sky blue and orange sit too close to its blue and vermillion with eight
/// series); olive and wine from Paul Tol's muted set, then black and grey.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(153, 153, 51),  // olive
    RGBColor(136, 34, 85),   // wine
    RGBColor(0, 0, 0),       // black
    RGBColor(150, 150, 150), // grey
];

/// Dash patterns (on, off, ... pixels): solid, dashed, dotted, dash-dot, long dash, dash-dot-dot.
const DASHES: [&[f64]; 6] = [
    &[],
    &[9.0, 5.0],
    &[2.0, 4.0],
    &[10.0, 4.0, 2.0, 4.0],
    &[18.0, 5.0],
    &[10.0, 3.0, 2.0, 3.0, 2.0, 3.0],
];

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
    Star,
}

/// As many shapes as colours, so series i and i + 8 are the only pair that look alike.
const MARKERS: [Marker; 8] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Cross,
    Marker::Plus,
    Marker::Star,
];

/// Series i's colour (for figures drawn outside `render`).
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Series i's colour, marker and dash pattern.
pub(super) fn look(i: usize) -> (RGBColor, Marker, &'static [f64]) {
    (
        PALETTE[i % PALETTE.len()],
        MARKERS[i % MARKERS.len()],
        DASHES[i % DASHES.len()],
    )
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The pieces of a polyline (pixels) that a dash pattern draws.
pub fn dash(points: &[(i32, i32)], pattern: &[f64]) -> Vec<Vec<(i32, i32)>> {
    if pattern.is_empty() || points.len() < 2 {
        return vec![points.to_vec()];
    }
    let mut out = Vec::new();
    let mut cur: Vec<(i32, i32)> = vec![points[0]];
    let (mut k, mut left, mut on) = (0, pattern[0], true);
    for w in points.windows(2) {
        let (a, b) = (
            (w[0].0 as f64, w[0].1 as f64),
            (w[1].0 as f64, w[1].1 as f64),
        );
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let mut at = 0.0;
        while len - at > left {
            at += left;
            let p = (
                (a.0 + (b.0 - a.0) * at / len).round() as i32,
                (a.1 + (b.1 - a.1) * at / len).round() as i32,
            );
            if on {
                cur.push(p);
                out.push(std::mem::take(&mut cur));
            } else {
                cur = vec![p];
            }
            on = !on;
            k = (k + 1) % pattern.len();
            left = pattern[k];
        }
        left -= len - at;
        if on {
            cur.push(w[1]);
        }
    }
    if on && cur.len() > 1 {
        out.push(cur);
    }
    out
}
