// Package outtag attributes the output of a generation's processes: each line
// a process writes to its stdout or stderr pipe is passed on tagged with the
// process's generation, worker index and pid (handoff run --tag-output).
//
// A Sink is one destination — handoff's stdout or its stderr — shared by all
// the processes that write there; Sink.Source returns the io.WriteCloser that
// one process's pipe is copied into. What a Source is given is cut into lines
// at newlines, whatever the pieces it comes in (a pipe is read 64 KiB at a
// time, so a longer line comes in pieces), and each line leaves as one of:
//
//   - Text: the line with a prefix, "[gen=3 worker=0 pid=1234] ".
//   - JSON: one object per line,
//     {"time":"…","gen":3,"worker":0,"gen_pid":1234,"stream":"stdout","line":"…"},
//     time as log/slog writes it (RFC 3339, nanoseconds), the keys those of
//     handoff's own records; the line is always a JSON string, escaped, even
//     when it is itself JSON (bytes that are not UTF-8 become U+FFFD).
//   - Journal: one entry of systemd's native journal protocol, sent as a
//     datagram to journald's socket (see Journal), with MESSAGE, PRIORITY,
//     SYSLOG_IDENTIFIER, SYSLOG_PID and HANDOFF_GENERATION, HANDOFF_WORKER,
//     HANDOFF_PID, HANDOFF_STREAM.
//
// Nothing is held for long: a line is buffered until its newline, but at most
// MaxLine bytes and at most Options.Idle after its last piece came. Then what
// is held is passed on as a piece of a line, said so — in text, with the tag
// once and the rest of the line following it without a new one; in JSON, with
// "line_break":"line-max" or "idle" (the next object carries the rest); in the
// journal, with HANDOFF_LINE_BREAK=, as journald's own _LINE_BREAK=. At the end
// of the stream, a last line without its newline is passed on with
// "line_break":"eof" (text: a newline is added). In text, a process's line left
// open is ended with a newline when another process writes to the same sink,
// and its rest, when it comes, is tagged again.
package outtag
