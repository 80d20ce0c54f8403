//! Feature expectations on push (`monitoring.expectations` of the target view): every row of
//! every expected feature is checked while the push is validated. Under `on_violation:
//! reject` the first violation refuses the push (INVALID_ARGUMENT naming the row, the column
//! and the rule); under `warn` the push is written and the violations are counted
//! (`quiver_validation_violations_total`).

use std::collections::BTreeMap;

use quiver_core::ResolvedView;
use quiver_core::expectations::{Expectation, OnViolation, Rule};
use quiver_core::monitoring::MonitoringSpec;
use quiver_core::value::{Row, Value};

use crate::error::{Error, Result};

/// Violations counted in a push, per (view, feature, rule).
pub(crate) type Violations = BTreeMap<(String, String, Rule), u64>;

/// The checks of one target view over the chunks of one push.
#[derive(Debug)]
pub(crate) struct RuleCheck<'a> {
    view: &'a ResolvedView,
    policy: OnViolation,
    /// (position in the view's features, name, rules, nulls seen).
    features: Vec<(usize, &'a str, &'a Expectation, usize)>,
}

impl<'a> RuleCheck<'a> {
    /// None when the view expects nothing.
    pub(crate) fn new(view: &'a ResolvedView, spec: &'a MonitoringSpec) -> Option<RuleCheck<'a>> {
        let features: Vec<_> = spec
            .expectations
            .iter()
            .filter_map(|(name, rules)| {
                let position = view.features.iter().position(|f| &f.name == name)?;
                Some((position, name.as_str(), rules, 0))
            })
            .collect();
        (!features.is_empty()).then_some(RuleCheck {
            view,
            policy: spec.on_violation,
            features,
        })
    }

    /// Checks `rows` (the push's rows from `first_row` on).
    pub(crate) fn rows(
        &mut self,
        rows: &[Row],
        first_row: usize,
        violations: &mut Violations,
    ) -> Result<()> {
        for (i, row) in rows.iter().enumerate() {
            for (position, name, rules, nulls) in &mut self.features {
                let value = row.values.get(*position).unwrap_or(&Value::Null);
                *nulls += usize::from(value.is_null());
                if let Some(rule) = rules.check(value) {
                    let at = format!("columns.{name}[{}]", first_row + i);
                    count(violations, self.view, name, rule, 1);
                    if self.policy == OnViolation::Reject {
                        return Err(rejected(self.view, at, name, rule, rules, value));
                    }
                }
            }
        }
        Ok(())
    }

    /// The batch rules (`max_null_fraction`) once every row was seen.
    pub(crate) fn finish(self, n_rows: usize, violations: &mut Violations) -> Result<()> {
        for (_, name, rules, nulls) in &self.features {
            if !rules.null_fraction_ok(*nulls, n_rows) {
                let rule = Rule::MaxNullFraction;
                count(violations, self.view, name, rule, 1);
                if self.policy == OnViolation::Reject {
                    return Err(Error::Violation {
                        field: format!("columns.{name}"),
                        message: format!(
                            "{nulls} of {n_rows} values are null, more than `max_null_fraction` {} of feature `{name}` allows; view `{}` rejects pushes that break its expectations (monitoring.on_violation: reject)",
                            rules.max_null_fraction.unwrap_or(0.0),
                            self.view.name
                        ),
                        view: self.view.name.clone(),
                        feature: name.to_string(),
                        rule: rule.name(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn rejected(
    view: &ResolvedView,
    field: String,
    name: &str,
    rule: Rule,
    rules: &Expectation,
    value: &Value,
) -> Error {
    let why = match rule {
        Rule::NotNull => "is null".to_string(),
        Rule::Min => format!("{value:?} is below `min` {}", rules.min.unwrap_or(0.0)),
        Rule::Max => format!("{value:?} is above `max` {}", rules.max.unwrap_or(0.0)),
        Rule::Allowed => format!("{value:?} is not in `allowed`"),
        Rule::ListLength => "has a length outside `list_length`".to_string(),
        Rule::MaxNullFraction => "has too many nulls".to_string(),
    };
    Error::Violation {
        field,
        message: format!(
            "breaks `{}` of feature `{name}`: the value {why}; view `{}` rejects pushes that break its expectations (monitoring.on_violation: reject)",
            rule.name(),
            view.name
        ),
        view: view.name.clone(),
        feature: name.to_string(),
        rule: rule.name(),
    }
}

fn count(violations: &mut Violations, view: &ResolvedView, feature: &str, rule: Rule, n: u64) {
    *violations
        .entry((view.name.clone(), feature.to_string(), rule))
        .or_default() += n;
}
