// Package cli is the operator CLI `cdswap` (package main in starter/ only calls Main): it
// resolves a drive on its host's worker, starts one ChangeMedium workflow per drive, follows
// it step by step, and reads back what happened from Temporal's event history, memo and
// search attributes (the audit trail of DESIGN.md "Audit").
//
// Exit codes: 0 success, 1 failure (the error says what to do), 2 bad usage (with the
// command's usage). Every error an operator can hit is turned into a sentence that names the
// value at fault and the next step: an unreachable server, no worker for the host, a drive
// already being changed, or a refusal from the worker (unknown domain, not a CD-ROM, a
// medium outside the ISO roots...), whose message the activities already phrase that way.
//
// The history renderer (BuildHistory, WriteHistoryText, WriteHistoryJSON) works on the raw
// events of one run, so that it can be tested on recorded histories without a server.
package cli
