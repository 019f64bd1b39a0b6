//! `TestDb`: a new database per test, migrated, dropped (with its connections) on `Drop`.

use crate::db;
use sqlx::{ConnectOptions, PgPool};

/// Where tests create their databases; override with `FREEAGENT_TEST_DATABASE_URL`.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::empty().await;
        db::migrate(&db.pool).await.expect("migrate test database");
        db
    }

    /// A fresh database with no schema, for tests of migrations and of database creation.
    pub async fn empty() -> Self {
        let admin_url = std::env::var("FREEAGENT_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        Self::empty_on(&admin_url).await
    }

    /// A fresh, migrated database on another server (a `TestPg`).
    pub async fn new_on(admin_url: &str) -> Self {
        let db = Self::empty_on(admin_url).await;
        db::migrate(&db.pool).await.expect("migrate test database");
        db
    }

    pub async fn empty_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let name = format!("fa_test_{}", uuid::Uuid::new_v4().simple());
        let admin = db::connect_options(&admin_url).expect("valid admin URL");
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!("tests need Postgres at {admin_url} ({e}); start it or set FREEAGENT_TEST_DATABASE_URL")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("admin URL must end in /<database>"),
        };
        let pool = db::connect(&url, super::TEST_DATABASE_POOL)
            .await
            .expect("connect to test database");
        TestDb {
            pool,
            url,
            name,
            admin_url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop runs inside the test's runtime, which may be shutting down: use our own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(opts) = db::connect_options(&admin_url)
                    && let Ok(mut conn) = opts.connect().await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
