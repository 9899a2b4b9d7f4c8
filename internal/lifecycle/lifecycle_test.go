package lifecycle

import "testing"

func TestWithin(t *testing.T) {
	for _, c := range []struct {
		path, dir string
		want      bool
	}{
		{"/srv/app/v2/app", "/srv/app/v2", true},
		{"/srv/app/v2", "/srv/app/v2", true},
		{"/srv/app/v1/app", "/srv/app/v2", false},
		{"/srv/app/v2x/app", "/srv/app/v2", false},
		{"/srv/app/..app", "/srv/app", true},
		{"/srv", "/srv/app", false},
	} {
		if got := Within(c.path, c.dir); got != c.want {
			t.Errorf("Within(%q, %q) = %v, want %v", c.path, c.dir, got, c.want)
		}
	}
}
