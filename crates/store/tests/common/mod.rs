//! Helpers the store's integration tests share.

use ddlab_store::Store;

/// A fresh database on the test server, or None (with a visible note) when none is configured.
pub async fn postgres_store(test: &str) -> Option<(Store, String)> {
    let Ok(admin) = std::env::var("DDLAB_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED {test} on PostgreSQL: set DDLAB_TEST_POSTGRES_URL to run it");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("ddlab_t_{}_{}", test, std::process::id());
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .expect("cannot reach DDLAB_TEST_POSTGRES_URL");
    for stmt in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&pool)
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{name}");
    Some((Store::connect(&url, true).await.unwrap(), url))
}
