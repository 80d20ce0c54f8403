//! A validated StartMaterialization request and the windows it asks for.

use quiver_core::types::{Micros, format_rfc3339};
use quiver_proto::v1;

use crate::error::{Error, Result};

/// Which rows a materialization reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `[start, end)`.
    Range { start: Micros, end: Micros },
    /// From each view's watermark (the beginning of time without one) to `end`.
    Incremental { end: Micros },
}

/// A validated StartMaterialization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializeRequest {
    /// View names (`name` or `name@N`); empty = every online view.
    pub views: Vec<String>,
    pub window: Window,
}

impl MaterializeRequest {
    pub fn from_wire(request: &v1::StartMaterializationRequest) -> Result<MaterializeRequest> {
        let window = if request.incremental {
            Window::Incremental {
                end: request.end_micros,
            }
        } else if request.start_micros >= request.end_micros {
            return Err(Error::invalid(
                "start",
                format!(
                    "start {} is not before end {}",
                    format_rfc3339(request.start_micros),
                    format_rfc3339(request.end_micros)
                ),
            ));
        } else {
            Window::Range {
                start: request.start_micros,
                end: request.end_micros,
            }
        };
        Ok(MaterializeRequest {
            views: request.views.clone(),
            window,
        })
    }
}

/// An incremental run's window: from the watermark (the beginning of time without one) to
/// `end`. An `end` before the watermark would write nothing and report success; it is
/// refused, since the data up to the watermark is already online.
pub(super) fn incremental_window(
    view: &str,
    watermark: Option<Micros>,
    end: Micros,
) -> Result<(Micros, Micros)> {
    match watermark {
        Some(watermark) if end < watermark => Err(Error::invalid(
            "end",
            format!(
                "end {} is before view `{view}`'s watermark {}: it is materialized up to there already; give an end at or after the watermark, or run a window with `start`",
                format_rfc3339(end),
                format_rfc3339(watermark)
            ),
        )),
        Some(watermark) => Ok((watermark, end)),
        None => Ok((i64::MIN, end)),
    }
}
