//! Entity-less retrieval: every row of one view in an event-time range.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use futures::StreamExt;
use quiver_core::selection::{SelectedView, collisions};

use crate::OfflineStore;
use crate::error::{Error, Result};
use crate::join::{JoinOutput, JoinStats};
use crate::scan::{ScanSpec, plan_units, read_unit, run_units};

impl OfflineStore {
    /// Every row of the view's data (source and push log) with `start <= event_ts < end`, in
    /// (file order, row order): the join keys under their names, `event_timestamp`,
    /// `created_timestamp` (only if the source has a created time), then the selected
    /// features in request order. Stats count output rows (`label_rows`, and `matched` for the
    /// view).
    pub async fn read_range(
        &self,
        selected: &SelectedView,
        start: i64,
        end: i64,
    ) -> Result<JoinOutput> {
        let view = &selected.view;
        let features: Vec<_> = selected.selected_features().collect();
        let spec = Arc::new(ScanSpec::new(view, &features, start, end));
        let names = collisions(spec.schema.fields().iter().map(|f| f.name().as_str()));
        if !names.is_empty() {
            return Err(Error::NameCollision { names });
        }
        let (files, hold) = crate::files::view_files(&self.view_reader(), view).await?;
        let units = plan_units(files, Arc::clone(&spec), &self.view_reader()).await?;
        let stats = Arc::new(JoinStats::new([view.name.clone()]));
        let batches = run_units(units, Arc::clone(&spec), self.parallelism, |unit, spec| {
            let mut batches: Vec<RecordBatch> = Vec::new();
            read_unit(unit, spec, &mut |batch| {
                batches.push(batch);
                Ok(())
            })?;
            Ok(batches)
        });
        let counted = Arc::clone(&stats);
        let stream = batches
            .map(|unit| match unit {
                Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok)).left_stream(),
                Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
            })
            .flatten()
            .inspect(move |batch| {
                // The stream reads the files as it goes: it holds them until dropped.
                let _ = &hold;
                if let Ok(batch) = batch {
                    let n = batch.num_rows() as u64;
                    counted.label_rows.fetch_add(n, Ordering::Relaxed);
                    for (_, matched) in &counted.matched {
                        matched.fetch_add(n, Ordering::Relaxed);
                    }
                }
            })
            .boxed();
        Ok(JoinOutput {
            schema: Arc::clone(&spec.schema),
            stream,
            stats,
        })
    }
}
