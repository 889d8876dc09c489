//! The `store_info` table: facts about the store itself.

use crate::{Result, Store, StoreError};

impl Store {
    /// This store's random id, written once by a migration: run folders are named after it, so
    /// a checkpoint on disk is only ever found by the store whose run wrote it.
    pub async fn store_id(&self) -> Result<String> {
        let id: Option<(String,)> =
            sqlx::query_as("SELECT value FROM store_info WHERE key = 'store_id'")
                .fetch_optional(&self.pool)
                .await?;
        id.map(|(v,)| v)
            .ok_or_else(|| StoreError::NotFound("this store has no store id".into()))
    }
}
