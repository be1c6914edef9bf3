// Package reliability is dxtra-proxy's reliability and security suite: end-to-end
// scenarios that build the real binary once, run it against the dxtratest fake of the
// Dxtra auth service and GraphQL API (and against small misbehaving upstreams of their
// own) on 127.0.0.1, and assert what a caller and the upstream observe under load,
// auth outages, rate limits, revoked credentials, upstream faults, shutdown and hostile
// input.
//
// The package holds tests only. Run it with
//
//	go test -race ./reliability
//
// or one scenario with -run (the README's Reliability section lists them). Most
// scenarios wait on real timers (token lifetimes, backoff, timeouts) rather than on
// the CPU, so unless -parallel is given, TestMain raises it above GOMAXPROCS; the
// CPU-heavy load scenarios do not run in parallel.
package reliability
