use super::*;
use proptest::prelude::*;

fn ids(n: usize) -> Vec<TaskId> {
    (0..n)
        .map(|i| format!("{i:032x}").parse().expect("hex"))
        .collect()
}

fn name(n: &str) -> Arc<str> {
    Arc::from(n)
}

fn pop_all(q: &mut Queue, names: &[Arc<str>]) -> Vec<TaskId> {
    std::iter::from_fn(|| q.pop_for(names.iter()))
        .map(|n| n.id)
        .collect()
}

#[test]
fn strict_priority_fifo_within_across_names() {
    let mut q = Queue::default();
    let t = ids(5);
    let (a, b) = (name("a"), name("b"));
    q.push(t[0], &a, Priority::Low, None);
    q.push(t[1], &b, Priority::Normal, None);
    q.push(t[2], &a, Priority::Normal, None);
    q.push(t[3], &b, Priority::High, None);
    q.push(t[4], &a, Priority::Normal, None);
    let order = pop_all(&mut q, &[a, b]);
    assert_eq!(order, vec![t[3], t[1], t[2], t[4], t[0]]);
    assert!(q.is_empty());
}

#[test]
fn one_name_backlog_does_not_block_another() {
    let mut q = Queue::default();
    let t = ids(3);
    let (slow, fast) = (name("slow"), name("fast"));
    q.push(t[0], &slow, Priority::High, None);
    q.push(t[1], &slow, Priority::High, None);
    q.push(t[2], &fast, Priority::Low, None);
    // An executor serving only `fast` gets its task at once.
    assert_eq!(q.pop_for([&fast].into_iter()).map(|n| n.id), Some(t[2]));
    assert!(q.pop_for([&fast].into_iter()).is_none());
    assert_eq!(q.len(), 2);
}

#[test]
fn position_counts_the_cohort_only() {
    let mut q = Queue::default();
    let t = ids(4);
    let (a, b, c) = (name("a"), name("b"), name("c"));
    q.push(t[0], &a, Priority::Normal, None);
    q.push(t[1], &c, Priority::High, None);
    q.push(t[2], &b, Priority::High, None);
    let place = q.push(t[3], &a, Priority::Normal, None);
    // a and b share executors; c is served elsewhere.
    assert_eq!(q.position(&place, [&a, &b].into_iter()), 2);
    assert_eq!(q.position(&place, [&a].into_iter()), 1);
}

#[test]
fn a_requeued_task_goes_first() {
    let mut q = Queue::default();
    let t = ids(3);
    let a = name("a");
    q.push(t[0], &a, Priority::Normal, None);
    q.push(t[1], &a, Priority::Normal, None);
    let place = q.push_front(t[2], &a, Priority::Normal, None);
    assert_eq!(q.position(&place, [&a].into_iter()), 0);
    assert_eq!(pop_all(&mut q, &[a]), vec![t[2], t[0], t[1]]);
}

#[test]
fn a_busy_group_parks_without_blocking_others() {
    let mut q = Queue::default();
    let t = ids(4);
    let a = name("a");
    let key: GroupKey = (ClientId::new("alice"), "k".into());
    q.push(t[0], &a, Priority::Normal, Some(key.clone()));
    let parked = q.push(t[1], &a, Priority::Normal, Some(key.clone()));
    q.push(t[2], &a, Priority::Normal, None);
    q.push(t[3], &a, Priority::Normal, Some(key.clone()));
    let names = [Arc::clone(&a)];
    assert_eq!(q.pop_for(names.iter()).map(|n| n.id), Some(t[0]));
    assert_eq!(q.pop_for(names.iter()).map(|n| n.id), Some(t[2]));
    assert!(q.pop_for(names.iter()).is_none());
    assert_eq!(q.len(), 2);
    assert_eq!(q.position(&parked, names.iter()), 0);
    q.release(&key);
    assert_eq!(q.pop_for(names.iter()).map(|n| n.id), Some(t[1]));
    assert!(q.pop_for(names.iter()).is_none());
    q.release(&key);
    assert_eq!(q.pop_for(names.iter()).map(|n| n.id), Some(t[3]));
    q.release(&key);
    assert!(q.is_empty());
    assert!(q.groups.is_empty());
    assert!(q.lanes.is_empty());
}

#[test]
fn remove_from_lane_and_from_parked() {
    let mut q = Queue::default();
    let t = ids(3);
    let a = name("a");
    let key: GroupKey = (ClientId::new("alice"), "k".into());
    q.push(t[0], &a, Priority::Normal, Some(key.clone()));
    let second = q.push(t[1], &a, Priority::Normal, Some(key.clone()));
    let low = q.push(t[2], &a, Priority::Low, None);
    assert!(q.remove(t[2], &low));
    assert!(!q.remove(t[2], &low));
    let names = [Arc::clone(&a)];
    assert_eq!(q.pop_for(names.iter()).map(|n| n.id), Some(t[0]));
    assert!(q.pop_for(names.iter()).is_none());
    assert!(q.remove(t[1], &second));
    assert_eq!(q.len(), 0);
    assert_eq!(q.ids().count(), 0);
}

