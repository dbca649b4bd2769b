//! The result cache on a real three-master Redis Cluster (the seed's `DistributedCache`),
//! including a master killed mid-run: a cache failure is a miss, never a lost task.

use std::time::Duration;

use serde_json::json;
use swarm_director::{
    cache::ResultCache,
    task::{Codec, TaskEnvelope},
};

use crate::support::{TestEnv, own_metrics, redis_cluster::RedisCluster};

fn texts(round: usize) -> Vec<TaskEnvelope> {
    (0..60)
        .map(|n| {
            TaskEnvelope::new(
                "quality",
                json!({ "text": format!("Sentence number {n}. It reads well.") }),
            )
            .with_priority((round % 10) as u8)
        })
        .collect()
}

async fn run(env: &TestEnv, tasks: &[TaskEnvelope]) {
    for task in tasks {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(
        rows.iter().all(|r| r.status == "completed"),
        "every task completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_cache_spreads_over_a_redis_cluster_and_survives_a_dead_master() {
    let mut cluster = RedisCluster::start();
    let mut env = TestEnv::new().await;
    env.settings.redis.cache_url = Some(swarm_director::config::SecretUrl::new(cluster.urls()));
    env.settings.redis.cache_cluster = true;
    let cache = std::sync::Arc::new(
        ResultCache::connect(&env.settings.redis)
            .unwrap()
            .with_metrics(own_metrics()),
    );
    let stats = |c: &ResultCache| (c.lookups("hit"), c.lookups("miss"), c.lookups("error"));
    let worker = env.spawn(env.worker().with_cache(cache.clone()));

    // First round: every input is new; the results land on all three masters.
    run(&env, &texts(0)).await;
    assert_eq!(stats(&cache), (0, 60, 0));
    let per_master: Vec<usize> = (0..3).map(|i| cluster.keys_on(i)).collect();
    assert_eq!(per_master.iter().sum::<usize>(), 60, "{per_master:?}");
    assert!(per_master.iter().all(|&n| n > 0), "spread: {per_master:?}");

    // Second round: every one a hit, wherever its key lives.
    run(&env, &texts(1)).await;
    assert_eq!(stats(&cache), (60, 60, 0));

    // A master dies while a round runs: every task still completes.
    let third = texts(2);
    for task in &third {
        env.broker.publish(task, Codec::Json).await.unwrap();
    }
    cluster.kill(0);
    let ids: Vec<_> = third.iter().map(|t| t.id).collect();
    let rows = env.wait_finished(&ids, Duration::from_secs(30)).await;
    assert!(rows.iter().all(|r| r.status == "completed"));

    // Afterwards the survivors still answer for their keys; the dead master's are misses.
    let (hits_before, _, _) = stats(&cache);
    run(&env, &texts(3)).await;
    let (hits_after, _, errors) = stats(&cache);
    worker.stop().await;
    let survivors = per_master[1] + per_master[2];
    assert_eq!(
        hits_after - hits_before,
        survivors as u64,
        "the keys on the living masters hit"
    );
    assert!(errors >= per_master[0] as u64, "failures counted: {errors}");
    env.cleanup().await;
}
