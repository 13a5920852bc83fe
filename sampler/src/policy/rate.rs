//! Rate budgets in event time: `rate_limiting` and `composite`.
//!
//! Budgets are cluster-wide in the configuration; each worker applies its share (its fraction of the partitions),
//! so adding workers does not multiply what is kept.

use super::config::CompositeConfig;
use super::{Decision, Policy, TraceView};

/// A token bucket refilled at `rate × share` spans per second of event time, holding at most one second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    share: f64,
    tokens: f64,
    last_ms: Option<i64>,
}

impl TokenBucket {
    pub fn new(spans_per_second: f64) -> Self {
        TokenBucket { rate: spans_per_second, share: 1.0, tokens: spans_per_second, last_ms: None }
    }

    pub fn set_share(&mut self, share: f64) {
        self.share = share.clamp(0.0, 1.0);
        self.tokens = self.tokens.min(self.capacity());
    }

    fn capacity(&self) -> f64 {
        self.rate * self.share
    }

    /// Takes `n` tokens at event time `now_ms` if there are that many.
    pub fn try_take(&mut self, n: f64, now_ms: i64) -> bool {
        if let Some(last) = self.last_ms {
            // Event time can step back a little across partitions; never refill for negative time.
            let elapsed = (now_ms - last).max(0) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed * self.capacity()).min(self.capacity());
        } else {
            self.tokens = self.capacity();
        }
        self.last_ms = Some(self.last_ms.map_or(now_ms, |last| last.max(now_ms)));
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// `composite`: sub-policies in `policy_order`, each with its allocation of `max_total_spans_per_second`. The first
/// sub-policy that would keep the trace and still has budget for its spans keeps it.
#[derive(Debug)]
pub struct Composite {
    subs: Vec<(String, Policy, TokenBucket)>,
}

impl Composite {
    pub fn new(config: CompositeConfig, mut policies: Vec<(String, Policy)>) -> Self {
        let total = config.max_total_spans_per_second as f64;
        let allocated: f64 = config.rate_allocation.iter().map(|a| a.percent).sum();
        let unallocated =
            policies.iter().filter(|(n, _)| !config.rate_allocation.iter().any(|a| &a.policy == n)).count();
        let rest = if unallocated > 0 { ((100.0 - allocated).max(0.0)) / unallocated as f64 } else { 0.0 };
        // policy_order names the order; sub-policies it leaves out come after, in their listed order.
        policies.sort_by_key(|(name, _)| config.policy_order.iter().position(|o| o == name).unwrap_or(usize::MAX));
        let subs = policies
            .into_iter()
            .map(|(name, policy)| {
                let percent = config.rate_allocation.iter().find(|a| a.policy == name).map_or(rest, |a| a.percent);
                let bucket = TokenBucket::new(total * percent / 100.0);
                (name, policy, bucket)
            })
            .collect();
        Composite { subs }
    }

    pub fn set_share(&mut self, share: f64) {
        for (_, policy, bucket) in &mut self.subs {
            bucket.set_share(share);
            policy.set_rate_share(share);
        }
    }

    pub fn evaluate(&mut self, trace: &TraceView<'_>, now_ms: i64) -> Decision {
        let spans = trace.span_count() as f64;
        for (_, policy, bucket) in &mut self.subs {
            if policy.evaluate(trace, now_ms).keeps() && bucket.try_take(spans, now_ms) {
                return Decision::Sampled;
            }
        }
        Decision::NotSampled
    }
}
