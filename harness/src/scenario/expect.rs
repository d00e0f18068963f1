//! Expectations: what a scenario file says a given OS should show, as
//! `path = matcher` pairs over the fields of a case report.
//!
//! ```toml
//! [[expect]]
//! os = "linux"
//! claims = ["C6"]
//! why = "SO_LINGER {on, 0} aborts: RST instead of FIN"
//! facts = { "wire.client.rst" = 1, "wire.client.fin" = 0, "steps.lclose.duration_ms" = { max = 50 } }
//! ```
//!
//! This module defines and checks the *language*; `verdict` applies it to
//! observations. Nothing here knows what any scenario should show.

use serde_json::Value;

/// How an observed value is compared with the scenario's expectation.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// Equal to this value (numbers compare numerically).
    Equals(Value),
    /// A number within `[min, max]` (either bound optional).
    Range { min: Option<f64>, max: Option<f64> },
    /// Equal to one of these.
    AnyOf(Vec<Value>),
    /// The field is null: not observed / not applicable (e.g. no errno).
    Null,
    /// A string matching this regular expression (anywhere in it; anchor
    /// with ^ and $).
    Matches(Pattern),
}

/// A compiled regular expression that compares by its source text.
#[derive(Clone, Debug)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Matcher {
    /// Builds a matcher from the TOML value written in the scenario file.
    pub(crate) fn from_toml(v: &toml::Value) -> Result<Matcher, String> {
        Ok(match v {
            toml::Value::Table(t) => {
                let mut min = None;
                let mut max = None;
                let mut any_of = None;
                let mut null = false;
                let mut matches = None;
                for (k, v) in t {
                    match k.as_str() {
                        "min" => min = Some(number(v, "min")?),
                        "max" => max = Some(number(v, "max")?),
                        "any_of" => match v {
                            toml::Value::Array(items) => {
                                any_of = Some(items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?)
                            }
                            _ => return Err("any_of takes a list, e.g. { any_of = [\"EPIPE\", \"ECONNRESET\"] }".into()),
                        },
                        "null" => match v {
                            toml::Value::Boolean(true) => null = true,
                            _ => return Err("write { null = true } to expect a field that was not observed".into()),
                        },
                        "matches" => match v {
                            toml::Value::String(re) => {
                                matches = Some(Pattern(regex::Regex::new(re).map_err(|e| {
                                    format!("matches: not a regular expression: {e}")
                                })?));
                            }
                            _ => return Err("matches takes a regular expression, e.g. { matches = \"c:FP\\\\.\" }".into()),
                        },
                        other => {
                            return Err(format!("unknown matcher key {other:?}; expected min, max, any_of, null or matches"));
                        }
                    }
                }
                match (min.is_some() || max.is_some(), any_of, null, matches) {
                    (true, None, false, None) => Matcher::Range { min, max },
                    (false, Some(values), false, None) => Matcher::AnyOf(values),
                    (false, None, true, None) => Matcher::Null,
                    (false, None, false, Some(re)) => Matcher::Matches(re),
                    _ => {
                        return Err(
                            "a matcher table holds one of: min/max, any_of, null = true, matches"
                                .into(),
                        );
                    }
                }
            }
            toml::Value::Array(_) => {
                return Err("a list is ambiguous here: write { any_of = [...] } to accept any of several values".into());
            }
            other => Matcher::Equals(scalar(other)?),
        })
    }

    /// Whether `observed` (None = field absent) satisfies this matcher.
    pub fn matches(&self, observed: Option<&Value>) -> bool {
        let observed = observed.unwrap_or(&Value::Null);
        match self {
            Matcher::Equals(want) => same(want, observed),
            Matcher::AnyOf(wants) => wants.iter().any(|w| same(w, observed)),
            Matcher::Null => observed.is_null(),
            Matcher::Matches(re) => observed.as_str().is_some_and(|s| re.0.is_match(s)),
            Matcher::Range { min, max } => observed
                .as_f64()
                .is_some_and(|x| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m)),
        }
    }

    /// The expectation as JSON, for reports.
    pub fn to_json(&self) -> Value {
        match self {
            Matcher::Equals(v) => v.clone(),
            Matcher::AnyOf(vs) => serde_json::json!({ "any_of": vs }),
            Matcher::Null => Value::Null,
            Matcher::Matches(re) => serde_json::json!({ "matches": re.0.as_str() }),
            Matcher::Range { min, max } => {
                let mut m = serde_json::Map::new();
                if let Some(v) = min {
                    m.insert("min".into(), (*v).into());
                }
                if let Some(v) = max {
                    m.insert("max".into(), (*v).into());
                }
                Value::Object(m)
            }
        }
    }
}

fn same(want: &Value, got: &Value) -> bool {
    match (want.as_f64(), got.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => want == got,
    }
}

fn number(v: &toml::Value, key: &str) -> Result<f64, String> {
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) => Ok(*f),
        _ => Err(format!("{key} takes a number")),
    }
}

fn scalar(v: &toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::String(s) => Value::from(s.as_str()),
        toml::Value::Boolean(b) => Value::from(*b),
        _ => return Err("expected a number, string or boolean".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(src: &str) -> Result<Matcher, String> {
        let v: toml::Table = toml::from_str(&format!("x = {src}")).unwrap();
        Matcher::from_toml(&v["x"])
    }

    #[test]
    fn equality_is_numeric_for_numbers() {
        let one = m("1").unwrap();
        assert!(one.matches(Some(&json!(1))));
        assert!(one.matches(Some(&json!(1.0))));
        assert!(!one.matches(Some(&json!(2))));
        assert!(!one.matches(None));
        assert!(m("\"RSTO\"").unwrap().matches(Some(&json!("RSTO"))));
    }

    #[test]
    fn ranges_any_of_and_null() {
        let r = m("{ min = 1900, max = 2500.5 }").unwrap();
        assert!(r.matches(Some(&json!(2001.3))));
        assert!(!r.matches(Some(&json!(12.0))));
        assert!(!r.matches(Some(&json!("x"))));
        let a = m("{ any_of = [\"EPIPE\", \"ECONNRESET\"] }").unwrap();
        assert!(a.matches(Some(&json!("EPIPE"))));
        assert!(!a.matches(Some(&json!("EAGAIN"))));
        let n = m("{ null = true }").unwrap();
        assert!(n.matches(None));
        assert!(n.matches(Some(&Value::Null)));
        assert!(!n.matches(Some(&json!(0))));
    }

    #[test]
    fn matches_is_a_regular_expression_over_strings() {
        let t = m("{ matches = \"c:FP\\\\.[0-9]+ s:\\\\.\" }").unwrap();
        assert!(t.matches(Some(&json!("c:S s:S. c:FP.2048 s:. s:F."))));
        assert!(!t.matches(Some(&json!("c:S s:S. c:F. s:."))));
        assert!(!t.matches(Some(&json!(1))));
        assert_eq!(t.to_json(), json!({ "matches": "c:FP\\.[0-9]+ s:\\." }));
        assert!(
            m("{ matches = \"(\" }")
                .unwrap_err()
                .contains("not a regular expression")
        );
    }

    #[test]
    fn bad_matchers_say_what_to_write() {
        assert!(m("[1, 2]").unwrap_err().contains("any_of"));
        assert!(
            m("{ mni = 1 }")
                .unwrap_err()
                .contains("unknown matcher key")
        );
        assert!(
            m("{ min = 1, null = true }")
                .unwrap_err()
                .contains("one of")
        );
    }
}
