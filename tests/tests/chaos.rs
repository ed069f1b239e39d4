//! The chaos report's CI subset (`tests/src/chaos`, cases marked `ci`), with the gateway in
//! this process: each case must pass. The whole report runs against the release binary with
//! `bash bench/chaos.sh`.

use portcullis_tests::chaos;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_reports_ci_subset_passes() {
    let cases: Vec<_> = chaos::cases().into_iter().filter(|c| c.ci).collect();
    assert!(cases.len() >= 5, "a subset worth the name");
    let rows = chaos::run(chaos::Target::InProcess, &cases, Duration::from_secs(30)).await;
    let table = chaos::table(&rows);
    eprintln!("{table}");
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| !r.outcome.pass)
        .map(|r| r.name)
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}\n{table}");
}
