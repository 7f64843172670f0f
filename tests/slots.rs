//! Instance slots (Wasmtime's pooling allocator, `max_live_instances`) running out is a clean,
//! counted refusal answered per `on_error`, never a crash, and idle pooled instances give their
//! slots up to new tenants; its own test binary, as the engine and its slots are process-wide.

mod common;

use common::FakeStream;
use std::sync::Arc;
use thaw::config::{Config, InstancePolicy};
use thaw::filter::{FilterConfig, StreamFilter, Verdict};
use thaw::telemetry::{Metric, NoStats};

#[test]
fn running_out_of_instance_slots_is_a_counted_refusal() {
    let guest = common::pass_through_guest(1);
    let tenants = vec![guest.tenant("t", Vec::new(), InstancePolicy::DEFAULT)];
    let config = Config { max_live_instances: 3, ..common::config(vec![guest.public.clone()], tenants) };
    let config = Arc::new(FilterConfig::load("slots", &config, &mut NoStats).unwrap());
    // Three streams in flight hold the three slots; the fourth finds none.
    let stream = FakeStream::with(&[("x-tenant-id", "t")]);
    let mut held: Vec<StreamFilter> = Vec::new();
    for _ in 0..3 {
        let mut filter = StreamFilter::new(Arc::clone(&config));
        assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue);
        held.push(filter);
    }
    let mut fourth = StreamFilter::new(Arc::clone(&config));
    assert_eq!(fourth.on_request_headers(stream.clone(), true), Verdict::Stop);
    fourth.flush(&mut stream.clone());
    assert_eq!(stream.reply_statuses(), vec![503]);
    assert!(stream.records(Metric::InstanceRefused) > 0);
    // Slots come back when streams end: the next request is served.
    for mut f in held.drain(..) {
        f.on_stream_complete(stream.clone());
    }
    let mut again = StreamFilter::new(Arc::clone(&config));
    assert_eq!(again.on_request_headers(stream.clone(), true), Verdict::Continue);
    again.on_stream_complete(stream.clone());
    // In the same test: slots are process-wide, and idle instances are per worker thread.
    idle_pooled_instances_give_up_their_slots_to_new_tenants();
}

/// With every slot free, pooled tenants served one after the other each leave an idle instance.
fn idle_pooled_instances_give_up_their_slots_to_new_tenants() {
    let guest = common::pass_through_guest(1);
    let pooled = InstancePolicy { isolation: thaw::config::Isolation::Pooled, ..InstancePolicy::DEFAULT };
    let tenants = (0..6).map(|i| guest.tenant(&format!("p{i}"), Vec::new(), pooled)).collect();
    let config = Config { max_live_instances: 3, ..common::config(vec![guest.public.clone()], tenants) };
    let config = Arc::new(FilterConfig::load("slots-pooled", &config, &mut NoStats).unwrap());
    // Six tenants one after the other: each leaves an idle instance holding a slot; past three,
    // the least recently used one is evicted rather than the request refused.
    for i in 0..6 {
        let stream = FakeStream::with(&[("x-tenant-id", &format!("p{i}"))]);
        let mut filter = StreamFilter::new(Arc::clone(&config));
        assert_eq!(filter.on_request_headers(stream.clone(), true), Verdict::Continue, "tenant p{i}");
        filter.on_stream_complete(stream.clone());
        assert_eq!(stream.records(Metric::InstanceRefused), 0, "tenant p{i}");
        if i >= 3 {
            assert!(stream.records(Metric::InstanceEvicted) > 0, "tenant p{i}: an idle instance gave up its slot");
        }
    }
}
