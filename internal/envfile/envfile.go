// Package envfile reads the environment files of handoff run --env-file:
// KEY=VALUE lines, the subset of systemd's EnvironmentFile= that most files
// use, with errors that name FILE:LINE and what is wrong.
package envfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// Read reads an env file: one KEY=VALUE per line, the subset of
// systemd's EnvironmentFile= that most files use —
//
//   - blank lines, and lines whose first non-blank character is # or ;, are
//     ignored;
//   - KEY is a letter or _, then letters, digits or _; spaces around KEY,
//     around =, and at the end of the line are dropped;
//   - VALUE may be wrapped in '…' (taken as it is) or "…" (where \" \\ \n
//     \t \$ stand for what they escape); a quoted value ends at its closing
//     quote, after which only a comment may follow;
//   - an unquoted VALUE is taken as it is, to the end of the line.
//
// It returns the assignments in order, or an error naming FILE:LINE. The file
// must be a regular one: a FIFO, or the pipe of a shell's <(…), would be read
// once and found empty by the next generation, and opening a FIFO that nobody
// writes would wait for ever. It is opened without waiting, so that such a
// file is refused at once.
func Read(path string) ([]string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("--env-file %s: a %s, not a regular file: each generation reads the file afresh, and a pipe or FIFO (a shell's <(…)) gives its content once — write the variables to a file", path, fileKind(st.Mode()))
	}
	if st.Size() > maxEnvFile {
		return nil, fmt.Errorf("--env-file %s: %d bytes, more than the %d an env file may have — is it the right file?", path, st.Size(), maxEnvFile)
	}
	// One buffer of the size the file has (and a byte more, to see it
	// grew meanwhile), not ReadAll's doublings.
	b := make([]byte, st.Size()+1)
	n, err := io.ReadFull(io.LimitReader(f, maxEnvFile+1), b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("--env-file %s: %w", path, err)
	}
	if n == len(b) {
		// It grew since Stat: read the rest too, within the limit.
		rest, err := io.ReadAll(io.LimitReader(f, maxEnvFile+1-int64(n)))
		if err != nil {
			return nil, fmt.Errorf("--env-file %s: %w", path, err)
		}
		b = append(b, rest...)
	} else {
		b = b[:n]
	}
	if len(b) > maxEnvFile {
		return nil, fmt.Errorf("--env-file %s: more than the %d bytes an env file may have — is it the right file?", path, maxEnvFile)
	}
	var env []string
	for n, raw := range bytes.Split(b, []byte("\n")) {
		line := strings.TrimSpace(string(raw))
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if i := strings.IndexByte(line, 0); i >= 0 {
			return nil, fmt.Errorf("%s:%d: a NUL byte at column %d, which no environment variable can hold — is it a text file?", path, n+1, i+1)
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || !validEnvKey(key) {
			return nil, fmt.Errorf("%s:%d: not KEY=VALUE (KEY: letters, digits and _, not starting with a digit): %.40q", path, n+1, line)
		}
		value, err := envValue(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", path, n+1, key, err)
		}
		kv := key + "=" + value
		if len(kv) > maxEnvVar {
			return nil, fmt.Errorf("%s:%d: %s: %d bytes, more than the %d Linux passes in one variable to a program", path, n+1, key, len(kv), maxEnvVar)
		}
		env = append(env, kv)
	}
	return env, nil
}

// Limits on env files: the whole file, and one KEY=VALUE, which Linux's
// execve refuses past MAX_ARG_STRLEN (32 pages, less its NUL) with E2BIG.
const (
	maxEnvFile = 4 << 20
	maxEnvVar  = 32*4096 - 1
)

// fileKind names what a file that is not a regular one is.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "FIFO or pipe"
	case m.IsDir():
		return "directory"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

func validEnvKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// envValue unquotes v as Read describes.
func envValue(v string) (string, error) {
	if v == "" || (v[0] != '"' && v[0] != '\'') {
		return v, nil
	}
	q := v[0]
	var out strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == q:
			if rest := strings.TrimSpace(v[i+1:]); rest != "" && rest[0] != '#' {
				return "", fmt.Errorf("text after the closing quote: %.20q", rest)
			}
			return out.String(), nil
		case c == '\\' && q == '"' && i+1 < len(v):
			i++
			switch v[i] {
			case 'n':
				out.WriteByte('\n')
			case 't':
				out.WriteByte('\t')
			case '"', '\\', '$':
				out.WriteByte(v[i])
			default:
				out.WriteByte('\\')
				out.WriteByte(v[i])
			}
		default:
			out.WriteByte(c)
		}
	}
	return "", fmt.Errorf("no closing %c", q)
}
