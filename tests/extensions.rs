//! The extensions the embedded engine offers: each one is created through
//! the gateway and does its job, and one the engine lacks is refused
//! clearly.

mod support;

use support::{Gateway, sqlstate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_and_the_contrib_extensions_work_through_the_gateway() {
    let gateway = Gateway::start().await;
    let client = gateway.connect().await;
    client
        .batch_execute(
            "CREATE EXTENSION vector; \
             CREATE TABLE items (id int PRIMARY KEY, embedding vector(3)); \
             INSERT INTO items VALUES (1, '[1,1,1]'), (2, '[5,5,5]'), (3, '[1,2,2]'); \
             CREATE INDEX ON items USING hnsw (embedding vector_l2_ops)",
        )
        .await
        .unwrap();
    let nearest: Vec<i32> = client
        .query(
            "SELECT id FROM items ORDER BY embedding <-> '[1,2,3]' LIMIT 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(nearest, [3, 1], "nearest neighbours of [1,2,3]");

    client
        .batch_execute(
            "CREATE EXTENSION pg_trgm; CREATE EXTENSION pgcrypto; \
             CREATE EXTENSION \"uuid-ossp\"; CREATE EXTENSION hstore; CREATE EXTENSION citext",
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT similarity('word', 'words') > 0.5, \
                    encode(digest('abc', 'sha256'), 'hex'), \
                    uuid_generate_v5(uuid_ns_url(), 'https://example.org')::text, \
                    ('a=>1,b=>2'::hstore) -> 'b', \
                    'ABC'::citext = 'abc'::citext",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "pg_trgm similarity");
    assert_eq!(
        row.get::<_, String>(1),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        row.get::<_, String>(2),
        "0d092af3-c9f8-531f-9cc3-9db40a0750ef"
    );
    assert_eq!(row.get::<_, String>(3), "2");
    assert!(row.get::<_, bool>(4), "citext compares without case");

    let err = client
        .batch_execute("CREATE EXTENSION postgis")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000", "{err}");
    // The session goes on.
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    gateway.stop().await;
}
