//! A small SVG writer for the benchmark plots: line charts (one or more panels, optional log
//! axes, min-max whiskers) and grouped bar charts. No plotting crate: the plots are simple and
//! the output must be plain, diffable SVG.

use std::fmt::Write as _;

/// Colours that stay apart for colour-blind readers (Okabe-Ito).
pub const COLORS: [&str; 6] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

/// One point: x, the median y and the spread (min, max) of y.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub panels: Vec<Panel>,
    /// Formats an x tick value.
    pub x_fmt: fn(f64) -> String,
    /// Formats a y tick value.
    pub y_fmt: fn(f64) -> String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Maps a value onto [0, 1] of the axis range.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            // Whole decades around the data, so ticks fall on 1-2-5 steps.
            let l = 10f64.powf(lo.log10().floor());
            let h = 10f64.powf(hi.log10().ceil());
            Axis {
                lo: l,
                hi: if h <= l { l * 10.0 } else { h },
                log,
            }
        } else {
            let hi = if hi <= 0.0 { 1.0 } else { hi };
            let step = nice_step(hi / 5.0);
            Axis {
                lo: 0.0,
                hi: (hi / step).ceil() * step,
                log,
            }
        }
    }

    fn frac(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.lo * 1e-3);
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut d = self.lo;
            let decades = (self.hi / self.lo).log10().round() as i32;
            let steps: &[f64] = if decades > 3 {
                &[1.0]
            } else {
                &[1.0, 2.0, 5.0]
            };
            while d <= self.hi * 1.0001 {
                for m in steps {
                    let v = d * m;
                    if v <= self.hi * 1.0001 {
                        t.push(v);
                    }
                }
                d *= 10.0;
            }
            t
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let n = ((self.hi - self.lo) / step).round() as usize;
            (0..=n).map(|i| self.lo + step * i as f64).collect()
        }
    }
}

fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let n = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * p
}

