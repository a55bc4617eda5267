"""What the tests share, in one place: `dns` (one DNS client over real sockets, `ede`,
`ecs`, `dig`), `wait` (one `wait_until`, and `eventually` for async tests), `clock` (time
the test moves), `server` (a globaldns on a background loop or as a process), `cli` (the
command as an operator runs it), `http` (pages and /metrics), `upstreams` (fake and real
upstream resolvers), `targets` (health-check targets), `k8s` (emulated clusters' configs
and fast time), `faultload` (a query load that counts what faults cost), `configs`,
`deploy` and `data` (configs, manifests and files several modules read). No test module
imports another."""
