//! Label tables uploaded with Flight DoPut, kept in memory by name until the server stops.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// Most label tables kept at once; the oldest is dropped beyond it.
const MAX_UPLOADS: usize = 32;

#[derive(Debug, Default)]
pub struct Uploads {
    tables: Mutex<(HashMap<String, Vec<RecordBatch>>, Vec<String>)>,
}

impl Uploads {
    pub fn put(&self, name: String, batches: Vec<RecordBatch>) -> Result<()> {
        let mut guard = self
            .tables
            .lock()
            .map_err(|_| Error::Internal("uploads poisoned".into()))?;
        let (tables, order) = &mut *guard;
        order.retain(|n| n != &name);
        order.push(name.clone());
        tables.insert(name, batches);
        while order.len() > MAX_UPLOADS {
            let oldest = order.remove(0);
            tables.remove(&oldest);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let guard = self
            .tables
            .lock()
            .map_err(|_| Error::Internal("uploads poisoned".into()))?;
        guard.0.get(name).cloned().ok_or_else(|| Error::NotFound {
            what: "uploaded label table",
            name: name.to_string(),
        })
    }
}
