use super::*;

fn limits(max_keys: usize) -> KvLimits {
    KvLimits {
        max_keys,
        max_key_bytes: 8,
        max_value_bytes: 4,
        max_ttl: Duration::from_secs(60),
    }
}

fn scope<'a>(plugin: &'a str, limits: &'a KvLimits) -> Scope<'a> {
    Scope {
        plugin,
        limits,
        deadline: Instant::now() + Duration::from_secs(1),
    }
}

#[tokio::test]
async fn the_local_store_bounds_keys_values_and_count_per_plugin() {
    let kv = Kv::new(config::KvStore::Local, None).expect("local");
    let l = limits(2);
    let a = scope("a", &l);
    kv.set(&a, "k1", b"v".to_vec(), 0).await.expect("set");
    assert_eq!(kv.get(&a, "k1").await, Ok(Some(b"v".to_vec())));
    assert_eq!(kv.get(&scope("b", &l), "k1").await, Ok(None), "namespaced");
    assert!(matches!(
        kv.set(&a, "k1", b"12345".to_vec(), 0).await,
        Err(KvError::TooLarge(_))
    ));
    assert!(matches!(
        kv.get(&a, "123456789").await,
        Err(KvError::TooLarge(_))
    ));
    kv.set(&a, "k2", b"v".to_vec(), 0)
        .await
        .expect("second key");
    assert!(matches!(
        kv.set(&a, "k3", b"v".to_vec(), 0).await,
        Err(KvError::LimitExceeded(_))
    ));
    kv.set(&a, "k2", b"w".to_vec(), 0)
        .await
        .expect("an existing key can be set");
    assert_eq!(kv.delete(&a, "k2").await, Ok(true));
    assert_eq!(kv.increment(&a, "k3", 5, 0).await, Ok(5), "room again");
    assert_eq!(kv.increment(&a, "k3", -7, 0).await, Ok(-2));
    assert_eq!(kv.get(&a, "k3").await, Ok(Some(b"-2".to_vec())));
    assert_eq!(kv.increment(&a, "k1", 1, 0).await, Err(KvError::NotANumber));
}

#[tokio::test]
async fn expired_entries_read_as_absent_and_free_their_place() {
    let kv = Kv::new(config::KvStore::Local, None).expect("local");
    let l = limits(1);
    let a = scope("a", &l);
    kv.set(&a, "k", b"v".to_vec(), 1).await.expect("set");
    let until = Instant::now() + Duration::from_secs(1);
    while kv.get(&a, "k").await != Ok(None) {
        assert!(Instant::now() < until, "a 1 ms TTL expires");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    kv.set(&a, "other", b"v".to_vec(), 0)
        .await
        .expect("the expired key's place is free");
    assert_eq!(ttl(&l, 0), l.max_ttl);
    assert_eq!(ttl(&l, u64::MAX), l.max_ttl);
    assert_eq!(ttl(&l, 5), Duration::from_millis(5));
}
