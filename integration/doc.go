// Package integration tests cdswap end to end: the cdswap-worker and cdswap binaries, built
// once per run, against a real Temporal dev server (package internal/devserver, one per
// package run) and simulated Xen hosts (package internal/xensim, in process), with real
// QEMU where a test says so. It holds tests only:
//
//   - swap tests: stubdom insert, second insert and eject, dom0 insert and eject, checked
//     through QMP (query-block, query-fdsets), xenstore and libxl's JSON config;
//   - refusals a user can hit: a traditional guest, a medium outside the ISO roots, a format
//     that does not match the file, a vdev that is not a cdrom, a drive already being
//     changed, a host with no worker;
//   - the crash test: the worker is killed with SIGKILL inside each step in turn, a new one
//     finishes the swap, and the drive, xenstore and the history are checked;
//   - rollback: a stubdom that never adds the fd, so the old medium must come back;
//   - TestRecordHistories, which writes workflows/testdata/histories/*.json from real runs
//     when asked (-args -record, or CDSWAP_RECORD_HISTORIES=1), and a test that a changed
//     workflow fails replay of them;
//   - BenchmarkSwapEndToEnd and BenchmarkSwapDirect (the price of durability), and
//     TestSwapLatencyReport (-args -report) for BENCHMARKS.md.
//
// Every test needs the Temporal CLI (`make deps`); the QEMU tests need qemu-system-x86_64 and,
// for a stubdom guest, root for read-only loop devices. Without them the tests skip, except
// under CI=true, where they fail and say what to install.
package integration
