//! The surrogate-key index's memory, measured: 1,000,000 objects carrying two tags each
//! out of 10,000 (the scale), counted by the heap allocator.

use hopline_cache::tags::TagIndex;

#[global_allocator]
static HEAP: hopline_testkit::alloc::Counting = hopline_testkit::alloc::Counting::new();

#[test]
fn a_million_tagged_objects_cost_a_bounded_index() {
    const OBJECTS: usize = 1_000_000;
    const TAGS: usize = 10_000;
    let names: Vec<Box<str>> = (0..TAGS).map(|t| format!("product-{t}").into()).collect();
    let keys: Vec<String> = (0..OBJECTS)
        .map(|i| format!("https://shop.test/catalog/item-{i}"))
        .collect();
    let key_bytes: usize = keys.iter().map(|k| k.len()).sum();
    let before = HEAP.live_bytes();
    let mut ix = TagIndex::default();
    for (i, k) in keys.iter().enumerate() {
        ix.add(
            k,
            &[names[i % TAGS].clone(), names[(i * 7 + 3) % TAGS].clone()],
        );
    }
    let used = (HEAP.live_bytes() - before) as usize;
    assert_eq!(ix.len(), (TAGS, OBJECTS));
    let per_object = used / OBJECTS;
    println!(
        "tag index: {OBJECTS} objects x 2 tags of {TAGS}: {} MiB, {per_object} B per object ({} B of it the key's text)",
        used >> 20,
        key_bytes / OBJECTS
    );
    // the key's text once, two set slots and the key's count: bounded, and well under a
    // small object's own size in the cache
    assert!(per_object < 256, "{per_object} B per object");
    // a purge by tag finds its objects (100 each), and the index shrinks with them
    let hit = ix.keys_of("product-42");
    assert_eq!(hit.len(), 200);
    for k in &hit {
        let i: usize = k.rsplit('-').next().unwrap().parse().unwrap();
        ix.remove(
            k,
            &[names[i % TAGS].clone(), names[(i * 7 + 3) % TAGS].clone()],
        );
    }
    assert!(ix.keys_of("product-42").is_empty());
    assert_eq!(ix.len().1, OBJECTS - 200);
}
