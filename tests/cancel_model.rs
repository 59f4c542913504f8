//! proptest: random trees of tokens and random operations, checked against a plain model of who
//! is cancelled, with which cause, and how many callbacks ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tollgate::{
    CancelToken,
    cancel::{Cause, Registration},
    time::ManualClock,
};

#[derive(Debug, Clone)]
enum Op {
    /// A child of node `parent % len`, with an optional timeout in ns.
    Child {
        parent: usize,
        timeout: Option<u64>,
    },
    Cancel {
        node: usize,
        cause: Cause,
    },
    Advance(u64),
    /// Register a callback on node `node % len`.
    Register {
        node: usize,
    },
    /// Unregister registration `reg % registrations`.
    Unregister {
        reg: usize,
    },
    /// Drop the token handle of node `node % len` (its subtree must still follow its ancestors).
    DropHandle {
        node: usize,
    },
    /// Observe every live handle and compare with the model.
    CheckAll,
}

fn cause() -> impl Strategy<Value = Cause> {
    prop_oneof![
        Just(Cause::Cancelled),
        Just(Cause::DeadlineExceeded),
        Just(Cause::Failed)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), proptest::option::of(0u64..50)).prop_map(|(parent, timeout)| Op::Child { parent, timeout }),
        2 => (any::<usize>(), cause()).prop_map(|(node, cause)| Op::Cancel { node, cause }),
        2 => (0u64..30).prop_map(Op::Advance),
        2 => any::<usize>().prop_map(|node| Op::Register { node }),
        1 => any::<usize>().prop_map(|reg| Op::Unregister { reg }),
        1 => any::<usize>().prop_map(|node| Op::DropHandle { node }),
        2 => Just(Op::CheckAll),
    ]
}

/// The plain model: a node's effective deadline and its cause, applied eagerly.
struct ModelNode {
    parent: Option<usize>,
    deadline: Option<u64>,
    cause: Option<Cause>,
}

struct Model {
    now: u64,
    nodes: Vec<ModelNode>,
}

impl Model {
    fn children_of(&self, node: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].parent == Some(node))
            .collect()
    }

    /// Cancels `node` and its live subtree; a passed deadline wins over `cause`.
    fn cancel(&mut self, node: usize, cause: Cause) {
        if self.nodes[node].cause.is_some() {
            return;
        }
        let applied = match self.nodes[node].deadline {
            Some(deadline) if deadline <= self.now => Cause::DeadlineExceeded,
            _ => cause,
        };
        self.nodes[node].cause = Some(applied);
        for child in self.children_of(node) {
            self.cancel(child, applied);
        }
    }

    fn advance(&mut self, d: u64) {
        self.now += d;
        // Ancestors come before descendants (indices grow with creation), so a parent's expiry
        // reaches its children before their own check — and gives the same cause either way.
        for i in 0..self.nodes.len() {
            if self.nodes[i].cause.is_none()
                && self.nodes[i].deadline.is_some_and(|d| d <= self.now)
            {
                self.cancel(i, Cause::DeadlineExceeded);
            }
        }
    }
}

struct Callback {
    node: usize,
    calls: Arc<AtomicUsize>,
    registration: Option<Registration>,
    prevented: bool,
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let root = CancelToken::with_clock(clock.clone());
    let mut tokens: Vec<Option<CancelToken>> = vec![Some(root.clone())];
    let mut model = Model {
        now: 0,
        nodes: vec![ModelNode {
            parent: None,
            deadline: None,
            cause: None,
        }],
    };
    let mut callbacks: Vec<Callback> = Vec::new();

    let check_all =
        |tokens: &Vec<Option<CancelToken>>, model: &Model, callbacks: &Vec<Callback>| {
            for (i, token) in tokens.iter().enumerate() {
                if let Some(token) = token {
                    prop_assert_eq!(token.cause(), model.nodes[i].cause, "node {}", i);
                }
            }
            // Every handle has been observed, so every deadline in a live part of the tree has been
            // noticed; but a node whose handle was dropped only learns of its own deadline through
            // an ancestor. Callbacks: a callback whose node is cancelled (and noticed) ran once
            // unless prevented; a live node's callbacks never ran.
            for cb in callbacks {
                let ran = cb.calls.load(Ordering::SeqCst);
                prop_assert!(ran <= 1, "callback ran {} times", ran);
                if cb.prevented {
                    prop_assert_eq!(ran, 0, "a prevented callback ran");
                } else if model.nodes[cb.node].cause.is_none() {
                    prop_assert_eq!(ran, 0, "a callback of a live node ran");
                }
            }
            Ok(())
        };

    for op in ops {
        match op {
            Op::Child { parent, timeout } => {
                let parent = parent % tokens.len();
                let Some(parent_token) = tokens[parent].clone() else {
                    continue;
                };
                let child = match timeout {
                    Some(t) => parent_token.child_with_timeout(Duration::from_nanos(t)),
                    None => parent_token.child(),
                };
                let own = timeout.map(|t| model.now + t);
                let deadline = match (own, model.nodes[parent].deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let index = model.nodes.len();
                model.nodes.push(ModelNode {
                    parent: Some(parent),
                    deadline,
                    cause: None,
                });
                if let Some(cause) = model.nodes[parent].cause {
                    model.nodes[index].cause = Some(cause);
                } else if deadline.is_some_and(|d| d <= model.now) {
                    model.nodes[index].cause = Some(Cause::DeadlineExceeded);
                }
                tokens.push(Some(child));
            }
            Op::Cancel { node, cause } => {
                let node = node % tokens.len();
                let Some(token) = &tokens[node] else { continue };
                let was_live = model.nodes[node].cause.is_none();
                let did = token.cancel_with(cause);
                prop_assert_eq!(did, was_live);
                model.cancel(node, cause);
            }
            Op::Advance(d) => {
                clock.advance(Duration::from_nanos(d));
                model.advance(d);
            }
            Op::Register { node } => {
                let node = node % tokens.len();
                let Some(token) = &tokens[node] else { continue };
                let calls = Arc::new(AtomicUsize::new(0));
                let registration = {
                    let calls = calls.clone();
                    token.on_cancel(move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                    })
                };
                if model.nodes[node].cause.is_some() {
                    // `on_cancel` notices a passed deadline and runs at once.
                    prop_assert_eq!(calls.load(Ordering::SeqCst), 1);
                }
                callbacks.push(Callback {
                    node,
                    calls,
                    registration: Some(registration),
                    prevented: false,
                });
            }
            Op::Unregister { reg } => {
                if callbacks.is_empty() {
                    continue;
                }
                let index = reg % callbacks.len();
                let cb = &mut callbacks[index];
                if let Some(registration) = cb.registration.take() {
                    let ran_before = cb.calls.load(Ordering::SeqCst);
                    let prevented = registration.unregister();
                    prop_assert_eq!(prevented, ran_before == 0);
                    cb.prevented = prevented;
                }
            }
            Op::DropHandle { node } => {
                let node = node % tokens.len();
                if node != 0 {
                    tokens[node] = None;
                }
            }
            Op::CheckAll => check_all(&tokens, &model, &callbacks)?,
        }
    }
    check_all(&tokens, &model, &callbacks)?;
    // Cancelling the root reaches every node, handle or not; every unprevented callback ran.
    root.cancel();
    model.cancel(0, Cause::Cancelled);
    check_all(&tokens, &model, &callbacks)?;
    for cb in &callbacks {
        prop_assert_eq!(cb.calls.load(Ordering::SeqCst), usize::from(!cb.prevented));
    }
    drop(callbacks);
    drop(tokens);
    prop_assert_eq!(root.children(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn token_trees_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
