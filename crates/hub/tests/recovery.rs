//! Recovery under concurrent publishers, as a property: whatever the interleaving of publishes
//! with a recovering subscribe, the subscriber sees every offset after its position exactly once,
//! in order. Runs in-process (no sockets) so proptest can try many interleavings quickly.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use hubbub::broker::HistoryQuery;
use hubbub::config::ChannelRule;
use hubbub::{ConnectInfo, Event, Hub, HubConfig, StreamPosition, SubscribeOptions};
use hubbub_proto::frame::{self, Role};
use proptest::prelude::*;

fn offsets_received(conn: &hubbub::Connection) -> Vec<u64> {
    let mut frames = VecDeque::new();
    conn.outbox().take_all(&mut frames).unwrap();
    frames
        .into_iter()
        .filter_map(|f| {
            let mut buf = BytesMut::from(&f.bytes[..]);
            let payload = frame::decode(&mut buf, u64::MAX >> 1, Role::Client).unwrap()?.payload;
            let v: serde_json::Value = serde_json::from_slice(&payload).ok()?;
            v["offset"].as_u64()
        })
        .collect()
}

fn run_case(before: u64, since_back: u64, publishers: u64, each: u64, delay_us: u64) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let config = HubConfig {
            channels: vec![ChannelRule {
                pattern: "c".into(),
                history_size: 10_000,
                history_ttl: Duration::from_secs(600),
                max_subscribers: 0,
            }],
            outbox_max_messages: 100_000,
            ..HubConfig::default()
        };
        let hub = Hub::new(config);
        let ch = vec!["c".to_string()];
        for _ in 0..before {
            hub.publish(&ch, Event::from_json(r#"{"t":"before"}"#).unwrap()).await.unwrap();
        }
        let page = hub.history("c", HistoryQuery { since: None, limit: 1, reverse: true }).await.unwrap().unwrap();
        let since = before.saturating_sub(since_back);
        let tasks: Vec<_> = (0..publishers)
            .map(|_| {
                let (hub, ch) = (hub.clone(), ch.clone());
                tokio::spawn(async move {
                    for _ in 0..each {
                        hub.publish(&ch, Event::from_json(r#"{"t":"during"}"#).unwrap()).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        let conn = hub.connect(ConnectInfo::default());
        let opts = SubscribeOptions {
            since: HashMap::from([(
                "c".to_string(),
                StreamPosition { offset: since, epoch: page.position.epoch.clone() },
            )]),
            ack: false,
        };
        let subscribed = conn.subscribe_with(&ch, &opts).await.unwrap();
        conn.go_live(&subscribed);
        for t in tasks {
            t.await.unwrap();
        }
        let total = before + publishers * each;
        let got = offsets_received(&conn);
        let want: Vec<u64> = (since + 1..=total).collect();
        prop_assert_eq!(got, want);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_gap_no_duplicate_order_kept(
        before in 0u64..40,
        since_back in 0u64..40,
        publishers in 1u64..4,
        each in 0u64..60,
        delay_us in 0u64..400,
    ) {
        run_case(before, since_back, publishers, each, delay_us)?;
    }
}
