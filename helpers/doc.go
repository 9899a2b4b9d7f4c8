// Package helpers holds the tests of the drain helpers for programs in other
// languages than Go: node/ (an npm package) and python/ (a pip package).
// Each is run under `handoff run`, as a user runs it, through reloads under
// load.
package helpers