/// Renders a line chart; panels share both axes and sit side by side.
pub fn line_chart(c: &LineChart) -> String {
    let panel_w = 330.0;
    let panel_h = 300.0;
    let (ml, mr, mt, mb) = (70.0, 20.0, 50.0, 120.0);
    let gap = 30.0;
    let n = c.panels.len().max(1) as f64;
    let width = ml + mr + n * panel_w + (n - 1.0) * gap;
    let height = mt + panel_h + mb;
    let all: Vec<&Point> = c
        .panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter()))
        .collect();
    let xa = Axis::new(all.iter().map(|p| p.x), c.log_x);
    let ya = Axis::new(
        all.iter()
            .flat_map(|p| [p.lo, p.hi, p.y])
            .filter(|v| *v > 0.0),
        c.log_y,
    );
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(&c.title)
    );
    for (pi, panel) in c.panels.iter().enumerate() {
        let x0 = ml + pi as f64 * (panel_w + gap);
        let y0 = mt;
        let px = |v: f64| x0 + xa.frac(v) * panel_w;
        let py = |v: f64| y0 + panel_h - ya.frac(v) * panel_h;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
            x0 + panel_w / 2.0,
            y0 - 8.0,
            esc(&panel.title)
        );
        // Grid and ticks.
        let mut xticks: Vec<f64> = if c.log_x {
            // Log x: tick at the data's own x values (sizes), which is what readers look up.
            let mut v: Vec<f64> = all.iter().map(|p| p.x).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        } else {
            xa.ticks()
        };
        xticks.retain(|v| *v >= xa.lo && *v <= xa.hi * 1.0001);
        for t in &xticks {
            let x = px(*t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                y0 + panel_h,
                y0 + panel_h + 16.0,
                esc(&(c.x_fmt)(*t))
            );
        }
        for t in ya.ticks() {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/>"##,
                x0 + panel_w
            );
            if pi == 0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                    x0 - 6.0,
                    y + 4.0,
                    esc(&(c.y_fmt)(t))
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + panel_w / 2.0,
            y0 + panel_h + 36.0,
            esc(&c.x_label)
        );
        for se in &panel.series {
            let pts: Vec<String> = se
                .points
                .iter()
                .filter(|p| !c.log_y || p.y > 0.0)
                .map(|p| format!("{:.1},{:.1}", px(p.x), py(p.y)))
                .collect();
            let dash = if se.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                pts.join(" "),
                se.color
            );
            for p in &se.points {
                if c.log_y && p.y <= 0.0 {
                    continue;
                }
                let x = px(p.x);
                if p.hi > p.lo && (!c.log_y || p.lo > 0.0) {
                    let _ = writeln!(
                        s,
                        r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{}" stroke-width="1.5"/>"#,
                        py(p.lo),
                        py(p.hi),
                        se.color
                    );
                }
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    py(p.y),
                    se.color
                );
            }
        }
    }
    // y label
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        mt + panel_h / 2.0,
        esc(&c.y_label)
    );
    // Legend (series of the first panel; every panel uses the same names).
    if let Some(p) = c.panels.first() {
        let ly = mt + panel_h + 56.0;
        let mut lx = ml;
        for se in &p.series {
            let dash = if se.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 24.0,
                se.color,
                lx + 30.0,
                ly + 4.0,
                esc(&se.name)
            );
            lx += 40.0 + 7.0 * se.name.len() as f64;
            if lx > width - 150.0 {
                lx = ml;
            }
        }
        let _ = writeln!(
            s,
            r##"<text x="{ml}" y="{}" fill="#555">dots: median; vertical bars: min-max over the runs</text>"##,
            ly + 26.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One bar: median and spread, or None (not measured).
#[derive(Debug, Clone)]
pub struct Bar {
    pub name: String,
    pub color: &'static str,
    pub value: Option<(f64, f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct BarGroup {
    pub label: String,
    pub bars: Vec<Bar>,
}

/// Grouped bars with min-max whiskers on a log y axis ("not measured" written in place of a
/// missing bar).
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[BarGroup],
    y_fmt: fn(f64) -> String,
) -> String {
    let (ml, mr, mt, mb) = (70.0, 20.0, 50.0, 90.0);
    let group_w = 150.0;
    let plot_h = 300.0;
    let width = ml + mr + group_w * groups.len().max(1) as f64;
    let height = mt + plot_h + mb;
    let ya = Axis::new(
        groups
            .iter()
            .flat_map(|g| g.bars.iter())
            .filter_map(|b| b.value)
            .flat_map(|(m, lo, hi)| [m, lo, hi])
            .filter(|v| *v > 0.0),
        true,
    );
    let py = |v: f64| mt + plot_h - ya.frac(v) * plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    let pw = width - ml - mr;
    for t in ya.ticks() {
        let y = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 6.0,
            y + 4.0,
            esc(&y_fmt(t))
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    for (gi, g) in groups.iter().enumerate() {
        let gx = ml + gi as f64 * group_w;
        let n = g.bars.len().max(1) as f64;
        let bw = (group_w - 40.0) / n;
        for (bi, b) in g.bars.iter().enumerate() {
            let x = gx + 20.0 + bi as f64 * bw;
            match b.value {
                Some((m, lo, hi)) if m > 0.0 => {
                    let y = py(m);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                        x + 2.0,
                        bw - 4.0,
                        (mt + plot_h - y).max(0.0),
                        b.color
                    );
                    if hi > lo && lo > 0.0 {
                        let cx = x + bw / 2.0;
                        let _ = writeln!(
                            s,
                            r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#222" stroke-width="1.5"/>"##,
                            py(lo),
                            py(hi)
                        );
                    }
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r##"<text transform="translate({:.1},{:.1}) rotate(-90)" fill="#900">not measured</text>"##,
                        x + bw / 2.0 + 4.0,
                        mt + plot_h - 6.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            mt + plot_h + 16.0,
            esc(&g.label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        mt + plot_h / 2.0,
        esc(y_label)
    );
    if let Some(g) = groups.first() {
        let ly = mt + plot_h + 44.0;
        let mut lx = ml;
        for b in &g.bars {
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{}" width="14" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                ly - 8.0,
                b.color,
                lx + 20.0,
                ly + 1.0,
                esc(&b.name)
            );
            lx += 40.0 + 7.0 * b.name.len() as f64;
        }
        let _ = writeln!(
            s,
            r##"<text x="{ml}" y="{}" fill="#555">bars: median (log scale); whiskers: min-max over the repetitions</text>"##,
            ly + 24.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_covers_data_in_whole_decades() {
        let a = Axis::new([0.03, 4.0].into_iter(), true);
        assert_eq!((a.lo, a.hi), (0.01, 10.0));
        assert!((a.frac(0.01) - 0.0).abs() < 1e-9 && (a.frac(10.0) - 1.0).abs() < 1e-9);
        assert!(a.ticks().contains(&0.5));
    }

    #[test]
    fn linear_axis_starts_at_zero_with_round_steps() {
        let a = Axis::new([12.0, 87.0].into_iter(), false);
        assert_eq!((a.lo, a.hi), (0.0, 100.0));
        assert_eq!(a.ticks().len(), 6);
    }

    #[test]
    fn chart_escapes_text_and_draws_every_series() {
        let c = LineChart {
            title: "a < b & c".into(),
            x_label: "paths".into(),
            y_label: "s".into(),
            log_x: true,
            log_y: true,
            panels: vec![Panel {
                title: "p".into(),
                series: vec![Series {
                    name: "scan".into(),
                    color: COLORS[0],
                    dashed: false,
                    points: vec![
                        Point {
                            x: 1024.0,
                            y: 0.1,
                            lo: 0.09,
                            hi: 0.2,
                        },
                        Point {
                            x: 4096.0,
                            y: 0.4,
                            lo: 0.4,
                            hi: 0.4,
                        },
                    ],
                }],
            }],
            x_fmt: |v| format!("{v}"),
            y_fmt: |v| format!("{v}"),
        };
        let svg = line_chart(&c);
        assert!(svg.contains("a &lt; b &amp; c"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn bar_chart_says_not_measured_for_missing_values() {
        let g = vec![BarGroup {
            label: "cold start".into(),
            bars: vec![
                Bar {
                    name: "ours".into(),
                    color: COLORS[0],
                    value: None,
                },
                Bar {
                    name: "theirs".into(),
                    color: COLORS[1],
                    value: Some((2.0, 1.5, 3.0)),
                },
            ],
        }];
        let svg = bar_chart("t", "s", &g, |v| format!("{v}"));
        assert!(svg.contains("not measured"));
        assert_eq!(svg.matches("<rect").count(), 2 + 1 + 2);
    }
}
