// Package control is the protocol of handoff's control socket, which
// `handoff reload`, `rollback`, `status` and `signal` speak to `handoff run`:
// the wire types (one JSON request per connection, one JSON reply), the
// server (Serve), which admits root and handoff's own user only and
// outlives a full descriptor table, and the client (Ask), whose every wait
// is bounded.
package control
