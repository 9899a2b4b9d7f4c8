// Package helpers holds the tests of the drain helpers for programs in other
// languages than Go: node/ (an npm package) and python/ (a pip package).
// Each is run under `handoff run`, as a user runs it, through reloads under
// load (helpers_test.go). packages_test.go builds each package as a user
// gets it — the wheel and the sdist through the Python helper's own PEP 517
// backend, the npm tarball — installs it offline somewhere else and runs an
// example that imports the installed package. TestNodeUnit runs the Node
// helper's own tests (node --test in node/).
package helpers
