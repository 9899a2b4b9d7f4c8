// Package release identifies what a generation runs: its program's file —
// the path with symlinks resolved, its size, SHA-256 and modification time —
// and, where the program is an interpreter given a script (python3 app.py,
// node server.js), the script's file too. `handoff status` and the metrics
// show it for each generation, a reload into the release already serving
// says so, and a file changed in place under a running generation is
// noticed (Changed).
package release
