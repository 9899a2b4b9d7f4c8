// Package e2e holds handoff's end-to-end tests against a real systemd,
// started in private namespaces by internal/systemdtest. It has no code of
// its own; the tests skip, saying why, where systemd cannot run.
package e2e
