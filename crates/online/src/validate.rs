//! Validation of rows given to `write_rows`: key shape, value count and value types.

use quiver_core::ResolvedView;
use quiver_core::value::{Row, Value};

use crate::error::{Error, Result};
use crate::keys::check_key;

/// Checks row `index` of a batch against `view`; errors name the field (`rows[3].values[1]`).
pub(crate) fn validate_row(view: &ResolvedView, index: usize, row: &Row) -> Result<()> {
    check_key(view, &row.key)
        .map_err(|error| Error::invalid_row(format!("rows[{index}].key"), error.to_string()))?;
    if row.values.len() != view.features.len() {
        return Err(Error::invalid_row(
            format!("rows[{index}].values"),
            format!(
                "{} values for the {} features of `{}`",
                row.values.len(),
                view.features.len(),
                view.pinned_name()
            ),
        ));
    }
    for (position, (value, feature)) in row.values.iter().zip(&view.features).enumerate() {
        if !value.fits(feature.value_type) {
            return Err(Error::invalid_row(
                format!("rows[{index}].values[{position}]"),
                format!(
                    "feature `{}` is {}, got {}",
                    feature.name,
                    feature.value_type,
                    describe(value)
                ),
            ));
        }
    }
    Ok(())
}

/// Names a value's type for error messages without printing the value (lists can be long).
fn describe(value: &Value) -> String {
    match value {
        Value::List(items) => {
            let mut names: Vec<&str> = items
                .iter()
                .filter(|item| !item.is_null())
                .map(|item| item.scalar_type().map_or("list", |t| t.name()))
                .collect();
            names.sort_unstable();
            names.dedup();
            format!("a list of {}", names.join(" and "))
        }
        scalar => scalar.scalar_type().map_or_else(
            || "null".to_string(),
            |t| format!("a value of type {}", t.name()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_described_by_type_not_content() {
        let table = [
            (Value::Null, "null"),
            (Value::Int32(1), "a value of type int32"),
            (
                Value::List(vec![Value::Float64(1.0), Value::Null, Value::Bool(true)]),
                "a list of bool and float64",
            ),
            (Value::List(vec![Value::List(vec![])]), "a list of list"),
        ];
        for (value, want) in table {
            assert_eq!(describe(&value), want);
        }
    }
}
