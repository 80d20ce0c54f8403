//! A profile: per feature, counts and a summary by type, with the sketches that drift needs.
//! Persisted as JSON (`format` 1); sketches are the DataSketches serial formats (KLL, HLL),
//! readable by the Java, C++ and Python libraries.

use std::collections::BTreeMap;

use quiver_core::types::Micros;
use serde::{Deserialize, Serialize};

/// The persisted format version of [`Profile`].
pub const PROFILE_FORMAT: u32 = 1;

/// What was profiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: u32,
    /// Assigned when stored (0 before).
    pub id: u64,
    pub subject: Subject,
    /// When it was computed (server clock, micros since the epoch).
    pub created_at: Micros,
    /// The event-time window `[start, end)` of the rows, when the rows came from a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(Micros, Micros)>,
    pub origin: Origin,
    /// Rows profiled.
    pub rows: u64,
    pub features: Vec<FeatureProfile>,
}

impl Profile {
    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        self.features.iter().find(|f| f.feature == name)
    }
}

/// The view or service whose features were profiled, at an exact version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// `view` or `service`.
    pub kind: String,
    pub name: String,
    pub version: u32,
    pub fingerprint: String,
    /// The exact view versions read (`name@N`).
    pub views: Vec<String>,
}

/// Why the profile exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// `quiver profile` or the ComputeProfile RPC.
    OnDemand,
    /// The rows of a training export (the model's reference profile).
    Export { path: String },
    /// The rows a materialization run scanned.
    Materialization { job: String },
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::OnDemand => "on demand".into(),
            Origin::Export { path } => format!("export {path}"),
            Origin::Materialization { job } => format!("materialization {job}"),
        }
    }
}

/// One feature's statistics. `count` is every row, `nulls` the null values among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// The column name (for a service: the output name, as in its training exports).
    pub feature: String,
    /// The view version it comes from (`name@N`).
    pub view: String,
    /// The declared type (`float32`, `list<float32>`, ...).
    pub value_type: String,
    pub count: u64,
    pub nulls: u64,
    pub summary: Summary,
    /// Values that broke each declared expectation rule (by rule name; every declared rule,
    /// from 0). Empty when the view declares no expectations for the feature.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub violations: BTreeMap<String, u64>,
}

impl FeatureProfile {
    pub fn null_fraction(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.nulls as f64 / self.count as f64
        }
    }
}

/// What is known about the non-null values, by type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Summary {
    /// Integers, floats and timestamps (as micros).
    Numeric(crate::numeric::NumericSummary),
    /// Strings and bytes (bytes as lowercase hex).
    Categorical(crate::categorical::CategoricalSummary),
    Boolean {
        true_count: u64,
        false_count: u64,
    },
    /// Lists: the length of each non-null list and, for numeric element types, the elements.
    List {
        lengths: crate::numeric::NumericSummary,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elements: Option<crate::numeric::NumericSummary>,
    },
}
