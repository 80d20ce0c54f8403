//! Label tables uploaded with Flight DoPut, kept in memory by name until the server stops.

use arrow::record_batch::RecordBatch;

use crate::bounded::BoundedMap;
use crate::error::{Error, Result};

/// Most label tables kept at once; the oldest is dropped beyond it.
const MAX_UPLOADS: usize = 32;

#[derive(Debug)]
pub struct Uploads {
    tables: BoundedMap<Vec<RecordBatch>>,
}

impl Default for Uploads {
    fn default() -> Self {
        Uploads {
            tables: BoundedMap::new(MAX_UPLOADS),
        }
    }
}

impl Uploads {
    pub fn put(&self, name: String, batches: Vec<RecordBatch>) -> Result<()> {
        self.tables.insert(name, batches)
    }

    pub fn get(&self, name: &str) -> Result<Vec<RecordBatch>> {
        self.tables.get(name)?.ok_or_else(|| Error::NotFound {
            what: "uploaded label table",
            name: name.to_string(),
        })
    }
}
