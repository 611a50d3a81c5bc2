//! The price table of model tokens (`llm_prices`): what each model's tokens cost, and
//! costs rounded as they are shown.

use super::ConfigError;

/// What a model's tokens cost, in US dollars per million.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    /// The cost of `input` and `output` tokens, to a billionth of a dollar ([`usd`]).
    pub fn of(&self, input: u64, output: u64) -> f64 {
        usd((input as f64 * self.input + output as f64 * self.output) / 1_000_000.0)
    }
}

/// `dollars` to the nearest billionth: what binary fractions add up to is shown as the
/// decimal it stands for (`0.0003`, not `0.00030000000000000003`). The quotient of a whole
/// number by 10⁹ is the double nearest that decimal, which prints as it.
pub fn usd(dollars: f64) -> f64 {
    (dollars * 1e9).round() / 1e9
}

/// `MODEL=INPUT/OUTPUT` pairs (US dollars per million tokens) into the price table.
pub(super) fn parse(pairs: &[String]) -> Result<std::collections::BTreeMap<String, Price>, ConfigError> {
    let mut table = std::collections::BTreeMap::new();
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let parsed = pair.rsplit_once('=').and_then(|(model, cost)| {
            let (input, output) = cost.split_once('/')?;
            let (input, output) = (input.trim().parse::<f64>().ok()?, output.trim().parse::<f64>().ok()?);
            let sane = |p: f64| p.is_finite() && p >= 0.0;
            (!model.trim().is_empty() && sane(input) && sane(output))
                .then(|| (model.trim().to_owned(), Price { input, output }))
        });
        let Some((model, price)) = parsed else {
            return Err(ConfigError::Invalid {
                key: "llm_prices",
                message: format!(
                    "{pair:?} is not MODEL=INPUT/OUTPUT (US dollars per million tokens, e.g. gpt-4o=2.5/10)"
                ),
            });
        };
        table.insert(model, price);
    }
    Ok(table)
}
