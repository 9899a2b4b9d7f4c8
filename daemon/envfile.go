package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// readEnvFile reads an --env-file: one KEY=VALUE per line, the subset of
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
// It returns the assignments in order, or an error naming FILE:LINE.
func readEnvFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", path, err)
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || !validEnvKey(key) {
			return nil, fmt.Errorf("%s:%d: not KEY=VALUE (KEY: letters, digits and _, not starting with a digit): %.40q", path, n, line)
		}
		value, err := envValue(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", path, n, key, err)
		}
		env = append(env, key+"="+value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", path, err)
	}
	return env, nil
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

// envValue unquotes v as readEnvFile describes.
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