/// Operations a property test applies to the queue and to a plain model.
#[derive(Debug, Clone)]
enum Op {
    Push {
        name: u8,
        priority: u8,
        group: Option<u8>,
    },
    Requeue {
        name: u8,
        priority: u8,
    },
    Pop {
        names: u8,
    },
    Finish {
        running: u8,
    },
    Cancel {
        queued: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..3u8, proptest::option::of(0..2u8))
            .prop_map(|(name, priority, group)| Op::Push { name, priority, group }),
        1 => (0..3u8, 0..3u8).prop_map(|(name, priority)| Op::Requeue { name, priority }),
        3 => (1..8u8).prop_map(|names| Op::Pop { names }),
        2 => any::<u8>().prop_map(|running| Op::Finish { running }),
        1 => any::<u8>().prop_map(|queued| Op::Cancel { queued }),
    ]
}

const PRIORITIES: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

proptest! {
    /// The queue's rules, checked against a model that scans every queued
    /// task: a pop returns the oldest task of the highest priority among the
    /// asked names whose group is free; a group never runs two tasks; every
    /// pushed task is popped or removed exactly once; positions count the
    /// tasks the model would start first.
    #[test]
    fn queue_follows_its_rules(ops in proptest::collection::vec(op(), 1..120)) {
        let names: Vec<Arc<str>> = ["a", "b", "c"].iter().map(|n| name(n)).collect();
        let mut q = Queue::default();
        // Model: (order, id, name index, rank, group, place)
        let mut queued: Vec<(Order, TaskId, usize, usize, Option<u8>, Place)> = Vec::new();
        let mut running: Vec<(TaskId, Option<u8>)> = Vec::new();
        let mut next_id = 0u128;
        for op in ops {
            match op {
                Op::Push { name, priority, group } => {
                    next_id += 1;
                    let id: TaskId = format!("{next_id:032x}").parse().expect("hex");
                    let key = group.map(|g| (ClientId::new("c"), Box::<str>::from(format!("g{g}"))));
                    let place = q.push(id, &names[usize::from(name)], PRIORITIES[usize::from(priority)], key);
                    queued.push((place.order, id, usize::from(name), usize::from(priority), group, place));
                }
                Op::Requeue { name, priority } => {
                    next_id += 1;
                    let id: TaskId = format!("{next_id:032x}").parse().expect("hex");
                    let place = q.push_front(id, &names[usize::from(name)], PRIORITIES[usize::from(priority)], None);
                    queued.push((place.order, id, usize::from(name), usize::from(priority), None, place));
                }
                Op::Pop { names: mask } => {
                    let asked: Vec<Arc<str>> = (0..3)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| Arc::clone(&names[i]))
                        .collect();
                    let busy: Vec<u8> = running.iter().filter_map(|(_, g)| *g).collect();
                    let expected = queued
                        .iter()
                        .filter(|(_, _, n, _, g, _)| mask & (1 << n) != 0 && g.is_none_or(|g| !busy.contains(&g)))
                        .min_by_key(|(order, _, _, rank, _, _)| (*rank, *order))
                        .map(|(_, id, _, _, g, _)| (*id, *g));
                    let got = q.pop_for(asked.iter()).map(|n| n.id);
                    prop_assert_eq!(got, expected.map(|(id, _)| id));
                    if let Some((id, group)) = expected {
                        queued.retain(|(_, other, ..)| *other != id);
                        running.push((id, group));
                    }
                }
                Op::Finish { running: which } => {
                    if !running.is_empty() {
                        let (_, group) = running.remove(usize::from(which) % running.len());
                        if let Some(g) = group {
                            q.release(&(ClientId::new("c"), Box::<str>::from(format!("g{g}"))));
                        }
                    }
                }
                Op::Cancel { queued: which } => {
                    if !queued.is_empty() {
                        let (_, id, _, _, _, place) = queued.remove(usize::from(which) % queued.len());
                        prop_assert!(q.remove(id, &place));
                    }
                }
            }
            prop_assert_eq!(q.len(), queued.len());
            let mut in_queue: Vec<TaskId> = q.ids().collect();
            in_queue.sort();
            let mut in_model: Vec<TaskId> = queued.iter().map(|(_, id, ..)| *id).collect();
            in_model.sort();
            prop_assert_eq!(in_queue, in_model);
            let groups: Vec<u8> = running.iter().filter_map(|(_, g)| *g).collect();
            let mut distinct = groups.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(groups.len(), distinct.len());
            // Positions over the whole cohort: tasks of higher priority, or
            // of the same priority and older (parked ones included).
            for (order, _, _, rank, _, place) in &queued {
                let expected = queued
                    .iter()
                    .filter(|(o, _, _, r, g, _)| {
                        (*r < *rank || (*r == *rank && *o < *order))
                            && (g.is_none() || q.lanes.values().flat_map(|l| l.iter().flatten()).any(|x| x.order == *o))
                    })
                    .count() as u64;
                prop_assert_eq!(q.position(place, names.iter()), expected);
            }
        }
    }
}
