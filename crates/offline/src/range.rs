//! Entity-less retrieval: every row of one view in an event-time range.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use futures::StreamExt;
use quiver_core::ResolvedView;

use crate::OfflineStore;
use crate::error::Result;
use crate::join::{JoinOutput, JoinStats, check_collisions, select_features};
use crate::scan::{ScanSpec, plan_units, read_unit, run_units};

impl OfflineStore {
    /// Every row of the view's data (source and push log) with `start <= event_ts < end`, in
    /// (file order, row order): the join keys under their names, `event_timestamp`,
    /// `created_timestamp` (only if the source has a created time), then `features` in the
    /// order given. Stats count output rows (`label_rows`, and `matched` for the view).
    pub async fn read_range(
        &self,
        view: &ResolvedView,
        features: &[String],
        start: i64,
        end: i64,
    ) -> Result<JoinOutput> {
        let selected = select_features(view, features, 0)?;
        let spec = Arc::new(ScanSpec::new(view, &selected, start, end));
        let fields: Vec<_> = spec
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        check_collisions(&fields)?;
        let files = crate::files::view_files(&self.data_dir, view)?;
        let units = plan_units(files, Arc::clone(&spec), self.parallelism).await?;
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
