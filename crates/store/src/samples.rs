//! The `samples` table: sample grids as PNG bytes, listed without their bytes.

use crate::rows::SAMPLE_INFO_COLS;
use crate::{NewSample, Result, SampleInfo, Store, StoreError, now_rfc3339, sql};
use sqlx::Row;

impl Store {
    pub async fn insert_sample(&self, s: &NewSample) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id = sqlx::query(crate::sql(format!(
            "INSERT INTO samples (run_id, step, sampler, sample_steps, prompt, guidance, guidance_scale,
                                  count, width, height, png, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, {}, $8, $9, $10, $11, $12) RETURNING id",
            self.float_arg(7)
        )))
        .bind(s.run_id)
        .bind(s.step)
        .bind(&s.sampler)
        .bind(s.sample_steps)
        .bind(&s.prompt)
        .bind(&s.guidance)
        .bind(crate::float_param(s.guidance_scale))
        .bind(s.count)
        .bind(s.width)
        .bind(s.height)
        .bind(&s.png)
        .bind(now_rfc3339())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(id)
    }

    /// Sample metadata of a run (no image bytes), newest last.
    pub async fn samples(&self, run_id: i64) -> Result<Vec<SampleInfo>> {
        Ok(sqlx::query_as::<_, SampleInfo>(sql(format!(
            "SELECT {SAMPLE_INFO_COLS} FROM samples WHERE run_id = $1 ORDER BY step, id"
        )))
        .bind(run_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn sample_png(&self, sample_id: i64) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT png FROM samples WHERE id = $1")
            .bind(sample_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no sample with id {sample_id}")))?;
        Ok(row.try_get(0)?)
    }

    /// The newest sample grid's metadata of a run (one seek on `samples_run`), for readers
    /// that fetch the bytes only when it changed.
    pub async fn latest_sample_info(&self, run_id: i64) -> Result<Option<SampleInfo>> {
        Ok(sqlx::query_as::<_, SampleInfo>(sql(format!(
            "SELECT {SAMPLE_INFO_COLS} FROM samples WHERE run_id = $1 ORDER BY step DESC, id DESC LIMIT 1"
        )))
        .bind(run_id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// The newest sample grid of a run.
    pub async fn latest_sample(&self, run_id: i64) -> Result<Option<(SampleInfo, Vec<u8>)>> {
        match self.latest_sample_info(run_id).await? {
            Some(i) => {
                let png = self.sample_png(i.id).await?;
                Ok(Some((i, png)))
            }
            None => Ok(None),
        }
    }
}
