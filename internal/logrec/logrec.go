// Package logrec reads the structured log records a process wrote — the JSON
// lines of log/slog's JSONHandler — so that tests check what happened by key
// rather than by the wording of a line. Lines that are not JSON objects (what
// a program printed itself) are skipped.
package logrec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Record is one log record: its keys and values, numbers kept as written.
type Record map[string]any

// Parse returns the records in text, in order.
func Parse(text string) []Record {
	var recs []Record
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		var r Record
		if dec.Decode(&r) == nil {
			recs = append(recs, r)
		}
	}
	return recs
}

// Get returns the value of key as text, or "" if r has no such key.
func (r Record) Get(key string) string {
	v, ok := r[key]
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// Match reports whether r satisfies every term: "key=value" (the value is
// exactly value), "key~text" (the value contains text; "key~" only asks
// that key be there), or else the message itself ("msg" equals the term).
// A term is read as a key term when "=" or "~" follows its first character,
// so a message holding either is matched with "msg=…" or "msg~…".
func (r Record) Match(terms ...string) bool {
	if r == nil {
		return false
	}
	for _, t := range terms {
		if i := strings.IndexAny(t, "=~"); i > 0 {
			k, v := t[:i], t[i+1:]
			if _, ok := r[k]; !ok {
				return false
			}
			if t[i] == '=' && r.Get(k) != v || t[i] == '~' && !strings.Contains(r.Get(k), v) {
				return false
			}
			continue
		}
		if r.Get("msg") != t {
			return false
		}
	}
	return true
}

// String returns r as one JSON line, for failure messages.
func (r Record) String() string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any(r)); err != nil {
		return fmt.Sprint(map[string]any(r))
	}
	return strings.TrimSpace(b.String())
}

// Find returns the first record that matches terms (see Record.Match), or
// nil.
func Find(recs []Record, terms ...string) Record {
	for _, r := range recs {
		if r.Match(terms...) {
			return r
		}
	}
	return nil
}

// Last returns the last record that matches terms, or nil.
func Last(recs []Record, terms ...string) Record {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Match(terms...) {
			return recs[i]
		}
	}
	return nil
}

// Count returns how many records match terms.
func Count(recs []Record, terms ...string) int {
	n := 0
	for _, r := range recs {
		if r.Match(terms...) {
			n++
		}
	}
	return n
}
