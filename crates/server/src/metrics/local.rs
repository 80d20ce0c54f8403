//! Per-thread caches of labelled metric children, so that recording on a request path takes
//! no lock shared between requests (a `*Vec::with_label_values` takes a read lock on the
//! family's map; here it runs once per thread, view and method). A handle is a clone of the
//! child: the same atomics, so every thread adds to the one exported value.
//!
//! Caches are keyed by the owning [`super::Metrics`]' id (several servers may share a
//! process in tests). They grow with the methods and views a thread has recorded, both
//! bounded by the registry and the method table.

use std::cell::RefCell;
use std::collections::HashMap;

use prometheus::{Histogram, IntCounter};

/// The children of one (method, code).
#[derive(Debug, Clone)]
pub(super) struct RpcHandles {
    pub(super) requests: IntCounter,
    pub(super) duration: Histogram,
}

/// The children of one view: online reads and pushes.
#[derive(Debug, Clone)]
pub(super) struct ViewHandles {
    pub(super) entities: IntCounter,
    /// By status, in [`super::STATUSES`] order.
    pub(super) values: [IntCounter; 4],
    pub(super) pushed_online: IntCounter,
    pub(super) pushed_offline: IntCounter,
    pub(super) skipped_older: IntCounter,
}

#[derive(Debug, Default)]
struct Caches {
    rpc: HashMap<(u16, tonic::Code), RpcHandles>,
    views: HashMap<String, ViewHandles>,
}

thread_local! {
    static CACHES: RefCell<HashMap<u64, Caches>> = RefCell::new(HashMap::new());
}

/// Runs `record` with this thread's handles of (`method`, `code`) of metrics `id`, made by
/// `make` on the thread's first use.
pub(super) fn with_rpc(
    id: u64,
    method: u16,
    code: tonic::Code,
    make: impl FnOnce((u16, tonic::Code)) -> RpcHandles,
    record: impl FnOnce(&RpcHandles),
) {
    CACHES.with(|caches| {
        let mut caches = caches.borrow_mut();
        let handles = caches
            .entry(id)
            .or_default()
            .rpc
            .entry((method, code))
            .or_insert_with(|| make((method, code)));
        record(handles);
    });
}

/// Runs `record` with this thread's handles of view `view` of metrics `id`, made by `make` on
/// the thread's first use.
pub(super) fn with_view(
    id: u64,
    view: &str,
    make: impl FnOnce(&str) -> ViewHandles,
    record: impl FnOnce(&ViewHandles),
) {
    CACHES.with(|caches| {
        let mut caches = caches.borrow_mut();
        let views = &mut caches.entry(id).or_default().views;
        if let Some(handles) = views.get(view) {
            record(handles);
            return;
        }
        let handles = make(view);
        record(&handles);
        views.insert(view.to_string(), handles);
    });
}
