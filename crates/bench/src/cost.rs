//! Dollars per million tokens from an hourly price: `--price-per-hour` or an entry of the
//! bundled list-price table benches/instances.toml (`--instance aws:g6.xlarge`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The bundled table.
pub const INSTANCES_TOML: &str = include_str!("../../../benches/instances.toml");

/// One instance type and its on-demand list price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// `provider:name`, e.g. `aws:g6.xlarge`.
    pub id: String,
    /// `aws`, `gcp`, `azure`.
    pub provider: String,
    /// The provider's name for it.
    pub name: String,
    /// The region the price is for.
    pub region: String,
    /// On-demand list price, USD per hour.
    pub usd_per_hour: f64,
    /// Accelerators, or `none (...)`.
    pub accelerator: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// When the price was read off `source` (YYYY-MM or YYYY-MM-DD).
    pub as_of: String,
    /// The price page.
    pub source: String,
    /// Caveats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Deserialize)]
struct Table {
    instance: Vec<Instance>,
}

/// Parses an instance table.
pub fn parse_instances(text: &str) -> Result<Vec<Instance>> {
    let t: Table = toml::from_str(text).context("instances table")?;
    Ok(t.instance)
}

/// The bundled table.
pub fn builtin_instances() -> Vec<Instance> {
    parse_instances(INSTANCES_TOML).expect("benches/instances.toml parses (tested)")
}

/// Looks up `provider:name` in the bundled table.
pub fn lookup(id: &str) -> Result<Instance> {
    let all = builtin_instances();
    if let Some(i) = all.iter().find(|i| i.id.eq_ignore_ascii_case(id)) {
        return Ok(i.clone());
    }
    let known: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    bail!(
        "unknown instance '{id}'; known: {} (or pass --price-per-hour)",
        known.join(", ")
    )
}

/// The price a result was costed at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// USD per hour.
    pub usd_per_hour: f64,
    /// The instance id, when from the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `list price as of DATE` or `user-supplied`.
    pub basis: String,
    /// The price page, when from the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Pricing {
    /// From `--price-per-hour` / `--instance` (the explicit price wins).
    pub fn from_args(price_per_hour: Option<f64>, instance: Option<&str>) -> Result<Option<Self>> {
        if let Some(p) = price_per_hour {
            if !(p.is_finite() && p >= 0.0) {
                bail!("--price-per-hour must be a non-negative number");
            }
            return Ok(Some(Pricing {
                usd_per_hour: p,
                instance: instance.map(str::to_string),
                basis: "user-supplied".into(),
                source: None,
            }));
        }
        let Some(id) = instance else { return Ok(None) };
        let i = lookup(id)?;
        Ok(Some(Pricing {
            usd_per_hour: i.usd_per_hour,
            instance: Some(i.id),
            basis: format!("on-demand list price as of {} ({})", i.as_of, i.region),
            source: Some(i.source),
        }))
    }

    /// USD per million tokens at `tokens_per_s` (`None` at zero throughput).
    pub fn usd_per_million(&self, tokens_per_s: f64) -> Option<f64> {
        usd_per_million(self.usd_per_hour, tokens_per_s)
    }
}

/// USD per million tokens for a machine costing `usd_per_hour` producing `tokens_per_s`.
pub fn usd_per_million(usd_per_hour: f64, tokens_per_s: f64) -> Option<f64> {
    (tokens_per_s > 0.0).then(|| usd_per_hour / 3600.0 / tokens_per_s * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_is_documented() {
        let all = builtin_instances();
        assert!(all.len() >= 10);
        let mut ids = std::collections::HashSet::new();
        for i in &all {
            assert!(ids.insert(i.id.clone()), "duplicate {}", i.id);
            assert_eq!(i.id, format!("{}:{}", i.provider, i.name));
            assert!(i.usd_per_hour > 0.0, "{}", i.id);
            let d = &i.as_of;
            let date_ok = (d.len() == 7 || d.len() == 10)
                && d[..4].parse::<u32>().is_ok()
                && d.as_bytes()[4] == b'-';
            assert!(date_ok, "{}: as_of '{d}'", i.id);
            assert!(i.source.starts_with("https://"), "{}: source", i.id);
        }
        for want in [
            "aws:g6.xlarge",
            "aws:g5.xlarge",
            "aws:p5.48xlarge",
            "aws:trn1.2xlarge",
            "aws:inf2.xlarge",
            "aws:c7i.large",
            "aws:c7a.xlarge",
        ] {
            assert!(lookup(want).is_ok(), "{want}");
        }
        assert!(INSTANCES_TOML.contains("LIST PRICES"));
        let e = lookup("aws:nope").unwrap_err().to_string();
        assert!(e.contains("aws:g6.xlarge"), "{e}");
    }

    #[test]
    fn dollars_per_million() {
        // 3.6 USD/h = 0.001 USD/s; at 1000 tok/s that is 1e-6 USD per token = 1 USD per Mtok.
        assert!((usd_per_million(3.6, 1000.0).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(usd_per_million(3.6, 0.0), None);
        let p = Pricing::from_args(None, Some("aws:g6.xlarge"))
            .unwrap()
            .unwrap();
        assert_eq!(p.usd_per_hour, 0.8048);
        assert!(p.basis.contains("list price as of"));
        // 0.8048 USD/h at 100 tok/s: 0.8048 / 3600 / 100 * 1e6 = 2.2356 USD/Mtok.
        assert!((p.usd_per_million(100.0).unwrap() - 2.235_555_6).abs() < 1e-6);
        let u = Pricing::from_args(Some(2.0), Some("aws:g6.xlarge"))
            .unwrap()
            .unwrap();
        assert_eq!(u.usd_per_hour, 2.0);
        assert_eq!(u.basis, "user-supplied");
        assert_eq!(Pricing::from_args(None, None).unwrap(), None);
        assert!(Pricing::from_args(Some(-1.0), None).is_err());
    }
}
