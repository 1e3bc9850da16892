//! Charts drawn by the server as SVG (plotters' SVG backend): no JavaScript, no image files,
//! readable when printed. Labels come from the policies and the server's words, and plotters
//! escapes text it writes into the SVG.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::error::Error;

/// Colours that stay apart on screen and on a grey printer.
const COLOURS: [RGBColor; 8] = [
    RGBColor(11, 92, 173),
    RGBColor(224, 161, 0),
    RGBColor(46, 125, 50),
    RGBColor(163, 32, 32),
    RGBColor(106, 27, 154),
    RGBColor(0, 131, 143),
    RGBColor(121, 85, 72),
    RGBColor(96, 125, 139),
];

pub struct Series {
    pub name: String,
    pub values: Vec<i64>,
}

#[derive(Clone, Copy)]
pub enum Shape {
    /// One bar per label, the series stacked on it.
    Stacked,
    /// One line per series, a dot per label.
    Lines,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 300;

/// The chart as an `<svg>` element.
pub fn draw(
    title: &str,
    labels: &[String],
    series: &[Series],
    shape: Shape,
) -> Result<String, Error> {
    let mut svg = String::new();
    render(&mut svg, title, labels, series, shape)
        .map_err(|e| Error::Internal(anyhow::anyhow!("chart {title}: {e}")))?;
    Ok(svg)
}

fn render(
    svg: &mut String,
    title: &str,
    labels: &[String],
    series: &[Series],
    shape: Shape,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = labels.len().max(1);
    let top = match shape {
        Shape::Stacked => (0..n)
            .map(|i| {
                series
                    .iter()
                    .map(|s| s.values.get(i).copied().unwrap_or(0))
                    .sum::<i64>()
            })
            .max()
            .unwrap_or(0),
        Shape::Lines => series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .max()
            .unwrap_or(0),
    };
    let top = top.max(1) + 1;
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(36)
        .build_cartesian_2d((0..n).into_segmented(), 0i64..top)?;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v: &i64| v.to_string())
        .draw()?;
    let mut base = vec![0i64; n];
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let drawn = match shape {
            Shape::Stacked => {
                let bars: Vec<Rectangle<(SegmentValue<usize>, i64)>> = (0..n)
                    .map(|i| {
                        let v = s.values.get(i).copied().unwrap_or(0);
                        let mut bar = Rectangle::new(
                            [
                                (SegmentValue::Exact(i), base[i]),
                                (SegmentValue::Exact(i + 1), base[i] + v),
                            ],
                            colour.filled(),
                        );
                        bar.set_margin(0, 0, 6, 6);
                        base[i] += v;
                        bar
                    })
                    .collect();
                chart.draw_series(bars)?
            }
            Shape::Lines => {
                let points: Vec<(SegmentValue<usize>, i64)> = (0..n)
                    .map(|i| {
                        (
                            SegmentValue::CenterOf(i),
                            s.values.get(i).copied().unwrap_or(0),
                        )
                    })
                    .collect();
                chart.draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new(p.clone(), 3, colour.filled())),
                )?;
                chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            }
        };
        drawn
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stacked_chart_is_an_svg_with_its_labels_escaped() {
        let svg = draw(
            "每周变更 <b>",
            &["12/01".into(), "12/08".into()],
            &[
                Series {
                    name: "软件升级 & 补丁".into(),
                    values: vec![2, 0],
                },
                Series {
                    name: "数据修改".into(),
                    values: vec![1, 3],
                },
            ],
            Shape::Stacked,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("12/08") && svg.contains("数据修改"));
        assert!(!svg.contains("<b>") && !svg.contains("& 补丁"), "{svg}");
        // Two series over two weeks: four bars (and the legend's two swatches).
        assert!(svg.matches("<rect").count() >= 6, "{svg}");
    }

    #[test]
    fn lines_draw_a_dot_per_label() {
        let svg = draw(
            "x",
            &["a".into(), "b".into(), "c".into()],
            &[Series {
                name: "s".into(),
                values: vec![0, 5, 1],
            }],
            Shape::Lines,
        )
        .unwrap();
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
    }
}
