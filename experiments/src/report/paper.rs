//! The paper's reported values (`experiments/paper/values/paper-values.yaml`):
//! numbers stated in the text, printed in figures or read off plots, each
//! with its figure, page and how it was obtained, and sampled curves.

use serde_yaml_ng::Value;
use std::collections::HashMap;
use std::path::Path;

/// A value the paper reports.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperValue {
    pub id: String,
    pub figure: String,
    pub page: Option<u64>,
    pub quantity: String,
    pub unit: Option<String>,
    pub setting: String,
    /// One number, or a range's two ends.
    pub value: Vec<f64>,
    /// `text`, `figure-label` or `figure-read`.
    pub source: String,
    /// ± in the value's unit, for values read off plots.
    pub uncertainty: Option<f64>,
    pub quote: Option<String>,
}

impl PaperValue {
    /// Where the value comes from, for a table cell: "Fig. 5, p. 7, read ±0.1".
    pub fn citation(&self) -> String {
        let mut s = self.figure.clone();
        if let Some(p) = self.page {
            s.push_str(&format!(", p. {p}"));
        }
        match (self.source.as_str(), self.uncertainty) {
            ("figure-read", Some(u)) => s.push_str(&format!(", read off the plot ±{u}")),
            ("figure-read", None) => s.push_str(", read off the plot"),
            ("figure-label", _) => s.push_str(", printed in the figure"),
            ("text", _) => s.push_str(", text"),
            _ => {}
        }
        s
    }
}

/// A curve sampled from a figure.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperCurve {
    pub id: String,
    pub figure: String,
    pub series: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default)]
pub struct PaperValues {
    pub values: HashMap<String, PaperValue>,
    pub curves: HashMap<String, PaperCurve>,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

impl PaperValues {
    pub fn load(path: &Path) -> Result<PaperValues, String> {
        let body = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        PaperValues::parse(&body).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(body: &str) -> Result<PaperValues, String> {
        let root: Value = serde_yaml_ng::from_str(body).map_err(|e| e.to_string())?;
        let mut out = PaperValues::default();
        if let Some(Value::Sequence(entries)) = root.get("entries") {
            for (i, e) in entries.iter().enumerate() {
                let id = text(e, "id");
                if id.is_empty() {
                    return Err(format!("entries[{i}]: no id"));
                }
                let value = match e.get("value") {
                    Some(Value::Number(n)) => n.as_f64().into_iter().collect(),
                    Some(Value::Sequence(r)) => r.iter().filter_map(|x| x.as_f64()).collect(),
                    _ => Vec::new(),
                };
                let v = PaperValue {
                    id: id.clone(),
                    figure: text(e, "figure"),
                    page: e.get("page").and_then(|p| p.as_u64()),
                    quantity: text(e, "quantity"),
                    unit: e.get("unit").and_then(|u| u.as_str()).map(str::to_string),
                    setting: text(e, "setting"),
                    value,
                    source: text(e, "source"),
                    uncertainty: e.get("uncertainty").and_then(|u| u.as_f64()),
                    quote: e.get("quote").and_then(|q| q.as_str()).map(str::to_string),
                };
                if out.values.insert(id.clone(), v).is_some() {
                    return Err(format!("entries[{i}]: id {id} appears twice"));
                }
            }
        }
        if let Some(Value::Sequence(curves)) = root.get("curves") {
            for (i, c) in curves.iter().enumerate() {
                let id = text(c, "id");
                if id.is_empty() {
                    return Err(format!("curves[{i}]: no id"));
                }
                let points = match c.get("points") {
                    Some(Value::Sequence(ps)) => ps
                        .iter()
                        .filter_map(|p| match p {
                            Value::Sequence(xy) if xy.len() == 2 => {
                                Some((xy[0].as_f64()?, xy[1].as_f64()?))
                            }
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                out.curves.insert(
                    id.clone(),
                    PaperCurve {
                        id,
                        figure: text(c, "figure"),
                        series: text(c, "series"),
                        points,
                    },
                );
            }
        }
        Ok(out)
    }

    pub fn value(&self, id: &str) -> Result<&PaperValue, String> {
        self.values
            .get(id)
            .ok_or_else(|| format!("paper value `{id}` is not in the paper's values"))
    }

    pub fn curve(&self, id: &str) -> Result<&PaperCurve, String> {
        self.curves
            .get(id)
            .ok_or_else(|| format!("paper curve `{id}` is not in the paper's values"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_ranges_and_curves() {
        let p = PaperValues::parse(
            "entries:\n- {id: a, figure: Figure 5, page: 7, quantity: mean TTFT, unit: s, setting: x, value: 3.07, source: figure-label}\n- {id: b, figure: Figure 5, page: 7, quantity: IQR, value: [0.39, 4.14], source: figure-read, uncertainty: 0.1}\ncurves:\n- {id: c, figure: Figure 1, series: vLLM, points: [[30, 0.03], [40, 0.4]]}\n",
        )
        .unwrap();
        assert_eq!(p.value("a").unwrap().value, [3.07]);
        assert_eq!(
            p.value("a").unwrap().citation(),
            "Figure 5, p. 7, printed in the figure"
        );
        assert_eq!(p.value("b").unwrap().value, [0.39, 4.14]);
        assert_eq!(
            p.value("b").unwrap().citation(),
            "Figure 5, p. 7, read off the plot ±0.1"
        );
        assert_eq!(p.curve("c").unwrap().points, [(30.0, 0.03), (40.0, 0.4)]);
        assert!(p.value("z").unwrap_err().contains("`z`"));
        assert!(PaperValues::parse("entries:\n- {id: a}\n- {id: a}\n")
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn the_shipped_values_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("paper/values/paper-values.yaml");
        let p = PaperValues::load(&path).unwrap();
        assert!(p.values.len() > 300, "{}", p.values.len());
        assert_eq!(p.value("figure5-global-mean").unwrap().value, [3.07]);
        assert!(p.curves.contains_key("figure-1-mooncake"));
    }
}
