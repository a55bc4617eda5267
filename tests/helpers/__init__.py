"""What the tests share, in one place: `dns` (one DNS client over real sockets, `ede`,
`ecs`, `dig`), `wait` (one `wait_until`, and `eventually` for async tests), `clock` (time
the test moves), `server` (a globaldns on a background loop or as a process), `http`
(pages and /metrics), `upstreams` (fake and real upstream resolvers), `configs` (configs
several test modules serve). No test module imports another."""
