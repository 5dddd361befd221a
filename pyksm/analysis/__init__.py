"""Analysis core: memory snapshots, page hashing, sharing oracle, lifetimes,
merge validation and the scanner simulator."""
